"""Turn a picture into what the model was trained on: resize, colour, normalise.

Device-safe (NumPy + OpenCV). Training, calibration and every device path call the same
:func:`fit_image` (resize + colour) and :func:`normalize`, so what the device feeds a model is
exactly what training fed it. The resize method is recorded in the model's metadata
(``input.resize_method``) and honoured by `infer`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
    return check_normalization(m, s, max(np.size(m), np.size(s)))


def check_normalization(mean: Any, std: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) as float32 arrays, refused (usage error) when they would give NaN or infinite
    inputs or do not match the channels: one value for all channels, or one per channel."""
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    for name, v in (("--mean", m), ("--std", s)):
        if v.size not in (1, channels):
            raise ConfigError(f"{name} has {v.size} values but the model input has {channels} channel(s)",
                              f"give one value, or {channels} comma-separated values")
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"{name} {v.tolist()} is not finite", "use finite numbers, e.g. --mean 127.5 --std 127.5")
    if np.any(s == 0):
        raise ConfigError(f"--std {s.tolist()} contains zero", "use a non-zero standard deviation, e.g. --std 255")
    return m.astype(np.float32), s.astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    """``(x - mean) / std`` in float32: the one formula training, conversion and inference share."""
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((x.astype(np.float32) - m) / s).astype(np.float32)


DEFAULT_RESIZE = "pyramid-bilinear"
RESIZE_METHODS = ("pyramid-bilinear", "bilinear", "area", "nearest", "letterbox")
PAD_VALUE = 114  # the grey Ultralytics pads letterboxed pictures with


def resize(img: np.ndarray, w: int, h: int, method: str = DEFAULT_RESIZE) -> np.ndarray:
    """Resize an HxWxC uint8 picture to ``w`` x ``h``.

    ``pyramid-bilinear`` (the default, what mltool trains with): halve with a Gaussian pyramid
    while >= 2x too big, then bilinear: close to area averaging (no aliasing) at a quarter of
    INTER_AREA's cost on 640x480 -> 224x224. ``bilinear``, ``area``, ``nearest``: OpenCV's, for
    models trained elsewhere with that method. ``letterbox``: aspect kept, padded (YOLO)."""
    import cv2

    if method == "letterbox":
        return letterbox(img, w, h)
    if img.shape[0] == h and img.shape[1] == w:
        return img
    single = img.ndim == 3 and img.shape[-1] == 1  # OpenCV drops a single channel axis
    if method == "pyramid-bilinear":
        while img.shape[0] >= 2 * h and img.shape[1] >= 2 * w:
            img = cv2.pyrDown(img)
        interp = cv2.INTER_LINEAR
    else:
        interp = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}.get(method)
        if interp is None:
            raise ConfigError(f"unknown resize method '{method}'", f"use one of: {', '.join(RESIZE_METHODS)}")
    if img.shape[0] != h or img.shape[1] != w:
        img = cv2.resize(img, (w, h), interpolation=interp)
    return img[..., None] if single and img.ndim == 2 else img


class Letterbox(NamedTuple):
    """Where a ``width`` x ``height`` picture lands in a letterboxed model input: scaled to
    ``inner_w`` x ``inner_h`` (aspect kept) and placed at (``left``, ``top``)."""

    width: int
    height: int
    inner_w: int
    inner_h: int
    left: int
    top: int

    @classmethod
    def fit(cls, width: int, height: int, w: int, h: int) -> Letterbox:
        r = min(w / width, h / height)
        iw, ih = min(w, max(1, int(round(width * r)))), min(h, max(1, int(round(height * r))))
        return cls(width, height, iw, ih, (w - iw) // 2, (h - ih) // 2)

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes (x1, y1, x2, y2) in model-input pixels -> the source picture's pixels, clipped."""
        out = np.empty_like(xyxy, dtype=np.float64)
        sx, sy = self.inner_w / self.width, self.inner_h / self.height
        out[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - self.left) / sx, 0, self.width)
        out[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - self.top) / sy, 0, self.height)
        return out


def letterbox_scale(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """The first half of :func:`letterbox`: scaled to fit ``w`` x ``h`` keeping the aspect ratio
    (bilinear), not yet padded. Letterboxing its result again changes no pixel."""
    import cv2

    g = Letterbox.fit(img.shape[1], img.shape[0], w, h)
    if (g.inner_w, g.inner_h) != (img.shape[1], img.shape[0]):
        img = cv2.resize(img, (g.inner_w, g.inner_h), interpolation=cv2.INTER_LINEAR)
        if img.ndim == 2:
            img = img[..., None]
    return img


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Ultralytics' preprocessing: scale to fit ``w`` x ``h`` keeping the aspect ratio
    (bilinear), centred on a canvas of grey 114."""
    img = letterbox_scale(img, w, h)
    g = Letterbox.fit(img.shape[1], img.shape[0], w, h)
    if (g.inner_w, g.inner_h) == (w, h):
        return img
    canvas = np.full((h, w, img.shape[-1]), PAD_VALUE, np.uint8)
    canvas[g.top : g.top + g.inner_h, g.left : g.left + g.inner_w] = img
    return canvas


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """An RGB uint8 image as ``channels`` channels (1: grayscale with the ITU-R 601 weights)."""
    import cv2

    if channels == 1 and img.shape[-1] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    return img


def fit_image(img: np.ndarray, w: int, h: int, channels: int, method: str = DEFAULT_RESIZE) -> np.ndarray:
    """An RGB uint8 picture of any size as the model's H x W x C uint8 picture: resized with
    ``method``, then converted to ``channels`` (1: grayscale). The one function training,
    calibration and inference use."""
    return to_channels(resize(img, w, h, method), channels)
