"""What a model's tensors are, and how a frame becomes its input tensor.

:class:`TensorSpec` describes one tensor as the interpreter reports it. :class:`InputAdapter`
is decided once per model (from its embedded metadata, overridden by flags) and then turns each
RGB frame or signal window into the input tensor, already in the tensor's own dtype: resized and
coloured by :mod:`~mltool.runtime.preprocess`, normalised and quantized by
:mod:`~mltool.runtime.quant` (for 8-bit pixels, in a single table lookup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mltool.errors import ConfigError
from mltool.runtime import preprocess, quant

if TYPE_CHECKING:
    from mltool.runtime.interpreter import LoadedModel


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


@dataclass
class InputAdapter:
    kind: str  # image | signal
    shape: tuple[int, ...]  # input without batch: (H, W, C) or (W, C)
    spec: TensorSpec
    mean: np.ndarray | None
    std: np.ndarray | None
    raw_quantized: bool  # feed values straight into a uint8/int8 input (no metadata, no flags)
    rate_hz: float | None = None
    pixel_lut: np.ndarray | None = None  # uint8 pixel -> model input value (normalised, quantized)

    @property
    def window(self) -> int | None:
        return self.shape[0] if self.kind == "signal" else None

    def image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 frame -> (1, H, W, C) input tensor in the tensor's dtype."""
        h, w, c = self.shape
        pic = preprocess.fit_image(img, w, h, c)
        if self.raw_quantized:
            return quant.raw_pixels(pic[None], self.spec)
        if self.pixel_lut is not None:
            return quant.apply_lut(pic, self.pixel_lut)[None]
        return quant.quantize(preprocess.normalize(pic, self.mean, self.std)[None], self.spec)  # type: ignore[arg-type]

    def signal(self, sig: np.ndarray) -> np.ndarray:
        """One window of samples -> (1, W, C) input tensor in the tensor's dtype."""
        x = sig.reshape(1, *self.shape).astype(np.float32)
        if self.raw_quantized:
            return quant.raw_pixels(x, self.spec)
        return quant.quantize(preprocess.normalize(x, self.mean, self.std), self.spec)  # type: ignore[arg-type]


def input_adapter(model: LoadedModel, mean: list[float] | None = None, std: list[float] | None = None) -> InputAdapter:
    """Decide once how frames feed ``model``: shape and kind from its first input,
    normalisation from ``mean``/``std`` or else the embedded metadata."""
    meta = model.metadata
    inp = model.inputs[0]
    shape = tuple(int(s) for s in inp.shape[1:])
    if len(shape) == 3:
        kind = "image"
        if shape[-1] not in (1, 3):
            raise ConfigError(f"{model.path} input {list(inp.shape)} is not an NHWC image with 1 or 3 channels",
                              "mltool feeds NHWC images (1 or 3 channels) or 1-D signals")
    elif len(shape) == 2 or len(shape) == 1:
        kind = "signal"
        shape = (shape[0], 1) if len(shape) == 1 else shape
    else:
        raise ConfigError(f"{model.path} has input shape {list(inp.shape)}, which mltool cannot feed",
                          "use an image (N, H, W, C) or signal (N, W, 1) model")
    norm = meta.normalization if meta is not None else None
    m = mean if mean is not None else (norm.mean if norm is not None else None)
    s = std if std is not None else (norm.std if norm is not None else None)
    raw = False
    if m is None or s is None:
        if inp.quantized and inp.dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            raw = True  # the common tutorial case: pixels go straight into a uint8 input
        else:
            raise ConfigError(
                f"{model.path} has no mltool metadata saying how to normalise its float input",
                "pass --mean and --std (e.g. --mean 0 --std 255 for [0, 1], --mean 127.5 --std 127.5 for [-1, 1])",
            )
    rate = meta.input.rate_hz if meta is not None else None
    mean_arr = None if raw else np.asarray(m, np.float32)
    std_arr = None if raw else np.asarray(s, np.float32)
    lut = None
    if kind == "image" and not raw and (inp.quantized or inp.dtype == np.dtype(np.float32)):
        lut = quant.pixel_lut(mean_arr, std_arr, inp, shape[-1])  # type: ignore[arg-type]
    return InputAdapter(kind, shape, inp, mean_arr, std_arr, raw, rate, lut)
