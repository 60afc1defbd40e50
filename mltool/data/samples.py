"""Sample files for calibration and evaluation: images or 1-D signals shaped like a model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltool.errors import DataError


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
