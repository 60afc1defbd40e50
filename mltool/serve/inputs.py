"""What clients send, made safe: base64, encoded images, multipart uploads, tensors.

Everything here raises :class:`~mltool.serve.http.HttpError` (400) with a reason that names
the field at fault, so a malformed request is answered and forgotten.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mltool.errors import DataError
from mltool.runtime.sources import Frame
from mltool.serve.http import HttpError

DTYPES = {"FP32": np.float32, "UINT8": np.uint8, "INT8": np.int8}
REQUEST_PIXELS = 40_000_000  # the pixels of all images in one request (= one image's cap, MAX_PIXELS)


def b64decode(value: Any, where: str) -> bytes:
    """Standard or URL-safe base64 (a ``data:`` URL prefix and whitespace allowed), or
    ``{"b64": ...}``; anything else is a 400 naming ``where``."""
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"{where} must be a base64 string, not {type(value).__name__}")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    s = "".join(value.split())
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"{where} is not valid base64") from None


def fitter(p: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The first step of the Predictor's own preprocessing (its resize to the input's H x W, in
    RGB; for a letterboxed model its scaling, aspect kept, not its padding): done as each image is decoded, so a request holds model-sized pictures, not full-size
    ones, and the Predictor's resize then finds nothing left to do (the same tensor either way)."""
    from mltool.runtime.preprocess import letterbox_scale, resize

    h, w = p.input.shape[0], p.input.shape[1]
    if p.input.resize_method == "letterbox":  # YOLO: the aspect ratio (and so the boxes' geometry) is kept
        return lambda img: letterbox_scale(img, w, h)
    return lambda img: resize(img, w, h, p.input.resize_method)


def image_frames(images: list[bytes], names: list[str], draft: tuple[int, int] | None = None,
                 sizes: list[tuple[int, int]] | None = None, fit: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Frame]:
    """Decode each image into a Frame the way `mltool infer` reads image files (same decoder,
    same reduced decoding for a small model input), so answers match it; the decode time is the
    frame's read time. The images of one request may have :data:`REQUEST_PIXELS` together,
    counted from their headers before any is decoded; they are decoded one after the other,
    each reduced before the next (``sizes`` gets each image's own (width, height), for boxes
    in its pixels)."""
    from mltool.runtime.decode import MAX_PIXELS, decode_image, image_size

    total = 0
    heads = []
    for data, name in zip(images, names):
        size = image_size(data) if data else None
        heads.append(size)
        pixels = size[0] * size[1] if size else 0
        total += pixels if pixels <= MAX_PIXELS else 0  # one over the cap per image is refused by name below
        if total > REQUEST_PIXELS:
            raise HttpError(413, f"the images of this request have over {REQUEST_PIXELS / 1e6:.0f} Mpx together (at {name}); "
                                 "send fewer or smaller images per request")
    frames = []
    for i, (data, name) in enumerate(zip(images, names)):
        if not data:
            raise HttpError(400, f"{name} is empty; send an encoded image (JPEG, PNG...)")
        t0 = time.perf_counter()
        try:
            img = decode_image(data, draft, name)
        except DataError as exc:
            raise HttpError(400, _BYTESIO.sub("", exc.message)) from None
        if sizes is not None:
            w, h = heads[i] or (img.shape[1], img.shape[0])
            sizes.append((w, h) if (w >= h) == (img.shape[1] >= img.shape[0]) else (h, w))  # EXIF rotation
        read_ms = (time.perf_counter() - t0) * 1000
        if fit is not None:
            img = fit(img)
        frames.append(Frame(i, name, time.time(), image=img, read_ms=read_ms))
    return frames


_BYTESIO = re.compile(r":? ?<_io\.BytesIO object at 0x[0-9a-f]+>")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.I)
_NAME = re.compile(rb'name="([^"]*)"', re.I)


def multipart_field(body: bytes, content_type: str, field: str) -> bytes:
    """The content of form field ``field`` in a multipart/form-data body."""
    m = _BOUNDARY.search(content_type)
    if not m:
        raise HttpError(400, "multipart/form-data without a boundary parameter")
    delim = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    parts = body.split(delim)
    if len(parts) < 3:
        raise HttpError(400, "malformed multipart body (no closing boundary)")
    names = []
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise HttpError(400, "malformed multipart body (a part has no headers)")
        nm = _NAME.search(head)
        name = nm.group(1).decode("latin-1") if nm else ""
        names.append(name)
        if name == field:
            return data.removesuffix(b"\r\n")
    raise HttpError(400, f"the multipart body has no field '{field}' (fields: {', '.join(names) or 'none'})")


def tensor(data: Any, shape: Any, datatype: Any, where: str) -> np.ndarray:
    """OIP tensor ``data`` (flat or nested list) as an array of ``shape`` and ``datatype``."""
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise HttpError(400, f"{where}.datatype {_shown_value(datatype)} is not supported; use FP32, UINT8, INT8 or BYTES (an encoded image)")
    shp = check_shape(shape, where)
    if not isinstance(data, list):
        raise HttpError(400, f"{where}.data must be a list of numbers")
    dtype = DTYPES[datatype]
    # integers stay integers (no float round trip, cheap range checks); floats are floats
    arr = numbers(data, f"{where}.data", dtype == np.float32)
    return _shaped(arr, shp, dtype, datatype, where)


def numbers(data: list[Any], where: str, as_float: bool = True) -> np.ndarray:
    """A flat or evenly nested JSON list of numbers as an array (float32, or as parsed); null,
    true, "1.5", NaN, Infinity and values beyond float32 are a 400 naming ``where``."""
    todo = [data]
    while todo:  # every element's type, without recursion (any nesting depth)
        items = todo.pop()
        kinds = set(map(type, items))
        if list in kinds:
            kinds.discard(list)
            todo.extend(x for x in items if type(x) is list)
        if not kinds <= _NUMBER:
            bad = next(x for x in items if type(x) not in _NUMBER and type(x) is not list)
            raise HttpError(400, f"{where} must hold only numbers; it has {_quoted(bad)}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(data, dtype=np.float32) if as_float else np.array(data)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf":  # uneven nesting; integers too large for int64
        raise HttpError(400, f"{where} must hold only numbers (in range), in a flat or evenly nested list")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise HttpError(400, f"{where} has NaN, Infinity or a number beyond FP32's range (+-3.4e38); send finite values")
    return arr


_NUMBER = {int, float}


def _shown_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _quoted(value: Any) -> str:
    """A client's JSON value, short, for an error message."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def raw_tensor(buf: bytes, shape: Any, datatype: str, where: str) -> np.ndarray:
    """A tensor sent as raw little-endian bytes (the binary tensor data extension)."""
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise HttpError(400, f"{where}.datatype {_shown_value(datatype)} is not supported in binary form; use FP32, UINT8 or INT8")
    shp = check_shape(shape, where)
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(buf) != math.prod(shp) * dtype.itemsize:
        raise HttpError(400, f"{where} has {len(buf)} bytes of binary data; shape {shp} as {datatype} needs {math.prod(shp) * dtype.itemsize}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shp).astype(DTYPES[datatype])
    if datatype == "FP32" and not np.all(np.isfinite(arr)):
        raise HttpError(400, f"{where} has NaN or Infinity in its binary FP32 data; send finite values")
    return arr


def raw_bytes_elements(buf: bytes, where: str) -> list[bytes]:
    """BYTES elements in binary form: each a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise HttpError(400, f"{where}: truncated BYTES element length")
        n = int.from_bytes(buf[pos : pos + 4], "little")
        if pos + 4 + n > len(buf):
            raise HttpError(400, f"{where}: BYTES element of {n} bytes runs past the data")
        out.append(buf[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise HttpError(400, f"{where}.shape must be a non-empty list of non-negative integers, not {shape!r}")
    if math.prod(shape) > 50_000_000:
        raise HttpError(400, f"{where}.shape {shape} is too large")
    return shape


def _shaped(arr: np.ndarray, shp: list[int], dtype: Any, datatype: str, where: str) -> np.ndarray:
    need = math.prod(shp)
    if arr.size != need:
        raise HttpError(400, f"{where}.shape {shp} needs {need} values; data has {arr.size}")
    if dtype != np.float32:
        info = np.iinfo(dtype)
        integral = arr.dtype.kind in "iu" or (np.all(np.isfinite(arr)) and not np.any(arr != np.round(arr)))
        if arr.size and (not integral or arr.min() < info.min or arr.max() > info.max):
            raise HttpError(400, f"{where}.data has values outside {datatype} ({info.min}..{info.max}, integers)")
    return arr.reshape(shp).astype(dtype, copy=False)
