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


def pixel_lut(mean: np.ndarray, std: np.ndarray, spec: TensorSpec, channels: int) -> np.ndarray:
    """Normalise-then-quantize every possible 8-bit pixel value once: a (256,) table, or
    (256, 1, C) for per-channel normalisation, in the input tensor's dtype. Applying it to a
    uint8 image gives exactly what :func:`quantize` gives for ``(x - mean) / std``."""
    levels = np.arange(256, dtype=np.float32)
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.size == 1 and std.size == 1:
        return quantize((levels - mean[0]) / std[0], spec)
    m = np.broadcast_to(mean, (channels,))
    sd = np.broadcast_to(std, (channels,))
    table = np.stack([quantize((levels - m[c]) / sd[c], spec) for c in range(channels)], axis=-1)
    return table.reshape(256, 1, channels)
