"""The standard TensorFlow Lite Metadata (what TF Hub, Model Maker and MediaPipe models carry),
read without TensorFlow or tflite-support.

The metadata-list entry ``TFLITE_METADATA`` is a flatbuffer (schema ``metadata_schema.fbs``,
file identifier ``M001``) describing inputs (normalisation mean/std, image or audio properties)
and outputs (names, label files). Associated files such as ``labels.txt`` are packed as a zip
archive appended to the ``.tflite`` file. Every offset is bounds-checked by the same reader as
the model itself; a damaged entry is reported, never trusted.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

from mltool.runtime.metadata import parse_dict_text
from mltool.runtime.tflite_schema import FlatBuf, Malformed, ModelInfo, Table

ENTRY = "TFLITE_METADATA"
IDENTIFIER = b"M001"
MAX_LABEL_FILE = 4 << 20  # bytes: a label file is text, not a payload

# enum AssociatedFileType
TENSOR_AXIS_LABELS = 2
TENSOR_VALUE_LABELS = 3
# union ProcessUnitOptions / ContentProperties (1-based; 0 is NONE)
NORMALIZATION_OPTIONS = 1
IMAGE_PROPERTIES = 2
AUDIO_PROPERTIES = 4
COLOR_SPACES = {1: "RGB", 2: "grayscale"}


@dataclass
class StandardMetadata:
    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    license: str | None = None
    mean: list[float] | None = None  # input normalisation: (x - mean) / std
    std: list[float] | None = None
    color_space: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    label_file: str | None = None
    dict_file: str | None = None  # a "label file" holding a dict literal (Ultralytics 8.0-8.3.116 temp_meta.txt)
    associated_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.labels is not None:
            d["labels"] = len(self.labels)
        return {k: v for k, v in d.items() if v not in (None, [], "")}


def _files(t: Table | None, slot: int) -> list[tuple[str, int]]:
    return [(f.string(4) or "", int(f.scalar(8, "b", 0))) for f in t.tables(slot)] if t is not None else []


def _normalization(units: list[Table]) -> tuple[list[float], list[float]] | None:
    for u in units:
        if int(u.scalar(4, "B", 0)) == NORMALIZATION_OPTIONS:
            opts = u.table(6)
            if opts is not None:
                mean, std = [float(v) for v in opts.scalars(4, "f")], [float(v) for v in opts.scalars(6, "f")]
                if mean and std:
                    return mean, std
    return None


def _read_archive_file(data: bytes, name: str) -> bytes | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            info = z.getinfo(name)
            if info.file_size > MAX_LABEL_FILE:
                return None
            with z.open(info) as fh:
                return fh.read(MAX_LABEL_FILE + 1)[:MAX_LABEL_FILE]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return None


def read_standard_metadata(info: ModelInfo, data: bytes) -> StandardMetadata | None:
    """The TFLITE_METADATA description of a model, or None if it has none."""
    raw = info.metadata.get(ENTRY)
    if raw is None:
        return None
    md = StandardMetadata()
    if len(raw) < 8 or raw[4:8] != IDENTIFIER:
        md.problems.append(f"{ENTRY} is not a metadata flatbuffer (identifier {raw[4:8]!r})")
        return md
    buf = FlatBuf(bytes(raw))
    try:
        root = Table(buf, buf.u32(0))
        md.name, md.description, md.version = root.string(4), root.string(6), root.string(8)
        md.author, md.license = root.string(12), root.string(14)
        label_candidates = _files(root, 16)
        subgraphs = root.tables(10)
        if subgraphs:
            sg = subgraphs[0]
            inputs, outputs = sg.tables(8), sg.tables(10)
            md.input_names = [t.string(4) or "" for t in inputs]
            md.output_names = [t.string(4) or "" for t in outputs]
            label_candidates = [f for t in outputs for f in _files(t, 16)] + _files(sg, 12) + label_candidates
            if inputs:
                first = inputs[0]
                norm = _normalization(first.tables(12)) or _normalization(sg.tables(14))
                if norm is not None:
                    md.mean, md.std = norm
                content = first.table(10)
                if content is not None:
                    kind, props = int(content.scalar(4, "B", 0)), content.table(6)
                    if props is not None and kind == IMAGE_PROPERTIES:
                        md.color_space = COLOR_SPACES.get(int(props.scalar(4, "b", 0)))
                    elif props is not None and kind == AUDIO_PROPERTIES:
                        md.sample_rate = int(props.scalar(4, "I", 0)) or None
                        md.channels = int(props.scalar(6, "I", 0)) or None
        md.associated_files = sorted({n for n, _ in label_candidates if n})
    except (Malformed, ValueError, IndexError, struct.error) as exc:
        md.problems.append(f"{ENTRY} is damaged ({exc})")
        return md
    for name, kind in label_candidates:
        if kind in (TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS) and name:
            content_bytes = _read_archive_file(data, name)
            if content_bytes is None:
                md.problems.append(f"label file {name} is named in the metadata but not packed in the model")
                continue
            try:
                text = content_bytes.decode("utf-8")
            except UnicodeDecodeError:
                md.problems.append(f"label file {name} is not UTF-8")
                continue
            if parse_dict_text(text) is not None:  # metadata, not names: read by metadata.read_ultralytics
                md.dict_file = name
                continue
            md.labels = [ln.strip() for ln in text.lstrip("\ufeff").splitlines() if ln.strip()]
            md.label_file = name
            break
    return md
