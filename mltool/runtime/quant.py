"""The one place that quantizes model inputs and dequantizes outputs.

A quantized tensor stores q = round(x / scale) + zero_point, clipped to its integer type;
the real value is (q - zero_point) * scale. Float tensors pass through untouched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class TensorSpec(NamedTuple):
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    @classmethod
    def from_details(cls, d: dict[str, Any]) -> TensorSpec:
        scale, zp = d.get("quantization", (0.0, 0))
        return cls(int(d["index"]), str(d["name"]), tuple(int(s) for s in d["shape"]),
                   np.dtype(d["dtype"]), float(scale), int(zp))


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real-valued input -> what the tensor stores."""
    if not spec.quantized:
        return np.asarray(x, dtype=spec.dtype)
    info = np.iinfo(spec.dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """What the tensor stores -> real values (float32)."""
    if not spec.quantized:
        return np.asarray(q, dtype=np.float32)
    return ((q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)).astype(np.float32)
