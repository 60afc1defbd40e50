"""What a model says about itself: the typed records shared by ``mltool.json`` (training runs)
and the description mltool embeds in every ``.tflite`` it writes.

The embedded description is the metadata-list entry named ``mltool``, UTF-8 JSON: task,
labels, input layout and normalisation, quantization mode, source model hash, mltool version.
Reading it needs no TensorFlow (see :mod:`mltool.runtime.tflite_schema`); writing it is
:mod:`mltool.convert.metadata_writer`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mltool.runtime.tflite_schema import ModelInfo

METADATA_NAME = "mltool"
FORMAT = "mltool.tflite/1"
FORMULA = "(x - mean) / std"


def _numbers(value: Any, what: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{what} must be a number or a list of numbers, not {value!r}")
    return [float(v) for v in value]


@dataclass
class Normalization:
    """The model sees ``(x - mean) / std`` of the raw sample values (pixels 0..255, sensor units)."""

    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "formula": FORMULA}

    @classmethod
    def from_dict(cls, d: Any) -> Normalization:
        if not isinstance(d, dict):
            raise ValueError(f"normalization must be a mapping, not {d!r}")
        return cls(_numbers(d.get("mean"), "normalization.mean"), _numbers(d.get("std"), "normalization.std"))


@dataclass
class InputSpec:
    """The model input as training produced it (shape without the batch dimension)."""

    shape: list[int]
    layout: str | None = None  # NHWC | NWC
    dtype: str = "float32"
    raw_dtype: str | None = None  # what the raw samples are (uint8 pixels, float32 readings)
    color: str | None = None  # RGB | grayscale
    range: list[float] | None = None
    resize: list[int] | None = None
    resize_method: str | None = None  # how images were resized in training (runtime.preprocess.resize)
    rate_hz: float | None = None  # signals
    window: int | None = None  # signals

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Any) -> InputSpec:
        if not isinstance(d, dict) or not isinstance(d.get("shape"), list):
            raise ValueError(f"input must be a mapping with a shape, not {d!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ModelMetadata:
    """What a ``.tflite`` written by mltool carries about itself."""

    input: InputSpec
    task: str | None = None
    kind: str = "classification"
    labels: list[str] | None = None
    normalization: Normalization | None = None
    output: dict[str, Any] = field(default_factory=lambda: {"type": "probabilities"})
    quantization: dict[str, Any] = field(default_factory=dict)  # {"mode": ..., "io": ...}
    source: dict[str, Any] = field(default_factory=dict)
    mltool_version: str | None = None
    created: str | None = None
    dataset: dict[str, Any] | None = None
    keras_accuracy: float | None = None

    @property
    def quantization_mode(self) -> str | None:
        return self.quantization.get("mode")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "task": self.task, "kind": self.kind, "labels": self.labels,
                             "input": self.input.to_dict(),
                             "normalization": self.normalization.to_dict() if self.normalization else None,
                             "output": self.output, "quantization": self.quantization, "source": self.source,
                             "mltool_version": self.mltool_version, "created": self.created}
        if self.dataset is not None:
            d["dataset"] = self.dataset
            d["keras_accuracy"] = self.keras_accuracy
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        labels = d.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise ValueError("labels must be a list of strings")
        norm = d.get("normalization")
        return cls(
            input=InputSpec.from_dict(d.get("input") or {}), task=d.get("task"), kind=d.get("kind") or "classification",
            labels=labels, normalization=Normalization.from_dict(norm) if norm is not None else None,
            output=d.get("output") or {}, quantization=d.get("quantization") or {}, source=d.get("source") or {},
            mltool_version=d.get("mltool_version"), created=d.get("created"), dataset=d.get("dataset"),
            keras_accuracy=d.get("keras_accuracy"),
        )


def read_metadata(info: ModelInfo, problems: list[str] | None = None) -> ModelMetadata | None:
    """The embedded mltool description, or None for models mltool did not write. A damaged
    entry is not trusted: it is described in ``problems`` and None is returned."""
    raw = info.metadata.get(METADATA_NAME)
    if raw is None:
        return None
    try:
        d = json.loads(raw.decode("utf-8"))
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} description")
        return ModelMetadata.from_dict(d)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        if problems is not None:
            problems.append(f"the embedded mltool metadata is damaged and was ignored ({str(exc)[:120]})")
        return None


def from_standard(md: Any, input_shape: list[int]) -> ModelMetadata:
    """What mltool uses from a model's standard TFLite Metadata
    (:class:`~mltool.runtime.tflite_metadata.StandardMetadata`) when it carries no mltool entry."""
    norm = Normalization(md.mean, md.std) if md.mean and md.std else None
    return ModelMetadata(
        input=InputSpec(shape=list(input_shape), color=md.color_space, rate_hz=md.sample_rate),
        labels=md.labels, normalization=norm, output={},
        source={"kind": "tflite-metadata", "name": md.name},
    )


# --------------------------------------------------------------------------- Ultralytics' own metadata

# The files Ultralytics (and YOLOv5) append to a .tflite as a zip archive: ``metadata.json`` (current
# exports), ``temp_meta.txt`` (8.0-8.3.116, also named in the TFLite Metadata as a label file) and
# YOLOv5's ``meta.txt`` hold a Python dict literal.
ULTRALYTICS_FILES = ("metadata.json", "temp_meta.txt", "meta.txt")
MAX_APPENDED_METADATA = 1 << 20


def parse_dict_text(text: str) -> dict[str, Any] | None:
    """A JSON object or a Python dict literal (``ast.literal_eval``: literals only, never code),
    else None."""
    import ast

    text = text.strip().lstrip("\ufeff")
    if not text.startswith("{") or len(text) > MAX_APPENDED_METADATA:
        return None
    try:
        d = json.loads(text)
    except ValueError:
        try:
            d = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return d if isinstance(d, dict) else None


def read_ultralytics(data: bytes, problems: list[str] | None = None) -> tuple[dict[str, Any], str] | None:
    """(metadata, file name) that Ultralytics or YOLOv5 appended to the model ``data``, or None."""
    import io
    import zipfile

    if b"PK\x05\x06" not in data[-(1 << 16) - 22 :]:  # no zip end record: nothing appended
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            for name in ULTRALYTICS_FILES:
                if name not in names:
                    continue
                info = z.getinfo(name)
                if info.file_size > MAX_APPENDED_METADATA:
                    if problems is not None:
                        problems.append(f"{name} packed in the model is {info.file_size} bytes: ignored")
                    return None
                raw = z.read(name)
                d = parse_dict_text(raw.decode("utf-8", errors="replace"))
                if d is None:
                    if problems is not None:
                        problems.append(f"{name} packed in the model is not a JSON object or dict literal: ignored")
                    return None
                return d, name
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return None
    return None


def ultralytics_names(d: dict[str, Any]) -> list[str] | None:
    """Class names, index order, from ``names`` ({0: 'person', ...}, {"0": ...} or a list)."""
    names = d.get("names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    if not isinstance(names, dict) or not names:
        return None
    try:
        by_id = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        return None
    if min(by_id) < 0 or max(by_id) > 100_000:
        return None
    return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]


def from_ultralytics(d: dict[str, Any], file: str, input_shape: list[int]) -> ModelMetadata:
    """What mltool uses from Ultralytics' metadata: labels, x / 255 input, the task."""
    args = d.get("args") if isinstance(d.get("args"), dict) else {}
    facts = {k: d[k] for k in ("task", "imgsz", "stride", "version", "end2end", "batch", "channels") if k in d}
    quant = {k: args[k] for k in ("int8", "half", "quantize", "nms") if k in args}
    return ModelMetadata(
        input=InputSpec(shape=list(input_shape), color="RGB", resize_method="letterbox"),
        task=str(d.get("task")) if d.get("task") is not None else None, kind="detection" if d.get("task") == "detect" else "other",
        labels=ultralytics_names(d), normalization=Normalization([0.0], [255.0]), output={"type": "ultralytics"},
        quantization=quant, source={"kind": "ultralytics", "file": file, **facts,
                                    **({"description": d["description"]} if isinstance(d.get("description"), str) else {})},
    )
