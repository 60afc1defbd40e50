"""Image files and image-folder datasets (class per subfolder), read with Pillow."""

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


def read_image(path: str | Path, size: tuple[int, int] | None = None, color: str = "RGB",
               method: str | None = None) -> np.ndarray:
    """One image as uint8 H x W x C (C=3 for RGB, 1 for grayscale), optionally fitted to ``size``
    (W, H) with the same resize and colour conversion the device uses
    (:func:`mltool.runtime.preprocess.fit_image`)."""
    from mltool.runtime.preprocess import DEFAULT_RESIZE, fit_image, to_channels

    channels = 1 if color == "grayscale" else 3
    arr = decode_image(path, draft=tuple(size) if size is not None else None)  # type: ignore[arg-type]
    if size is None:
        return to_channels(arr, channels)
    return fit_image(arr, size[0], size[1], channels, method or DEFAULT_RESIZE)


def class_folders(root: Path, what: str) -> list[Path]:
    """Sorted class subfolders of ``root``; errors name the folder and the expected layout."""
    if not root.exists():
        raise DataError(f"data directory {root} does not exist", f"pass --data DIR pointing at a folder of {what}")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory", f"pass --data DIR pointing at a folder of {what}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{root} has {len(classes)} class folder(s); a classifier needs at least 2",
            f"lay it out as {root}/<class_name>/<file> with one subfolder per class",
        )
    for c in classes:
        if any(ord(ch) < 32 or ch == "\x7f" for ch in c.name) or c.name != c.name.strip():
            raise DataError(f"class folder {c.name!r} in {root} has a line break, control character or edge space in its name",
                            "rename the folder: class names are written one per line in labels.txt")
    return classes


def list_class_files(root: Path, extensions: set[str], what: str) -> tuple[list[Path], list[int], list[str]]:
    """Files under each class folder with one of ``extensions``. Empty class folders are errors."""
    classes = class_folders(root, what)
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        found = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not found:
            raise DataError(
                f"class folder {folder} is empty (no {what})",
                f"add files to it or remove the folder; accepted extensions: {', '.join(sorted(extensions)[:12])}",
            )
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels, [c.name for c in classes]


def load_image_folder(root: str | Path, size: int, color: str = "RGB") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images under ``root/<class>/`` resized to size x size: (x uint8 NHWC, y int64, class names)."""
    root = Path(root)
    files, labels, names = list_class_files(root, image_extensions(), "images")
    x = np.stack([read_image(f, (size, size), color) for f in files])
    return x, np.asarray(labels, dtype=np.int64), names
