"""Turn a frame into what the model was trained on: resize, colour, normalise.

Device-safe (NumPy + OpenCV). The one formula for normalisation is :func:`normalize`; the one
resize is :func:`resize`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mltool.errors import ConfigError


def normalization_from(meta: Any, mean: list[float] | None, std: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) arrays: flags win over the normalisation recorded in ``meta`` (a
    :class:`~mltool.runtime.metadata.ModelMetadata`, a run's ``RunInfo``, or None)."""
    norm = getattr(meta, "normalization", None)
    m = mean if mean is not None else (norm.mean if norm is not None else None)
    s = std if std is not None else (norm.std if norm is not None else None)
    if m is None or s is None:
        raise ConfigError(
            "the model does not record its input normalisation",
            "pass --mean and --std (e.g. --mean 127.5 --std 127.5 for MobileNet-style [-1, 1] input, --mean 0 --std 255 for [0, 1])",
        )
    s_arr = np.asarray(s, dtype=np.float32)
    if np.any(s_arr == 0):
        raise ConfigError(f"--std {s} contains zero", "use a non-zero standard deviation")
    return np.asarray(m, dtype=np.float32), s_arr


def normalize(x: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    """``(x - mean) / std`` in float32: the one formula training, conversion and inference share."""
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((x.astype(np.float32) - m) / s).astype(np.float32)


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Downscale by halving with a Gaussian pyramid while >= 2x too big, then bilinear: close to
    area averaging (no aliasing) at a quarter of INTER_AREA's cost on 640x480 -> 224x224."""
    import cv2

    while img.shape[0] >= 2 * h and img.shape[1] >= 2 * w:
        img = cv2.pyrDown(img)
    if img.shape[0] != h or img.shape[1] != w:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """An RGB uint8 image as ``channels`` channels (1: grayscale with the ITU-R 601 weights)."""
    import cv2

    if channels == 1 and img.shape[-1] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    return img


def fit_image(img: np.ndarray, w: int, h: int, channels: int) -> np.ndarray:
    """An RGB uint8 frame of any size as the model's H x W x C uint8 picture."""
    return to_channels(resize(img, w, h), channels)
