"""What a model's tensors are, and how a frame becomes its input tensor.

:class:`TensorSpec` describes one tensor as the interpreter reports it. :class:`InputAdapter`
is decided once per model (from its embedded metadata, overridden by flags) and then turns each
RGB frame or signal window into the input tensor, already in the tensor's own dtype: resized and
coloured by :mod:`~mltool.runtime.preprocess`, normalised and quantized by
:mod:`~mltool.runtime.quant` (for 8-bit pixels, in a single table lookup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mltool.errors import ConfigError
from mltool.runtime import preprocess, quant
from mltool.runtime.quant import TensorSpec

if TYPE_CHECKING:
    from mltool.runtime.interpreter import LoadedModel


@dataclass
class InputAdapter:
    kind: str  # image | signal
    shape: tuple[int, ...]  # input without batch: (H, W, C) for images, (W, C) for signals
    spec: TensorSpec
    mean: np.ndarray | None
    std: np.ndarray | None
    raw_quantized: bool  # feed pixels straight into a uint8/int8 input (no metadata, no flags)
    rate_hz: float | None = None
    pixel_lut: np.ndarray | None = None  # uint8 pixel -> model input value (normalised, quantized)
    tensor_rank: int = 4  # signals: 2 for [1, N] (audio), 3 for [1, N, C]
    variable_length: bool = False  # a signal model with a dynamic length: one window per file
    resize_method: str = preprocess.DEFAULT_RESIZE
    notes: list[str] = field(default_factory=list)  # said once to the user
    layout: str = "NHWC"  # images: NHWC, or NCHW (channels first, as PyTorch exports are)

    @property
    def window(self) -> int | None:
        return self.shape[0] if self.kind == "signal" and not self.variable_length else None

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 frame -> (1, H, W, C) input tensor in the tensor's dtype ((1, C, H, W) for
        channels-first models)."""
        h, w, c = self.shape
        pic = preprocess.fit_image(img, w, h, c, self.resize_method)
        if self.raw_quantized:
            x = quant.raw_pixels(pic[None], self.spec)
        elif self.pixel_lut is not None:
            x = quant.apply_lut(pic, self.pixel_lut)[None]
        else:
            x = quant.quantize(preprocess.normalize(pic, self.mean, self.std)[None], self.spec)  # type: ignore[arg-type]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def letterbox(self, width: int, height: int) -> preprocess.Letterbox | None:
        """Where a ``width`` x ``height`` picture lands in the input (letterboxed models only)."""
        if self.resize_method != "letterbox":
            return None
        return preprocess.Letterbox.fit(width, height, self.shape[1], self.shape[0])

    def signal(self, sig: np.ndarray) -> np.ndarray:
        """One window of samples, (W,) or (W, C) -> the input tensor ([1, W] or [1, W, C]) in the
        tensor's dtype."""
        x = np.asarray(sig, np.float32).reshape(-1, self.channels)
        x = x[None, :, 0] if self.tensor_rank == 2 else x[None]
        if self.raw_quantized:
            return quant.raw_pixels(x, self.spec)
        return quant.quantize(preprocess.normalize(x, self.mean, self.std), self.spec)  # type: ignore[arg-type]


def image_layout(shape: tuple[int, ...] | list[int]) -> str | None:
    """NHWC or NCHW for a 4-D input ``shape`` that is an image (1 or 3 channels last, else
    first), None otherwise. Channels last wins when both would fit."""
    if len(shape) != 4:
        return None
    if shape[-1] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    return None


def input_adapter(model: LoadedModel, mean: list[float] | None = None, std: list[float] | None = None, *,
                  shape_given: bool = False, letterbox: bool = False,
                  default_norm: tuple[list[float], list[float]] | None = None) -> InputAdapter:
    """Decide once how frames feed ``model``: shape and kind from its input (``shape_given``:
    the user fixed its dynamic dimensions with --input-shape), normalisation from ``mean``/``std``
    or else what the model says about itself (mltool metadata, or standard TFLite Metadata), or
    else ``default_norm`` (what the model family implies, e.g. YOLO's x / 255). ``letterbox``:
    pictures are scaled to fit and padded (YOLO) instead of stretched."""
    meta = model.description
    if len(model.inputs) != 1:
        names = ", ".join(f"{i.name} {list(i.shape)}" for i in model.inputs)
        raise ConfigError(f"{model.path} has {len(model.inputs)} inputs ({names}); mltool feeds models with one input",
                          "`mltool bench` and `mltool inspect` work on it; for infer, export a single-input model")
    inp = model.inputs[0]
    signature = model.info.inputs[0].shape_signature if model.info.inputs else list(inp.shape)
    dynamic = [i for i, d in enumerate(signature) if d == -1 and i > 0] if not shape_given else []
    shape = tuple(int(s) for s in inp.shape[1:])
    layout = meta.input.layout if meta is not None else None
    notes: list[str] = []
    image = "NHWC"
    if len(shape) == 3 and layout != "NWC":
        kind, rank = "image", 4
        found = image_layout(inp.shape)
        if found is None:
            raise ConfigError(f"{model.path} input {list(inp.shape)} is not an image with 1 or 3 channels (NHWC or NCHW)",
                              "mltool feeds NHWC or NCHW images (1 or 3 channels) or 1-D signals ([1, N], [1, N, C])")
        image = found
        if image == "NCHW":
            shape = (shape[1], shape[2], shape[0])
        if dynamic:
            example = f"1,{shape[-1]},640,640" if image == "NCHW" else f"1,224,224,{shape[-1]}"
            raise ConfigError(f"{model.path} takes images of any size (input {inp.name} has shape signature {signature}); "
                              "mltool needs to know which", f"pass --input-shape, e.g. --input-shape {example}")
    elif len(shape) in (1, 2):
        kind, rank = "signal", len(shape) + 1
        shape = (shape[0], 1) if len(shape) == 1 else shape
        if dynamic and dynamic != [1]:
            raise ConfigError(f"{model.path} input {inp.name} has dynamic dimensions {dynamic} (signature {signature})",
                              "pass --input-shape with every dimension, e.g. --input-shape 1,16000")
    else:
        raise ConfigError(f"{model.path} has input shape {list(inp.shape)}, which mltool cannot feed",
                          "use an image (1, H, W, C) or signal ([1, N] or [1, N, C]) model")
    norm = meta.normalization if meta is not None else None
    m = mean if mean is not None else (norm.mean if norm is not None else None)
    s = std if std is not None else (norm.std if norm is not None else None)
    if (m is None or s is None) and default_norm is not None:
        m = mean if mean is not None else default_norm[0]
        s = std if std is not None else default_norm[1]
    raw = False
    if m is None or s is None:
        if kind == "signal":
            m, s = [0.0], [1.0]
            notes.append("no normalisation metadata: feeding the samples as they are (pass --mean/--std to change that)")
        elif inp.quantized and inp.dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            raw = True  # the common tutorial case: pixels go straight into a uint8 input
            notes.append("no normalisation metadata: feeding raw pixels to the quantized input (pass --mean/--std to override)")
        else:
            raise ConfigError(
                f"{model.path} has no metadata saying how to normalise its float input",
                "pass --mean and --std (e.g. --mean 0 --std 255 for [0, 1], --mean 127.5 --std 127.5 for [-1, 1])",
            )
    mean_arr = None if raw else preprocess.check_normalization(m, s, shape[-1])[0]
    std_arr = None if raw else preprocess.check_normalization(m, s, shape[-1])[1]
    lut = None
    if kind == "image" and not raw and (inp.quantized or inp.dtype == np.dtype(np.float32)):
        lut = quant.pixel_lut(mean_arr, std_arr, inp, shape[-1])  # type: ignore[arg-type]
    rate = meta.input.rate_hz if meta is not None else None
    method = (meta.input.resize_method if meta is not None else None) or preprocess.DEFAULT_RESIZE
    if letterbox and kind == "image":
        method = "letterbox"
    return InputAdapter(kind, shape, inp, mean_arr, std_arr, raw, rate, lut, rank, bool(dynamic), method, notes, image)
