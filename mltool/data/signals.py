"""1-D signal files (.csv, .npy) and signal-folder datasets (class per subfolder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltool.errors import DataError

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


def load_signal_folder(root: str | Path, window: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every signal under ``root/<class>/``; each file must hold exactly ``window`` samples.

    Returns (x float32 of shape (N, window, 1), y int64, class names).
    """
    from mltool.data.images import list_class_files

    root = Path(root)
    files, labels, names = list_class_files(root, SIGNAL_EXTENSIONS, "signal files (.csv/.npy)")
    xs = []
    for f in files:
        sig = read_signal(f)
        if len(sig) != window:
            raise DataError(
                f"signal file {f} has {len(sig)} samples, expected {window}",
                f"crop or resample it to {window} samples, or pass --window {len(sig)} if all files have that length",
            )
        xs.append(sig)
    x = np.stack(xs)[..., None]
    return x, np.asarray(labels, dtype=np.int64), names
