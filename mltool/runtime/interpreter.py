"""Load a .tflite model with the best runtime available: LiteRT, then tflite-runtime, then TF.

The file is always verified by :mod:`mltool.runtime.tflite_schema` first and handed to the
interpreter as bytes (``model_content``), never by path: loading by path skips the
flatbuffer verifier, and a damaged file would then crash the process.

Every call into the runtime (load, resize, allocate, invoke) is wrapped: a failure becomes one
:class:`~mltool.errors.ModelError` line naming the model, the stage and the cause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mltool._silence import silenced
from mltool.errors import ConfigError, ModelError
from mltool.runtime.metadata import (
    ModelMetadata,
    from_standard,
    from_ultralytics,
    read_metadata,
    read_ultralytics,
)
from mltool.runtime.quant import TensorSpec, dequantize, quantize
from mltool.runtime.tflite_metadata import StandardMetadata, read_standard_metadata
from mltool.runtime.tflite_schema import ModelInfo, read_model_file

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
INSTALL_HINT = "pip install ai-edge-litert (64-bit), or tflite-runtime with numpy<2 on 32-bit Raspberry Pi OS"

# Custom operators a stock runtime lacks, and what provides them.
CUSTOM_OP_PROVIDERS = {
    "edgetpu-custom-op": "it was compiled for a Coral Edge TPU: run it with --delegate libedgetpu.so.1 on a device with "
                         "the Edge TPU runtime (apt install libedgetpu1-std), or use the model before edgetpu_compiler",
    "Convolution2DTransposeBias": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
    "MaxPoolingWithArgmax2D": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
    "MaxUnpooling2D": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
    "Landmarks2TransformMatrix": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
    "TransformLandmarks": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
    "TransformTensorBilinear": "MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)",
}
BUILTIN_CUSTOM_OPS = {"TFLite_Detection_PostProcess"}  # custom in the schema, but every runtime has it
MAX_TENSOR_BYTES = 1 << 30  # one tensor claiming more is a damaged file, not an edge model
MAX_TOTAL_BYTES = 4 << 30


class Runtime(NamedTuple):
    name: str
    version: str
    interpreter: Any  # the Interpreter class
    load_delegate: Any
    op_resolver: Any = None  # the module's OpResolverType, where it has one


# `--delegate none`: no delegate at all, not even the default XNNPACK: the runtime's built-in
# kernels (slower; for a CPU or emulator whose XNNPACK path misbehaves, and to compare against)
NO_DELEGATE = "none"


def find_runtime() -> Runtime:
    """The first TFLite runtime that imports: LiteRT, tflite-runtime, then TensorFlow's."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return Runtime("ai_edge_litert", getattr(ai_edge_litert, "__version__", "?"), litert.Interpreter, litert.load_delegate,
                       getattr(litert, "OpResolverType", None))
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as tfl

        return Runtime("tflite_runtime", getattr(tflite_runtime, "__version__", "?"), tfl.Interpreter, tfl.load_delegate,
                       getattr(tfl, "OpResolverType", None))
    except ImportError:
        pass
    try:
        from mltool._tf import import_tensorflow

        tf = import_tensorflow()
        return Runtime("tensorflow", tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate,
                       getattr(tf.lite.experimental, "OpResolverType", None))
    except ImportError:
        pass
    raise ModelError("no TFLite runtime is installed", INSTALL_HINT)


def _cause(exc: BaseException) -> str:
    text = " ".join(ln.strip() for ln in str(exc).strip().splitlines() if ln.strip())
    return text[:300] or type(exc).__name__


def custom_op_hint(info: ModelInfo) -> tuple[str, str] | None:
    """(operator, what provides it) for the first custom operator a stock runtime lacks."""
    for op in info.custom_ops:
        if op in BUILTIN_CUSTOM_OPS:
            continue
        if op.startswith("Flex"):
            return op, ("a TensorFlow op kept by SELECT_TF_OPS: re-convert without select TF ops, "
                        "or run it where the Flex delegate is linked (full TensorFlow)")
        return op, CUSTOM_OP_PROVIDERS.get(op, "a custom op: load the library that implements it with --delegate, "
                                               "or re-convert the model with builtin ops only")
    return None


@dataclass
class LoadedModel:
    path: Path
    info: ModelInfo
    metadata: ModelMetadata | None
    interpreter: Any
    runtime: str
    runtime_version: str
    threads: int | None
    load_seconds: float
    delegate: str | None = None
    standard: StandardMetadata | None = None  # the TFLite Metadata entry (TF Hub, Model Maker, MediaPipe)
    problems: list[str] = field(default_factory=list)  # damaged metadata, said once to the user
    ultralytics: tuple[dict[str, Any], str] | None = None  # (metadata, file) Ultralytics/YOLOv5 appended

    # Tensor specs are read from the interpreter once and again only after a resize: they are
    # consulted on every invoke, and get_*_details() rebuilds its dicts each call.
    _specs: tuple[list[TensorSpec], list[TensorSpec]] | None = field(default=None, init=False, repr=False)

    def _tensor_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self._specs is None:
            self._specs = ([TensorSpec.from_details(d) for d in self.interpreter.get_input_details()],
                           [TensorSpec.from_details(d) for d in self.interpreter.get_output_details()])
        return self._specs

    @property
    def description(self) -> ModelMetadata | None:
        """What the model says about itself: mltool's own entry, else the standard TFLite Metadata."""
        if self.metadata is not None:
            return self.metadata
        if self.ultralytics is not None:
            return from_ultralytics(*self.ultralytics, list(self.inputs[0].shape[1:]) if self.inputs else [])
        if self.standard is not None and not (self.standard.problems and not self.standard.mean and not self.standard.labels):
            return from_standard(self.standard, list(self.inputs[0].shape[1:]) if self.inputs else [])
        return None

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._tensor_specs()[0]

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._tensor_specs()[1]

    def _fail(self, stage: str, exc: BaseException) -> ModelError:
        return ModelError(f"{self.runtime} could not {stage} {self.path} ({_cause(exc)})",
                          "check the input shape and type with `mltool inspect`; MLTOOL_DEBUG=1 shows the runtime's log")

    def resize_input(self, shape: tuple[int, ...] | list[int], index: int = 0) -> None:
        spec = self.inputs[index]
        with silenced():  # raising an mltool error inside: the runtime's own log is not replayed
            try:
                self.interpreter.resize_tensor_input(spec.index, [int(s) for s in shape])
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise self._fail(f"resize input {spec.name} to {list(shape)} for", exc) from None
        self._specs = None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One invoke on real-valued input ``x`` (batch dim included); dequantized outputs."""
        return self.run_prepared(quantize(x, self.inputs[0]))

    def run_prepared(self, x: np.ndarray) -> list[np.ndarray]:
        """One invoke on input already in the tensor's own dtype (quantized, or from a pixel LUT)."""
        spec = self.inputs[0]
        if tuple(x.shape) != spec.shape:
            self.resize_input(x.shape)
            spec = self.inputs[0]
        try:
            self.interpreter.set_tensor(spec.index, x)
            self.interpreter.invoke()
            return [dequantize(self.interpreter.get_tensor(o.index), o) for o in self.outputs]
        except (ValueError, RuntimeError) as exc:
            raise self._fail("run", exc) from None

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """First output for many samples, in batches (falls back to one sample at a time)."""
        outs = []
        try:
            for i in range(0, len(x), batch):
                outs.append(self.run(x[i : i + batch])[0].copy())
        except ModelError:
            outs = [self.run(x[i : i + 1])[0].copy() for i in range(len(x))]
        return np.concatenate(outs) if outs else np.zeros((0,))


def check_sizes(info: ModelInfo, path: Path) -> None:
    """Refuse, before any allocation, a model whose tensors claim absurd amounts of memory (a
    damaged or hostile file would otherwise make the runtime try, for gigabytes and minutes)."""
    big = info.largest_tensor
    if big is not None and big.nbytes > MAX_TENSOR_BYTES:
        raise ModelError(f"{path} is damaged or not an edge model: tensor {big.name} claims shape {big.shape} "
                         f"({big.nbytes / 2**30:.1f} GiB)", "re-convert or re-copy the file; mltool refuses tensors over 1 GiB")
    if info.tensor_bytes > MAX_TOTAL_BYTES:
        raise ModelError(f"{path} claims {info.tensor_bytes / 2**30:.1f} GiB of tensors",
                         "re-convert or re-copy the file; mltool refuses models claiming over 4 GiB")


def parse_shapes(text: str | None, option: str = "--input-shape") -> list[list[int]] | None:
    """``1,16000`` (the first input) or ``1,224,224,3:1,16000`` (one shape per input), as
    LiteRT's benchmark_model takes ``--input_layer_shape``."""
    if text is None or not text.strip():
        return None
    shapes = []
    for part in text.split(":"):
        try:
            dims = [int(d) for d in part.split(",")]
        except ValueError:
            raise ConfigError(f"{option} '{text}' is not a list of integers", f"e.g. {option} 1,16000 or 1,224,224,3") from None
        if not dims or any(d < 1 for d in dims):
            raise ConfigError(f"{option} '{text}' has a dimension below 1", f"e.g. {option} 1,16000")
        shapes.append(dims)
    return shapes


def parse_delegate_options(items: list[str] | None) -> dict[str, str]:
    """``--delegate-option k=v`` (repeatable) as a dict."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--delegate-option '{item}' is not KEY=VALUE", "e.g. --delegate-option device=usb")
        out[key.strip()] = value.strip()
    return out


def load_model(
    path: str | Path,
    threads: int | None = None,
    *,
    delegate: str | None = None,
    delegate_options: dict[str, str] | None = None,
    input_shapes: list[list[int]] | None = None,
) -> LoadedModel:
    """Verify, then load and allocate a .tflite model. ``threads`` goes to the constructor
    (XNNPACK takes its thread count when the interpreter is built); ``delegate`` is an external
    delegate library (e.g. libedgetpu.so.1) loaded with ``delegate_options``; ``input_shapes``
    resizes the inputs (dynamic models) before allocation."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "use --threads 1, 2 or 4")
    path = Path(path)
    data, info = read_model_file(path)
    check_sizes(info, path)
    rt = find_runtime()
    t0 = time.perf_counter()
    with silenced():  # LiteRT announces its XNNPACK delegate on fd 2; errors below say it all in one line
        delegates = [_load_delegate(rt, delegate, delegate_options)] if delegate and delegate != NO_DELEGATE else None
        interp = _interpreter(rt, data, info, path, threads, delegates, input_shapes, builtin=delegate == NO_DELEGATE)
    problems: list[str] = []
    meta = read_metadata(info, problems)
    standard = read_standard_metadata(info, data)
    if standard is not None:
        problems += standard.problems
    ultra = read_ultralytics(data, problems) if meta is None else None
    return LoadedModel(path, info, meta, interp, rt.name, rt.version, threads, time.perf_counter() - t0,
                       delegate, standard, problems, ultra)


def _load_delegate(rt: Runtime, library: str, options: dict[str, str] | None) -> Any:
    import ctypes

    try:
        # Open it ourselves first: a runtime's Delegate object that fails to open its library
        # raises again from __del__ (a stray traceback at exit, seen with LiteRT 2.3).
        ctypes.CDLL(library)
        return rt.load_delegate(library, options or {})
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"cannot load delegate {library} ({_cause(exc)})",
                         "install the library that provides it (Coral Edge TPU: apt install libedgetpu1-std) "
                         "or pass its full path to --delegate") from None


def _interpreter(rt: Runtime, data: bytes, info: ModelInfo, path: Path, threads: int | None,
                 delegates: list[Any] | None, input_shapes: list[list[int]] | None, builtin: bool = False) -> Any:
    stage = "load"
    extra: dict[str, Any] = {}
    if builtin:
        if rt.op_resolver is None:
            raise ConfigError(f"--delegate none needs a runtime that can leave XNNPACK out; {rt.name} {rt.version} cannot",
                              "use ai-edge-litert or tflite-runtime")
        extra["experimental_op_resolver_type"] = rt.op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = rt.interpreter(model_content=data, num_threads=threads, experimental_delegates=delegates, **extra)
        if input_shapes:
            stage = "resize the inputs of"
            details = interp.get_input_details()
            if len(input_shapes) > len(details):
                raise ConfigError(f"--input-shape gives {len(input_shapes)} shapes for {path}, which has {len(details)} input(s)",
                                  "give one shape per input, separated by ':'")
            for d, shape in zip(details, input_shapes):
                interp.resize_tensor_input(d["index"], shape)
        stage = "allocate tensors for"
        interp.allocate_tensors()
        return interp
    except (ValueError, RuntimeError) as exc:
        hint = custom_op_hint(info)
        if hint is not None:
            raise ModelError(f"{rt.name} cannot run {path}: it uses the custom operator {hint[0]}", hint[1]) from None
        if stage == "allocate tensors for" and not input_shapes and any(t.dynamic for t in info.inputs):
            dyn = ", ".join(f"{t.name} {t.shape_signature}" for t in info.inputs if t.dynamic)
            raise ModelError(f"{path} has dynamic input dimensions ({dyn}) that {rt.name} cannot allocate as they are",
                             "pass --input-shape with the size to use, e.g. --input-shape 1,16000") from None
        if input_shapes:  # the shape asked for is what failed, not the model
            given = ":".join(",".join(map(str, s)) for s in input_shapes)
            sig = ":".join(",".join(map(str, t.shape_signature)) for t in info.inputs)
            raise ModelError(f"{rt.name} could not {stage} {path} with --input-shape {given} ({_cause(exc)})",
                             f"give a shape that fits the model's signature {sig} (-1 marks what may change), "
                             "or leave --input-shape out") from None
        raise ModelError(f"{rt.name} could not {stage} {path} ({_cause(exc)})",
                         "the model may use operators this runtime lacks; upgrade the runtime or re-convert") from None
