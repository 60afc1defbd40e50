"""Named datasets: where each lives on disk, and how a training task loads it.

Search order for a named dataset (first hit wins):

1. ``--data DIR`` (an explicit path is never second-guessed: if it is wrong, that is the error);
2. ``$MLTOOL_DATA/<name>/`` (or ``$MLTOOL_DATA`` itself when it holds the files);
3. ``~/.mltool/datasets/<name>/`` (where ``mltool datasets synth`` writes by default);
4. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-*`` packages);
5. the Keras cache ``~/.keras/datasets/`` (MNIST and Fashion-MNIST only);
6. a Keras download (MNIST and Fashion-MNIST only), with a clear offline error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mltool.data.base import Dataset, fingerprint, stratified_split, stratified_subsample
from mltool.errors import ConfigError, DataError, did_you_mean

SYSTEM_DATASETS = Path("/usr/share/datasets")

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]

SYNTHETIC_MARKER = "SYNTHETIC.txt"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str  # image | signal
    default_arch: str
    description: str
    folder: bool  # reads a class-per-subfolder layout


TASKS: dict[str, TaskInfo] = {
    "mnist": TaskInfo("mnist", "image", "cnn", "handwritten digits, 28x28 grayscale (IDX files)", False),
    "fashion-mnist": TaskInfo("fashion-mnist", "image", "cnn", "Zalando clothing, 28x28 grayscale (IDX files)", False),
    "digits": TaskInfo("digits", "image", "cnn", "scikit-learn's bundled 8x8 digits (1,797 images)", False),
    "fire": TaskInfo("fire", "image", "fire-cnn", "fire / no_fire images, resized to 64x64 RGB", True),
    "ecg": TaskInfo("ecg", "signal", "cnn1d", "1-D ECG windows (.csv/.npy) per class folder", True),
    "images": TaskInfo("images", "image", "fire-cnn", "any image folder, one subfolder per class", True),
}


def get_task(name: str) -> TaskInfo:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task '{name}'", did_you_mean(name, TASKS)) from None


def user_datasets_dir() -> Path:
    return Path(os.environ.get("MLTOOL_HOME", Path.home() / ".mltool")) / "datasets"


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def default_synth_dir(name: str) -> Path:
    env = os.environ.get("MLTOOL_DATA")
    return Path(env) / name if env else user_datasets_dir() / name


def _idx_present(d: Path) -> bool:
    return all(_idx_path(d, stem) is not None for stem in IDX_FILES.values())


def _idx_path(d: Path, stem: str) -> Path | None:
    for candidate in (d / f"{stem}.gz", d / stem):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(name: str) -> list[tuple[str, Path]]:
    """Places a dataset may live, in search order, labelled for ``datasets list``."""
    out: list[tuple[str, Path]] = []
    env = os.environ.get("MLTOOL_DATA")
    if env:
        out += [("$MLTOOL_DATA", Path(env) / name), ("$MLTOOL_DATA", Path(env))]
    out.append(("user", user_datasets_dir() / name))
    out.append(("system", SYSTEM_DATASETS / name))
    if name in ("mnist", "fashion-mnist"):
        out.append(("keras cache", keras_cache_dir() / name))
    return out


def locate(name: str) -> Path | None:
    """First directory holding dataset ``name`` (ignoring --data), or None."""
    info = TASKS.get(name)
    for _, d in candidate_dirs(name):
        if not d.is_dir():
            continue
        if name in ("mnist", "fashion-mnist"):
            if _idx_present(d):
                return d
        elif info is not None and info.folder:
            if d.name == name and any(p.is_dir() for p in d.iterdir()):
                return d
    if name == "mnist" and (keras_cache_dir() / "mnist.npz").is_file():
        return keras_cache_dir() / "mnist.npz"
    return None


# --------------------------------------------------------------------------- loaders


def _load_idx_dataset(name: str, data_dir: Path | None, download: bool) -> Dataset:
    if data_dir is not None:
        if not data_dir.is_dir():
            raise DataError(f"data directory {data_dir} does not exist", f"pass --data DIR holding the {name} IDX files")
        where = data_dir
    else:
        where = locate(name)
    if where is None:
        return _download_keras(name) if download else _offline_error(name, "downloads disabled")

    from mltool.data.idx import read_idx

    if where.suffix == ".npz":
        with np.load(where, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    else:
        arrays = {}
        for key, stem in IDX_FILES.items():
            path = _idx_path(where, stem)
            if path is None:
                raise DataError(
                    f"{where} has no {stem}.gz",
                    f"put the four {name} IDX files ({', '.join(s + '.gz' for s in IDX_FILES.values())}) there",
                )
            arrays[key] = read_idx(path, expect_ndim=3 if key.startswith("x") else 1)
    return _idx_dataset(name, arrays, str(where))


def _idx_dataset(name: str, a: dict[str, np.ndarray], source: str) -> Dataset:
    for split in ("train", "test"):
        nx, ny = len(a[f"x_{split}"]), len(a[f"y_{split}"])
        if nx != ny:
            raise DataError(
                f"{name} {split} split in {source} has {nx} images but {ny} labels",
                "the files come from different releases: fetch all four again",
            )
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    top = int(max(a["y_train"].max(), a["y_test"].max()))
    if top >= len(classes):
        raise DataError(f"{name} labels in {source} go up to {top}, expected 0..{len(classes) - 1}", "fetch the label files again")
    x_train, x_test = a["x_train"][..., None], a["x_test"][..., None]
    y_train, y_test = a["y_train"].astype(np.int64), a["y_test"].astype(np.int64)
    return Dataset(
        name=name, kind="image",
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=list(classes), source=source,
        fingerprint=fingerprint(x_train, y_train, x_test, y_test, names=classes),
        official_test_split=True,
        input={"color": "grayscale", "range": [0, 255], "dtype": "uint8"},
    )


def _offline_error(name: str, reason: str) -> Dataset:
    files = ", ".join(s + ".gz" for s in IDX_FILES.values())
    debian = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
    raise DataError(
        f"{name} is not available locally and could not be downloaded ({reason})",
        f"put {files} in {keras_cache_dir() / name} or pass --data DIR{debian}",
    )


def _download_keras(name: str) -> Dataset:
    import contextlib
    import socket
    import sys

    from mltool._tf import import_tensorflow

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        import_tensorflow()
        import keras

        loader = keras.datasets.fashion_mnist if name == "fashion-mnist" else keras.datasets.mnist
        # Keras reports download progress on stdout, which belongs to --json output.
        with contextlib.redirect_stdout(sys.stderr):
            (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # any network failure: DNS, refused, timeout, HTTP error
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return _offline_error(name, reason)
    finally:
        socket.setdefaulttimeout(old)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _idx_dataset(name, arrays, f"keras download ({keras_cache_dir()})")


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Stored as 0..16 intensities; rescale to ordinary 8-bit pixels so that the trained model
    # takes the same input as a real image file (every image task uses 0..255).
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int64)
    return Dataset(
        name="digits", kind="image", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0],
        class_names=list(DIGIT_CLASSES), source="scikit-learn (bundled)",
        fingerprint=fingerprint(x, y, names=DIGIT_CLASSES),
        input={"color": "grayscale", "range": [0, 255], "dtype": "uint8"},
    )


def _folder_dir(task: TaskInfo, data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    found = locate(task.name)
    if found is None:
        synth = f"`mltool datasets synth {task.name}` writes a synthetic one, or " if task.name in ("fire", "ecg") else ""
        where = ", ".join(str(d) for _, d in candidate_dirs(task.name))
        raise DataError(f"no {task.name} dataset found (looked in {where})", f"{synth}pass --data DIR")
    return found


def _is_synthetic(root: Path) -> bool:
    return (root / SYNTHETIC_MARKER).is_file()


def load_task(
    task: str,
    data_dir: str | Path | None = None,
    *,
    image_size: int | None = None,
    window: int = 3600,
    download: bool = True,
) -> Dataset:
    """Load the dataset for ``task``. Folder datasets are returned with an empty test split (see
    :func:`prepare_splits`)."""
    info = get_task(task)
    data_path = Path(data_dir).expanduser() if data_dir is not None else None
    if task in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(task, data_path, download)
    if task == "digits":
        if data_path is not None:
            raise ConfigError("the digits task uses scikit-learn's bundled data; --data does not apply", "drop --data, or use `images DIR` for your own digits")
        return _load_digits()
    if task == "images" and data_path is None:
        raise ConfigError("the images task needs a folder", "run `mltool train images DIR` with one subfolder per class")
    root = _folder_dir(info, data_path)
    if info.kind == "signal":
        from mltool.data.signals import load_signal_folder

        x, y, names = load_signal_folder(root, window)
        extra = {"dtype": "float32", "window": window}
    else:
        from mltool.data.images import load_image_folder

        size = image_size or 64
        x, y, names = load_image_folder(root, size, "RGB")
        from mltool.runtime.preprocess import DEFAULT_RESIZE

        extra = {"color": "RGB", "range": [0, 255], "dtype": "uint8", "resize": [size, size], "resize_method": DEFAULT_RESIZE}
    return Dataset(
        name=task, kind=info.kind, x_train=x, y_train=y, x_test=x[:0], y_test=y[:0],
        class_names=names, source=str(root.resolve()),
        fingerprint=fingerprint(x, y, names=names), synthetic=_is_synthetic(root), input=extra,
    )


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def prepare_splits(
    ds: Dataset, *, val_split: float, test_split: float, seed: int, limit: int | None
) -> Splits:
    """Seeded, stratified train/val/test splits. ``limit`` caps each source split (quick runs).

    Datasets with an official test split (MNIST, Fashion-MNIST) keep it as the test set;
    others hold out ``test_split`` of every class.
    """
    x, y = ds.x_train, ds.y_train
    if limit is not None:
        keep = stratified_subsample(y, limit, seed)
        x, y = x[keep], y[keep]
    if ds.official_test_split:
        x_test, y_test = ds.x_test, ds.y_test
        if limit is not None:
            keep = stratified_subsample(y_test, limit, seed)
            x_test, y_test = x_test[keep], y_test[keep]
    else:
        rest, test = stratified_split(y, test_split, seed)
        x_test, y_test = x[test], y[test]
        x, y = x[rest], y[rest]
    train, val = stratified_split(y, val_split, seed + 1)
    for split, labels in (("training", y[train]), ("test", y_test)):
        if len(labels) == 0:
            raise DataError(f"{ds.name}: the {split} split is empty", "use more samples (raise --max-samples) or lower --val-split")
    return Splits(x[train], y[train], x[val], y[val], x_test, y_test)


def describe_local() -> list[dict]:
    """Which named datasets are available here, where, and how big (for ``datasets list``)."""
    import importlib.util

    rows = []
    for name, info in TASKS.items():
        if name == "images":
            continue
        row: dict = {"name": name, "kind": info.kind, "description": info.description,
                     "available": False, "path": None, "synthetic": False, "samples": None,
                     "searched": [str(d) for _, d in candidate_dirs(name)]}
        if name == "digits":
            ok = importlib.util.find_spec("sklearn") is not None
            row.update(available=ok, path="scikit-learn (bundled)" if ok else None, samples=1797 if ok else None,
                       searched=["scikit-learn package"])
        else:
            where = locate(name)
            if where is not None:
                row.update(available=True, path=str(where))
                if info.folder:
                    row["synthetic"] = _is_synthetic(where)
                    row["samples"] = sum(1 for p in where.rglob("*") if p.is_file() and p.parent != where)
                else:
                    row["samples"] = 70000
        rows.append(row)
    return rows


def write_samples(task: str, out: Path, count: int = 8, data_dir: str | Path | None = None, seed: int = 0,
                  download: bool = True) -> list[Path]:
    """The first ``count`` held-out test samples of ``task`` (the split `mltool train` with the same
    seed and default splits never trains on) as files named ``test<i>_<label>``: PNG pictures for
    image tasks, ``.npy`` windows for signals. What to try a freshly trained model on."""
    import re

    from mltool._io import ensure_writable_dir

    ds = load_task(task, data_dir, download=download)
    splits = prepare_splits(ds, val_split=0.1, test_split=0.2, seed=seed, limit=None)
    out = ensure_writable_dir(Path(out), "OUT_DIR")
    written = []
    for i in range(min(count, len(splits.y_test))):
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", ds.class_names[int(splits.y_test[i])]).strip("-") or "class"
        x = splits.x_test[i]
        if ds.kind == "image":
            from PIL import Image

            arr = np.asarray(x)
            if arr.dtype != np.uint8:
                lo, hi = ds.input.get("range", [0, 255])
                arr = np.clip((arr.astype(np.float32) - lo) * 255.0 / max(hi - lo, 1e-9), 0, 255).astype(np.uint8)
            path = out / f"test{i}_{label}.png"
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
        else:
            path = out / f"test{i}_{label}.npy"
            np.save(path, np.asarray(x, np.float32))
        written.append(path)
    return written
