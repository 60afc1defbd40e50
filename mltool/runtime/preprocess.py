"""Turn files into model input the way the model was trained: resize, colour, normalise.

Device-safe (NumPy + Pillow). Shared by ``convert --calib`` and, later, ``infer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError, DataError


def normalization_from(meta: dict[str, Any] | None, mean: list[float] | None, std: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) arrays: flags win over the model's recorded normalisation."""
    norm = (meta or {}).get("normalization") or {}
    m = mean if mean is not None else norm.get("mean")
    s = std if std is not None else norm.get("std")
    if m is None or s is None:
        raise ConfigError(
            "the model does not record its input normalisation",
            "pass --mean and --std (e.g. --mean 127.5 --std 127.5 for MobileNet-style [-1, 1] input, --mean 0 --std 255 for [0, 1])",
        )
    s_arr = np.asarray(s, dtype=np.float32)
    if np.any(s_arr == 0):
        raise ConfigError(f"--std {s} contains zero", "use a non-zero standard deviation")
    return np.asarray(m, dtype=np.float32), s_arr


def normalize(x: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    """``(x - mean) / std`` in float32: the one formula training, conversion and inference share."""
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((x.astype(np.float32) - m) / s).astype(np.float32)


def list_sample_files(root: str | Path, input_shape: tuple[int, ...]) -> list[Path]:
    """The files under ``root`` (recursively) that can feed a model with ``input_shape``:
    images for (H, W, C) inputs, .npy/.csv signals for (W, 1) inputs. Other files (READMEs,
    dataset markers) are ignored."""
    from mltool.data.images import image_extensions
    from mltool.data.signals import SIGNAL_EXTENSIONS

    root = Path(root).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root} does not exist", "pass a folder of images or signal files")
    images = len(input_shape) == 3
    exts = image_extensions() if images else SIGNAL_EXTENSIONS - {".txt"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)
    if not files:
        what = "images" if images else "signal files (.npy/.csv)"
        raise DataError(f"{root} holds no {what} for a model with input {list(input_shape)}", f"put {what} in it")
    return files


def load_sample(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """One raw sample shaped like the model input (without batch): HxWxC image or Wx1 signal."""
    from mltool.data.images import image_extensions

    if len(input_shape) == 3 and path.suffix.lower() in image_extensions():
        h, w, c = input_shape
        if c not in (1, 3):
            raise DataError(f"model input has {c} channels; images give 1 or 3", "use signal files or another model")
        from mltool.data.images import read_image

        return read_image(path, (w, h), "grayscale" if c == 1 else "RGB")
    if len(input_shape) == 2:
        from mltool.data.signals import read_signal

        sig = read_signal(path)
        if len(sig) != input_shape[0]:
            raise DataError(f"signal file {path} has {len(sig)} samples, the model takes {input_shape[0]}",
                            f"crop or resample it to {input_shape[0]} samples")
        return sig.reshape(input_shape)
    raise DataError(f"{path} cannot feed a model with input shape {list(input_shape)}",
                    "pass images for image models (H, W, C) or signal files for 1-D models (W, 1)")
