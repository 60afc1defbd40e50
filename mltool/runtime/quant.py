"""The one place that quantizes model inputs and dequantizes outputs.

A quantized tensor stores q = round(x / scale) + zero_point, clipped to its integer type;
the real value is (q - zero_point) * scale. Float tensors pass through untouched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class TensorSpec(NamedTuple):
    """A tensor as the interpreter describes it, with the scale and zero point quantization needs."""

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


def raw_pixels(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Pixel values fed straight into an 8-bit input (models that take raw pixels): uint8 as
    is; int8 shifted by 128 so that 0..255 covers the whole signed range."""
    shifted = np.asarray(x).astype(np.int16) - (128 if spec.dtype == np.dtype(np.int8) else 0)
    return shifted.astype(spec.dtype)


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


def apply_lut(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Look every pixel of a uint8 HxWxC image up in a :func:`pixel_lut` table."""
    import cv2

    c = img.shape[-1]
    if lut.dtype == np.int8:  # cv2.LUT has no signed 8-bit tables: same bytes, viewed as uint8
        out = cv2.LUT(np.ascontiguousarray(img), lut.view(np.uint8)).view(np.int8)
    elif lut.dtype in (np.uint8, np.float32):
        out = cv2.LUT(np.ascontiguousarray(img), lut)
    else:
        out = lut[img] if lut.ndim == 1 else lut[img, 0, np.arange(c)]
    return out.reshape(img.shape)
