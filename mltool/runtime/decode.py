"""What a device reads: image files (or their bytes) and signal files, decoded the one way that
training, `convert` calibration, `infer` and `serve` all use. Device-safe (Pillow, NumPy); the
dataset loaders in :mod:`mltool.data` build on it, never the other way round."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mltool.errors import DataError


def image_extensions() -> set[str]:
    """Every file extension Pillow can open, lower case with the dot."""
    from PIL import Image

    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


MAX_PIXELS = 40_000_000  # one image may have at most this many pixels (README: 40 Mpx; a 36 MP camera fits)
REDUCE_ABOVE = 4_000_000  # with a draft size, larger images are reduced to about this many pixels before colour conversion
_REDUCIBLE = {"1": "L", "P": "RGBA", "L": None, "LA": None, "RGB": None, "RGBA": None, "CMYK": None, "YCbCr": None,
              "I": None, "F": None}  # mode -> the mode Image.reduce needs first (None: as it is)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding it; None if Pillow
    cannot tell (decoding it will say why)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Exception:
        return None


def decode_image(path: str | Path | bytes, draft: tuple[int, int] | None = None, name: str | None = None) -> np.ndarray:
    """One image file (or its bytes, e.g. an HTTP upload, named ``name`` in errors) as uint8
    H x W x 3 RGB, as a viewer shows it: EXIF orientation applied,
    16-bit and floating-point images scaled to 0..255 (not clipped), transparency dropped.
    ``draft`` (W, H): a JPEG much larger than that is decoded at a reduced scale (1/2 .. 1/8, never
    below ``draft``), which saves most of the memory and time for a small model input; an image
    still over :data:`REDUCE_ABOVE` pixels is then reduced by a whole factor (box filter, never
    below ``draft``) before its colour conversion: a large PNG costs its decoded pixels once,
    not three full-size RGB copies. Images over :data:`MAX_PIXELS` are refused from their
    header, before decoding."""
    import io
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    src = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    path = name or ("upload" if isinstance(path, bytes) else Path(path))  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():  # mltool's own cap below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"image {path} is {img.width}x{img.height} ({img.width * img.height / 1e6:.0f} MP), "
                                f"more than mltool decodes ({MAX_PIXELS / 1e6:.0f} MP)", "downscale it first")
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img = _reduced(img, draft)
            img = ImageOps.exif_transpose(img)
            arr = _to_rgb8(img)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist", "check the path") from None
    except PermissionError:
        raise DataError(f"cannot read image {path} (permission denied)", "check its permissions") from None
    except IsADirectoryError:
        raise DataError(f"image {path} is a directory", "pass an image file, or the directory as the source") from None
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path} is too large to decode ({exc})", "downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError,
            EOFError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {str(exc)[:200]})",
            "replace or delete the file; it is not a valid image",
        ) from None
    return arr


def _reduced(img, draft: tuple[int, int] | None):  # noqa: ANN001, ANN202 (PIL images)
    """``img`` over :data:`REDUCE_ABOVE` pixels reduced by the whole factor that brings it to
    that many or fewer, but never below ``draft`` (W, H) in either orientation (EXIF rotation
    comes after); smaller images as they are."""
    if draft is None or img.mode not in _REDUCIBLE:
        return img
    if img.width * img.height <= REDUCE_ABOVE:
        return img
    dw, dh = max(1, draft[0]), max(1, draft[1])
    need = math.ceil(math.sqrt(img.width * img.height / REDUCE_ABOVE))  # to REDUCE_ABOVE pixels or fewer
    factor = min(need, img.width // dw, img.height // dh, img.width // dh, img.height // dw)
    if factor < 2:
        return img
    exif = img.getexif()  # reduce() keeps no metadata: the orientation must survive it
    mode = _REDUCIBLE[img.mode]
    if mode is None:
        small = img.reduce(factor)
    else:  # converted a band at a time: never a second full-size copy (a 1-bit PNG is 1 byte/pixel, RGBA 4)
        from PIL import Image

        img.load()
        small = Image.new(mode, (-(-img.width // factor), -(-img.height // factor)))
        step = factor * max(1, 1_000_000 // (img.width * factor))  # about 1 Mpx a band, whole blocks
        for y in range(0, img.height, step):
            small.paste(img.crop((0, y, img.width, min(img.height, y + step))).convert(mode).reduce(factor), (0, y // factor))
    if exif:
        small.info["exif"] = exif.tobytes()
    return small


def _to_rgb8(img) -> np.ndarray:  # noqa: ANN001 (a PIL image)
    """Pillow image -> uint8 RGB array. High bit depths are scaled, never clipped."""

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 257.0  # 0..65535 -> 0..255
        elif img.mode == "I" and a.size and a.max() > 255:
            a = a * (255.0 / 65535.0) if a.max() <= 65535 else a * (255.0 / a.max())
        elif img.mode == "F":
            lo, hi = (0.0, 1.0) if a.size and a.min() >= 0 and a.max() <= 1 else (float(a.min()), float(a.max()))
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        g = np.clip(np.round(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if img.mode not in ("RGB",):
        img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() or img.mode == "P" else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------- signals

SIGNAL_EXTENSIONS = {".csv", ".npy", ".txt"}


def read_signal(path: str | Path, channels: int = 1) -> np.ndarray:
    """A signal as float32: (n,) for one channel, (n, channels) otherwise. CSV: one value per
    line or per field for one channel, one row of ``channels`` values per sample otherwise; a
    header row is skipped. ``.npy``: a 1-D array, or (n, channels)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"signal file {path} does not exist", "check the path")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            rows = [r for r in text.replace(";", ",").splitlines() if r.strip()]
            if rows and not _is_numeric_row(rows[0]):
                rows = rows[1:]  # header
            if channels == 1:
                arr = np.asarray([float(v) for r in rows for v in r.replace(",", " ").split()])
            else:
                arr = np.asarray([[float(v) for v in r.replace(",", " ").split()] for r in rows])
    except PermissionError:
        raise DataError(f"cannot read signal file {path} (permission denied)", "check its permissions") from None
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(
            f"cannot read signal file {path} ({str(exc) or type(exc).__name__})",
            "expected a .npy array or a .csv with one number per line",
        ) from None
    arr = np.asarray(arr)
    if np.iscomplexobj(arr):
        raise DataError(f"signal file {path} holds complex numbers", "save the real-valued samples (e.g. np.real or np.abs)")
    if channels == 1 and arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    want = 1 if channels == 1 else 2
    if arr.ndim != want or (channels > 1 and arr.shape[1] != channels):
        raise DataError(
            f"signal file {path} has shape {arr.shape}; expected {'one channel' if channels == 1 else f'{channels} channels'}",
            "save one 1-D array (or one CSV column) per file" if channels == 1 else f"save an (n, {channels}) array, one row per sample",
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"signal file {path} does not hold numbers (dtype {arr.dtype})", "save numeric samples")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"signal file {path} contains NaN or infinite values", "clean or drop the file")
    return arr.astype(np.float32)


def _is_numeric_row(row: str) -> bool:
    try:
        [float(v) for v in row.replace(",", " ").split()]
        return True
    except ValueError:
        return False
