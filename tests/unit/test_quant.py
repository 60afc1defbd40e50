"""The one place quantization math lives: quantize/dequantize and the pixel LUT agree."""

from __future__ import annotations

import numpy as np
import pytest

from mltool.runtime.quant import TensorSpec, dequantize, pixel_lut, quantize


@pytest.mark.parametrize("dtype, scale, zp", [(np.int8, 1 / 255, -128), (np.uint8, 0.0078125, 128), (np.int8, 0.0078125, -1)])
def test_roundtrip_within_half_a_step(dtype, scale, zp):
    spec = TensorSpec(0, "x", (1, 4), np.dtype(dtype), scale, zp)
    x = np.linspace(-0.9, 0.99, 500, dtype=np.float32)
    info = np.iinfo(dtype)
    representable = (x / scale + zp >= info.min) & (x / scale + zp <= info.max)
    back = dequantize(quantize(x, spec), spec)
    assert np.all(np.abs(back - x)[representable] <= scale / 2 + 1e-6)


def test_float_tensors_pass_through():
    spec = TensorSpec(0, "x", (1,), np.dtype(np.float32), 0.0, 0)
    x = np.array([1.5, -2.25], np.float32)
    assert quantize(x, spec).tolist() == [1.5, -2.25] and dequantize(x, spec).tolist() == [1.5, -2.25]


def test_clipping():
    spec = TensorSpec(0, "x", (1,), np.dtype(np.int8), 0.01, 0)
    assert quantize(np.array([10.0, -10.0]), spec).tolist() == [127, -128]


@pytest.mark.parametrize("mean, std, channels", [([0.0], [255.0], 1), ([127.5], [127.5], 3), ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4], 3)])
def test_pixel_lut_equals_normalise_then_quantize(mean, std, channels):
    import cv2

    from mltool.runtime.model_io import InputAdapter

    spec = TensorSpec(0, "x", (1, 16, 16, channels), np.dtype(np.int8), 0.0078125, -1)
    lut = pixel_lut(np.array(mean, np.float32), np.array(std, np.float32), spec, channels)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    adapter = InputAdapter("image", (16, 16, channels), spec, np.array(mean, np.float32), np.array(std, np.float32),
                           False, None, lut)
    got = adapter.image(img)
    src = img if channels == 3 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    want = quantize((src.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32), spec)[None]
    assert got.dtype == np.int8 and np.array_equal(got, want)


def test_annotation_never_covers_box_labels():
    """Summary text goes in a strip below the picture; a box touching the top edge keeps its
    label inside the picture; every frame of a task has the same size (video writers need it)."""
    from mltool.runtime.detect import Detection
    from mltool.runtime.draw import annotate

    img = np.zeros((240, 320, 3), np.uint8)
    det = Detection("person", 0.9, 0, (0.0, 0.9, 0.4, 1.0))  # top edge, right edge
    out = annotate(img, ["1 objects", "person 0.90"], [det], strip_lines=4)
    assert out.shape[1] == 320 and out.shape[0] > 240
    top = out[:240]
    label = (top[..., 1] == 255) & (top[..., 0] == 0) & (top[..., 2] == 0)  # filled green label background
    ys, xs = np.nonzero(label[:, :284])  # left of the box's outline: only the label can be there
    assert len(xs) > 100 and ys.max() < 40  # moved left to stay in the picture, just inside the top edge
    assert out[240:].any()  # the summary is in the strip, not on the picture
    again = annotate(img, ["0 objects"], [], strip_lines=4)
    assert again.shape == out.shape
