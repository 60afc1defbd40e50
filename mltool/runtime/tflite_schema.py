"""A small, bounds-checked reader for the TFLite flatbuffer (schema.fbs), in pure Python.

It reads what ``inspect`` and the runtime need (tensors, operators, signatures, the metadata
list) and treats every offset as untrusted: a truncated or foreign file raises
:class:`~mltool.errors.ModelError` instead of crashing the process. The interpreter is only
ever handed a file that passed this walk.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltool.errors import ModelError

FILE_IDENTIFIER = b"TFL3"

# schema.fbs TensorType -> numpy dtype name
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}


ITEM_BYTES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2, "complex64": 8,
              "int8": 1, "float64": 8, "complex128": 16, "uint64": 8, "uint32": 4, "uint16": 2, "int4": 1, "bfloat16": 2}


class Malformed(Exception):
    pass


class FlatBuf:
    def __init__(self, data: bytes) -> None:
        self.b = data
        self.n = len(data)

    def _check(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > self.n:
            raise Malformed(f"offset {pos}+{size} outside the {self.n}-byte file")

    def u8(self, pos: int) -> int:
        self._check(pos, 1)
        return self.b[pos]

    def u16(self, pos: int) -> int:
        self._check(pos, 2)
        return struct.unpack_from("<H", self.b, pos)[0]

    def i32(self, pos: int) -> int:
        self._check(pos, 4)
        return struct.unpack_from("<i", self.b, pos)[0]

    def u32(self, pos: int) -> int:
        self._check(pos, 4)
        return struct.unpack_from("<I", self.b, pos)[0]

    def unpack(self, fmt: str, pos: int) -> Any:
        self._check(pos, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.b, pos)


class Table:
    def __init__(self, buf: FlatBuf, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vt = pos - buf.i32(pos)
        self.vt = vt
        self.vt_len = buf.u16(vt)
        if self.vt_len < 4 or self.vt_len % 2:
            raise Malformed(f"bad vtable at {vt}")
        buf._check(vt, self.vt_len)
        buf._check(pos, buf.u16(vt + 2))

    def _off(self, slot: int) -> int:
        return self.buf.u16(self.vt + slot) if slot < self.vt_len else 0

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        off = self._off(slot)
        return self.buf.unpack("<" + fmt, self.pos + off)[0] if off else default

    def _deref(self, slot: int) -> int | None:
        off = self._off(slot)
        if not off:
            return None
        p = self.pos + off
        return p + self.buf.u32(p)

    def table(self, slot: int) -> Table | None:
        target = self._deref(slot)
        return Table(self.buf, target) if target is not None else None

    def _vector(self, slot: int, elem: int) -> tuple[int, int] | None:
        vpos = self._deref(slot)
        if vpos is None:
            return None
        length = self.buf.u32(vpos)
        self.buf._check(vpos + 4, length * elem)
        return vpos + 4, length

    def string(self, slot: int) -> str | None:
        v = self._vector(slot, 1)
        if v is None:
            return None
        start, length = v
        return self.buf.b[start : start + length].decode("utf-8", errors="replace")

    def scalars(self, slot: int, fmt: str) -> list[Any]:
        size = struct.calcsize(fmt)
        v = self._vector(slot, size)
        if v is None:
            return []
        start, length = v
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf.b, start)) if length else []

    def bytes_(self, slot: int) -> bytes | None:
        v = self._vector(slot, 1)
        if v is None:
            return None
        start, length = v
        return self.buf.b[start : start + length]

    def tables(self, slot: int) -> list[Table]:
        v = self._vector(slot, 4)
        if v is None:
            return []
        start, length = v
        out = []
        for i in range(length):
            p = start + 4 * i
            out.append(Table(self.buf, p + self.buf.u32(p)))
        return out


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int = 0
    shape_signature: list[int] = field(default_factory=list)  # -1 marks a dynamic dimension

    def __post_init__(self) -> None:
        if not self.shape_signature:
            self.shape_signature = list(self.shape)

    @property
    def nbytes(self) -> int:
        """What the tensor claims it needs (its shape times its element size)."""
        n = 1
        for d in self.shape:
            n *= max(int(d), 0)
        return n * ITEM_BYTES.get(self.dtype, 8)

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape_signature

    @property
    def needs_shape(self) -> bool:
        """Dynamic beyond the batch dimension: the one kind a runtime cannot size by itself (a batch
        of -1, as every Keras conversion has, runs at its stored size of 1)."""
        return -1 in self.shape_signature[1:]

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "name": self.name, "shape": self.shape,
                             "shape_signature": self.shape_signature, "dtype": self.dtype}
        if self.scale:
            if len(self.scale) == 1:
                d["quantization"] = {"scale": self.scale[0], "zero_point": self.zero_point[0] if self.zero_point else 0}
            else:
                d["quantization"] = {"per_channel": len(self.scale), "axis": self.quantized_dimension}
        return d


@dataclass
class ModelInfo:
    size: int
    version: int
    description: str | None
    subgraphs: int
    tensors: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    operators: Counter
    signatures: list[dict[str, Any]]
    metadata: dict[str, bytes] = field(default_factory=dict)
    custom_ops: list[str] = field(default_factory=list)
    largest_tensor: TensorInfo | None = None  # the tensor claiming the most memory, over all subgraphs
    tensor_bytes: int = 0  # what all tensors claim together (an upper bound of what allocation needs)
    constant_types: Counter = field(default_factory=Counter)  # main subgraph: dtypes of tensors with data (weights)
    activation_types: Counter = field(default_factory=Counter)  # main subgraph: dtypes of the other tensors


def _op_names() -> dict[int, str]:
    for mod in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated"):
        try:
            schema = __import__(mod, fromlist=["BuiltinOperator"])
        except ImportError:
            continue
        ops = schema.BuiltinOperator
        return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}
    return {}


def _tensor(t: Table, index: int) -> TensorInfo:
    shape = [int(d) for d in t.scalars(4, "i")]
    ttype = t.scalar(6, "b", 0)
    q = t.table(12)
    scale, zp, qdim = [], [], 0
    if q is not None:
        scale = [float(s) for s in q.scalars(8, "f")]
        zp = [int(z) for z in q.scalars(10, "q")]
        qdim = int(q.scalar(16, "i", 0))
    return TensorInfo(index, t.string(10) or f"tensor_{index}", shape,
                      TENSOR_TYPES.get(ttype, f"type{ttype}"), scale, zp, qdim, [int(d) for d in t.scalars(18, "i")])


def parse_model(data: bytes, source: str = "model") -> ModelInfo:
    """Walk the whole flatbuffer; raise ModelError naming ``source`` if anything is off."""
    if len(data) < 8:
        raise ModelError(f"{source} is not a TFLite model (only {len(data)} bytes)", "pass a .tflite file")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelError(
            f"{source} is not a TFLite model (file identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r})",
            "pass a .tflite flatbuffer; convert Keras models with `mltool convert`",
        )
    buf = FlatBuf(data)
    try:
        model = Table(buf, buf.u32(0))
        version = int(model.scalar(4, "I", 0))
        opcodes = model.tables(6)
        names = _op_names()
        op_labels = []
        custom_ops = []
        for oc in opcodes:
            code = max(int(oc.scalar(4, "b", 0)), int(oc.scalar(10, "i", 0)))
            custom = oc.string(6)
            op_labels.append(custom if custom else names.get(code, f"BUILTIN_{code}"))
            if custom:
                custom_ops.append(custom)
        subgraphs = model.tables(8)
        if not subgraphs:
            raise Malformed("no subgraphs")
        buffers = model.tables(12)
        filled = []
        for bt in buffers:
            data_vec = bt._vector(4, 1)
            filled.append(bool(data_vec and data_vec[1]) or bool(bt.scalar(6, "Q", 0)))
        constant_types: Counter = Counter()
        activation_types: Counter = Counter()
        ops: Counter = Counter()
        n_tensors = 0
        main_tensors: list[TensorInfo] = []
        main_in: list[int] = []
        main_out: list[int] = []
        largest: TensorInfo | None = None
        total_bytes = 0
        for si, sg in enumerate(subgraphs):
            tensors = [_tensor(t, i) for i, t in enumerate(sg.tables(4))]
            n_tensors += len(tensors)
            for t in tensors:
                if any(d < 0 for d in t.shape):
                    raise Malformed(f"tensor {t.name} has a negative dimension {t.shape}")
                total_bytes += t.nbytes
                if largest is None or t.nbytes > largest.nbytes:
                    largest = t
            ins, outs = sg.scalars(6, "i"), sg.scalars(8, "i")
            for idx in ins + outs:
                if not 0 <= idx < len(tensors):
                    raise Malformed(f"subgraph {si} refers to tensor {idx} of {len(tensors)}")
            for op in sg.tables(10):
                oi = int(op.scalar(4, "I", 0))
                if oi >= len(op_labels):
                    raise Malformed(f"operator code {oi} of {len(op_labels)}")
                ops[op_labels[oi]] += 1
                for idx in op.scalars(6, "i") + op.scalars(8, "i"):
                    if not -1 <= idx < len(tensors):
                        raise Malformed(f"operator refers to tensor {idx} of {len(tensors)}")
            if si == 0:
                main_tensors, main_in, main_out = tensors, ins, outs
                for t, raw in zip(tensors, sg.tables(4)):
                    bi = int(raw.scalar(8, "I", 0))
                    (constant_types if 0 < bi < len(filled) and filled[bi] else activation_types)[t.dtype] += 1
        metadata: dict[str, bytes] = {}
        for md in model.tables(16):
            name = md.string(4) or ""
            bi = int(md.scalar(6, "I", 0))
            if bi >= len(buffers):
                raise Malformed(f"metadata '{name}' points at buffer {bi} of {len(buffers)}")
            b = buffers[bi]
            content = b.bytes_(4)
            if content is None:
                off, size = int(b.scalar(6, "Q", 0)), int(b.scalar(8, "Q", 0))
                if off:
                    buf._check(off, size)
                    content = data[off : off + size]
            metadata[name] = content or b""
        signatures = []
        for sd in model.tables(18):
            ins_map, outs_map = sd.tables(4), sd.tables(6)
            signatures.append({
                "key": sd.string(8),
                "subgraph": int(sd.scalar(12, "I", 0)),
                "inputs": [m.string(4) for m in ins_map],
                "outputs": [m.string(4) for m in outs_map],
                "input_tensors": [int(m.scalar(6, "I", 0)) for m in ins_map],
                "output_tensors": [int(m.scalar(6, "I", 0)) for m in outs_map],
            })
        return ModelInfo(
            size=len(data), version=version, description=model.string(10),
            subgraphs=len(subgraphs), tensors=n_tensors,
            inputs=[main_tensors[i] for i in main_in], outputs=[main_tensors[i] for i in main_out],
            operators=ops, signatures=signatures, metadata=metadata, custom_ops=custom_ops,
            largest_tensor=largest, tensor_bytes=total_bytes, constant_types=constant_types,
            activation_types=activation_types,
        )
    except (Malformed, struct.error, RecursionError) as exc:
        raise ModelError(
            f"{source} is a damaged or truncated TFLite model ({exc})",
            "re-convert or re-copy the file; check its size and SHA-256 against the original",
        ) from None


MAX_MODEL_BYTES = 2 << 30  # a .tflite flatbuffer cannot be larger


def read_model_file(path: str | Path) -> tuple[bytes, ModelInfo]:
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file", "pass the .tflite file inside it")
    if not path.exists():
        raise ModelError(f"model file {path} does not exist", "check the path")
    if not path.is_file():
        raise ModelError(f"{path} is not a regular file (a device or a pipe)", "pass a .tflite file")
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{path} is {size / 2**30:.1f} GiB, larger than any TFLite flatbuffer", "pass a .tflite file")
        data = path.read_bytes()
    except PermissionError:
        raise ModelError(f"cannot read model file {path} (permission denied)", "check its permissions") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} ({exc.strerror or exc})", "check the file") from None
    return data, parse_model(data, str(path))
