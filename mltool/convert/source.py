"""What `mltool convert` accepts: a run directory, a .keras file, a SavedModel, or (opt-in) .h5."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltool.errors import ModelError
from mltool.train.rundir import RunInfo


@dataclass
class SourceModel:
    path: Path
    kind: str  # run | keras | savedmodel | h5
    model_file: Path  # the file (or SavedModel dir) that holds the weights
    run_info: RunInfo | None
    sha256: str
    keras_model: Any = None  # loaded lazily for keras/run/h5

    @property
    def name(self) -> str:
        return "model" if self.kind in ("run", "savedmodel") else self.model_file.stem

    def default_out_dir(self) -> Path:
        if self.kind == "run":
            return self.path if self.path.is_dir() else self.path.parent
        return self.model_file.parent


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def resolve(path: str | Path, allow_legacy: bool = False) -> SourceModel:
    """Identify the model at ``path`` (does not import TensorFlow)."""
    from mltool.train.rundir import is_run_dir, read_run

    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"{p} does not exist", "pass a run directory, a .keras file or a SavedModel directory")
    if p.is_dir() and is_run_dir(p) or (p.suffix == ".keras" and is_run_dir(p.parent)):
        run_dir, info = read_run(p)
        model_file = run_dir / info.files["model"]
        return SourceModel(run_dir, "run", model_file, info, _sha256(model_file))
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return SourceModel(p, "savedmodel", p, None, _sha256(p))
        raise ModelError(f"{p} is neither a run directory (no mltool.json) nor a SavedModel (no saved_model.pb)",
                         "pass a run directory from `mltool train`, a .keras file or a SavedModel directory")
    if p.suffix == ".keras":
        return SourceModel(p, "keras", p, None, _sha256(p))
    if p.suffix in (".h5", ".hdf5"):
        if not allow_legacy:
            raise ModelError(f"{p} is a legacy HDF5 model",
                             "re-save it as .keras (model.save('model.keras')), or pass --allow-legacy if you trust the file")
        return SourceModel(p, "h5", p, None, _sha256(p))
    if p.suffix == ".tflite":
        raise ModelError(f"{p} is already a TFLite model", "convert the Keras model or run directory it came from")
    raise ModelError(f"{p} is not a model mltool can convert (suffix '{p.suffix}')",
                     "pass a run directory, a .keras file or a SavedModel directory")


def load_keras(src: SourceModel) -> Any:
    """The Keras model for run/keras/h5 sources (safe mode), None for SavedModels."""
    if src.kind == "savedmodel":
        return None
    if src.keras_model is None:
        if src.kind == "h5":
            from mltool._tf import import_tensorflow

            import_tensorflow()
            import keras

            try:
                src.keras_model = keras.models.load_model(src.model_file, compile=False)
            except Exception as exc:
                raise ModelError(f"cannot load legacy model {src.model_file} ({str(exc)[:200]})",
                                 "re-save it as .keras with the Keras version that wrote it") from None
        else:
            from mltool._tf import load_keras_model

            src.keras_model = load_keras_model(src.model_file)
    return src.keras_model
