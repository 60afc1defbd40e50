"""mltool's self-description embedded in a .tflite file (an entry of the model's metadata list).

The entry named ``mltool`` holds UTF-8 JSON: task, labels, input layout and normalisation,
quantization mode, source model hash, mltool version. Reading it needs no TensorFlow.
"""

from __future__ import annotations

import json
from typing import Any

from mltool.runtime.tflite_schema import ModelInfo

METADATA_NAME = "mltool"
FORMAT = "mltool.tflite/1"


def read_metadata(info: ModelInfo) -> dict[str, Any] | None:
    """The embedded mltool description, or None for models mltool did not write."""
    raw = info.metadata.get(METADATA_NAME)
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None
