"""1-D signal files (.csv, .npy) and signal-folder datasets (class per subfolder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltool.errors import DataError
from mltool.runtime.decode import SIGNAL_EXTENSIONS, read_signal  # noqa: F401  (the dataset loaders' names)


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
