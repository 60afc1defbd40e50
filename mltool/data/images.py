"""Image files and image-folder datasets (class per subfolder), read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltool.errors import DataError


def image_extensions() -> set[str]:
    """Every file extension Pillow can open, lower case with the dot."""
    from PIL import Image

    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def read_image(path: str | Path, size: tuple[int, int] | None = None, color: str = "RGB") -> np.ndarray:
    """Read one image as uint8 HxWxC (C=3 for RGB, 1 for grayscale), optionally resized (W, H)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    mode = "L" if color == "grayscale" else "RGB"
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist", "check the path") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {exc})",
            "replace or delete the file; it is not a valid image",
        ) from None
    return arr[..., None] if arr.ndim == 2 else arr


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
