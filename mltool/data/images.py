"""Image files and image-folder datasets (class per subfolder), read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltool.errors import DataError
from mltool.runtime.decode import (  # noqa: F401  (the dataset loaders' names for them)
    MAX_PIXELS,
    REDUCE_ABOVE,
    decode_image,
    image_extensions,
    image_size,
)


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
