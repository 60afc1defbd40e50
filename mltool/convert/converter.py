"""``convert()``: Keras/SavedModel -> .tflite in one or all quantization modes, each evaluated
with the LiteRT runtime against the source model on held-out data.

    from mltool.convert import ConvertConfig, convert
    result = convert(ConvertConfig(model="runs/train/fashion-mnist-1", quantize="all", max_drop=1.0))

``convert()`` writes every file, then raises :class:`ConvertCheckError` (with the whole result)
if a mode cannot run on the runtime or loses more than ``max_drop`` accuracy points.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mltool import __version__
from mltool._io import atomic_write_bytes
from mltool.convert.naming import MODES, tflite_name
from mltool.convert.results import (
    ConvertResult,
    ModeResult,
    check_result,
    write_report,
)
from mltool.convert.source import SourceModel, load_keras, resolve
from mltool.errors import ConfigError, DataError, ModelError, did_you_mean
from mltool.metrics import classification_report
from mltool.runtime.metadata import InputSpec, ModelMetadata, Normalization

IO_TYPES = ("int8", "uint8", "float32")
CALIBRATED = ("int8", "int16x8")


@dataclass
class ConvertConfig:
    model: str | Path
    quantize: str = "none"
    io: str | None = None  # int8 mode: int8 (default) | uint8 | float32
    calib: Path | None = None
    calib_samples: int = 200
    out: Path | None = None
    max_drop: float | None = None
    allow_legacy: bool = False
    labels: Path | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    threads: int | None = None
    eval_limit: int | None = None
    seed: int = 0

    def modes(self) -> list[str]:
        if self.quantize == "all":
            return list(MODES)
        if self.quantize not in MODES:
            raise ConfigError(f"unknown quantization mode '{self.quantize}'", did_you_mean(self.quantize, (*MODES, "all")))
        return [self.quantize]

    def validate(self) -> None:
        self.modes()
        if self.io is not None and self.io not in IO_TYPES:
            raise ConfigError(f"unknown --io type '{self.io}'", did_you_mean(self.io, IO_TYPES))
        if self.io is not None and "int8" not in self.modes():
            raise ConfigError("--io applies to --quantize int8 only", "drop --io or add --quantize int8")
        if self.calib_samples < 1:
            raise ConfigError(f"--calib-samples {self.calib_samples} must be at least 1", "use 100-500")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("--mean and --std go together", "pass both, or neither to use the model's own")


@dataclass
class _Data:
    calib: np.ndarray | None  # normalised float32, model-shaped (N, ...)
    calib_desc: str | None
    x_eval: np.ndarray | None
    y_eval: np.ndarray | None
    eval_desc: str


def _subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_total)[: min(n, n_total)])


def _prepare_data(cfg: ConvertConfig, src: SourceModel, input_shape: tuple[int, ...], need_calib: bool) -> _Data:
    from mltool.data.base import stratified_subsample
    from mltool.data.samples import list_sample_files, load_sample
    from mltool.runtime.preprocess import normalization_from, normalize

    info = src.run_info
    calib = calib_desc = x_eval = y_eval = None
    eval_desc = "none"
    if info is not None:
        _ds, splits = info.splits()
        mean, std = normalization_from(info, cfg.mean, cfg.std)
        xt, yt = splits.x_test, splits.y_test
        if cfg.eval_limit is not None and cfg.eval_limit < len(yt):
            keep = stratified_subsample(yt, cfg.eval_limit, cfg.seed)
            xt, yt = xt[keep], yt[keep]
        x_eval, y_eval = normalize(xt, mean, std), yt
        eval_desc = f"held-out test split of {info.dataset.name} ({len(yt)} samples, {info.dataset.source})"
        if need_calib and cfg.calib is None:
            keep = stratified_subsample(splits.y_train, cfg.calib_samples, cfg.seed)
            calib = normalize(splits.x_train[keep], mean, std)
            calib_desc = f"{len(keep)} training samples of {info.dataset.name} (from mltool.json)"
    if cfg.calib is not None:
        mean, std = normalization_from(info, cfg.mean, cfg.std)
        files = list_sample_files(cfg.calib, input_shape)
        pick = _subsample(len(files), cfg.calib_samples, cfg.seed)
        raw = np.stack([load_sample(files[i], input_shape) for i in pick])
        calib = normalize(raw, mean, std)
        calib_desc = f"{len(pick)} files from {cfg.calib}"
        if x_eval is None:
            x_eval, eval_desc = calib, f"agreement only, on the {len(pick)} calibration files (no labels)"
    if need_calib and calib is None:
        raise DataError(
            f"{src.path} has no recorded training data to calibrate {', '.join(m for m in cfg.modes() if m in CALIBRATED)} quantization",
            "pass --calib DIR with 100+ representative images or signal files (and --mean/--std if the model has no mltool.json)",
        )
    return _Data(calib, calib_desc, x_eval, y_eval, eval_desc)


# --------------------------------------------------------------------------- conversion


def _converter(src: SourceModel) -> Any:
    import tensorflow as tf

    if src.kind == "savedmodel":
        return tf.lite.TFLiteConverter.from_saved_model(str(src.model_file))
    return tf.lite.TFLiteConverter.from_keras_model(load_keras(src))


def _convert_one(src: SourceModel, mode: str, io_type: str, calib: np.ndarray | None) -> bytes:
    import tensorflow as tf

    from mltool._silence import silenced

    conv = _converter(src)
    if mode != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode in CALIBRATED:
        assert calib is not None

        def representative() -> Any:
            for i in range(len(calib)):
                yield [calib[i : i + 1]]

        conv.representative_dataset = representative
    if mode == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_type]
        conv.inference_output_type = conv.inference_input_type
    if mode == "int16x8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    try:
        with silenced(stdout=True):  # the converter prints to fd 1/2; stdout is for --json
            return conv.convert()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"TFLite conversion ({mode}) of {src.path} failed: {first}",
                         "check that every layer has a TFLite builtin op; MLTOOL_DEBUG=1 shows the converter log") from None


def _metadata(src: SourceModel, cfg: ConvertConfig, mode: str, io_type: str, input_shape: tuple[int, ...],
              labels: list[str] | None) -> ModelMetadata:
    info = src.run_info
    # flags win over the run's normalisation, as they do for calibration and evaluation
    norm = Normalization(cfg.mean, cfg.std) if cfg.mean is not None and cfg.std is not None else (
        info.normalization if info else None)
    return ModelMetadata(
        task=info.task if info else None,
        kind=info.kind if info else "classification",
        labels=labels,
        input=info.input if info else InputSpec(shape=list(input_shape)),
        normalization=norm,
        output=info.output if info else {"type": "probabilities"},
        quantization={"mode": mode, "io": io_type if mode == "int8" else "float32"},
        source={"sha256": src.sha256, "kind": src.kind, "name": src.path.name},
        mltool_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset={"name": info.dataset.name, "fingerprint": info.dataset.fingerprint, "synthetic": info.dataset.synthetic} if info else None,
        keras_accuracy=info.metrics.get("accuracy") if info else None,
    )


def _labels(cfg: ConvertConfig, src: SourceModel) -> list[str] | None:
    if cfg.labels is not None:
        from mltool.runtime.labels import Labels

        labels = Labels.from_file(cfg.labels)
        if labels.ids != list(range(len(labels))):
            raise DataError(f"labels file {cfg.labels} skips class ids (it has {len(labels)} names for ids up to {labels.max_id})",
                            "give a classifier one name per output class, in order")
        return labels.names
    return list(src.run_info.classes) if src.run_info else None


def _latency_ms(model: Any, sample: np.ndarray, budget_s: float = 1.0, max_runs: int = 200) -> float:
    for _ in range(3):
        model.run(sample)
    times = []
    t_end = time.perf_counter() + budget_s
    interp = model.interpreter
    while len(times) < max_runs and (len(times) < 10 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def convert(cfg: ConvertConfig, log: Callable[[str], None] = lambda _m: None) -> ConvertResult:
    """Convert, embed metadata, write atomically, then evaluate every mode against the source."""
    from mltool._tf import import_tensorflow
    from mltool.convert.metadata_writer import embed_metadata
    from mltool.runtime.interpreter import load_model
    from mltool.runtime.tflite_schema import parse_model

    cfg.validate()
    modes = cfg.modes()
    io_type = cfg.io or "int8"
    src = resolve(cfg.model, cfg.allow_legacy)
    out_dir = Path(cfg.out) if cfg.out is not None else src.default_out_dir()
    from mltool._io import ensure_writable_dir

    ensure_writable_dir(out_dir, "--out")  # before minutes of conversion, not after
    labels = _labels(cfg, src)
    log(f"loading {src.kind} model {src.model_file}")
    import_tensorflow()
    keras_model = load_keras(src)

    # float32 is always converted: it is the size baseline and, for SavedModels, the reference.
    t0 = time.perf_counter()
    float_bytes = _convert_one(src, "none", io_type, None)
    float_seconds = time.perf_counter() - t0
    finfo = parse_model(float_bytes, "float32 conversion")
    input_shape = tuple(finfo.inputs[0].shape[1:])
    data = _prepare_data(cfg, src, input_shape, any(m in CALIBRATED for m in modes))
    if labels is not None and finfo.outputs and finfo.outputs[0].shape[-1] != len(labels):
        raise DataError(f"{len(labels)} labels for a model with {finfo.outputs[0].shape[-1]} outputs",
                        "pass a labels file with one line per output class")

    # Reference predictions: the Keras model, or the float32 TFLite model for SavedModels.
    ref_probs = None
    ref_name = "keras" if keras_model is not None else "float32 tflite"
    if data.x_eval is not None:
        log(f"evaluating the {ref_name} reference on {len(data.x_eval)} samples")
        if keras_model is not None:
            ref_probs = keras_model.predict(data.x_eval, batch_size=256, verbose=0)
        else:  # SavedModel: the float32 TFLite conversion is the reference
            ref_probs = _predict_bytes(float_bytes, data.x_eval)
    ref_size = sum(p.stat().st_size for p in ([src.model_file] if src.model_file.is_file() else src.model_file.rglob("*")) if p.is_file())

    # Sizes compare files as written (metadata included) with the float32 file as written.
    float_size = len(embed_metadata(float_bytes, _metadata(src, cfg, "none", io_type, input_shape, labels)))
    results: list[ModeResult] = []
    runtime = ""
    for mode in modes:
        log(f"converting: {mode}")
        t0 = time.perf_counter()
        raw = float_bytes if mode == "none" else _convert_one(src, mode, io_type, data.calib)
        seconds = float_seconds if mode == "none" else time.perf_counter() - t0
        payload = embed_metadata(raw, _metadata(src, cfg, mode, io_type, input_shape, labels))
        path = out_dir / tflite_name(src.name, mode)
        atomic_write_bytes(path, payload)
        try:
            model = load_model(path, threads=cfg.threads)
        except ModelError as exc:  # e.g. LiteRT refusing an int16x8 depthwise conv
            log(f"{mode}: converted, but the runtime cannot run it")
            fi = parse_model(payload, str(path))
            results.append(ModeResult(
                mode=mode, path=str(path), size_bytes=len(payload), size_vs_float32=round(len(payload) / float_size, 4),
                input_dtype=fi.inputs[0].dtype, output_dtype=fi.outputs[0].dtype, accuracy=None, drop_points=None,
                agreement=None, latency_ms=None, convert_seconds=round(seconds, 2), error=exc.message,
            ))
            continue
        runtime = f"{model.runtime} {model.runtime_version}"
        acc = agree = None
        if data.x_eval is not None:
            probs = model.predict(data.x_eval)
            assert ref_probs is not None
            agree = round(float(np.mean(probs.argmax(1) == ref_probs.argmax(1))), 6)
            if data.y_eval is not None:
                acc = classification_report(data.y_eval, probs.argmax(1), labels or [str(i) for i in range(probs.shape[1])])["accuracy"]
        latency = _latency_ms(model, (data.x_eval[:1] if data.x_eval is not None else np.zeros((1, *input_shape), np.float32)))
        ins, outs = model.inputs[0], model.outputs[0]
        results.append(ModeResult(
            mode=mode, path=str(path), size_bytes=len(payload),
            size_vs_float32=round(len(payload) / float_size, 4),
            input_dtype=str(ins.dtype), output_dtype=str(outs.dtype),
            accuracy=acc, drop_points=None, agreement=agree,
            latency_ms={"median": round(latency, 4)}, convert_seconds=round(seconds, 2),
        ))

    ref_acc = None
    if data.y_eval is not None and ref_probs is not None and keras_model is not None:
        ref_acc = classification_report(data.y_eval, ref_probs.argmax(1), labels or [str(i) for i in range(ref_probs.shape[1])])["accuracy"]
    for r in results:
        if r.accuracy is not None and ref_acc is not None:
            r.drop_points = round(100 * (ref_acc - r.accuracy), 3)
    result = ConvertResult(
        source=str(src.path), source_kind=src.kind, source_sha256=src.sha256, out_dir=str(out_dir),
        eval_samples=0 if data.x_eval is None else len(data.x_eval), eval_data=data.eval_desc,
        calibration=data.calib_desc, threads=cfg.threads, runtime=runtime,
        reference={"name": ref_name, "accuracy": ref_acc, "size_bytes": ref_size, "path": str(src.model_file)},
        modes=results,
    )
    write_report(out_dir / "convert.json", result, log)
    check_result(result, cfg.max_drop)
    return result


def _predict_bytes(tflite: bytes, x: np.ndarray) -> np.ndarray:
    import tempfile

    from mltool.runtime.interpreter import load_model

    with tempfile.NamedTemporaryFile(suffix=".tflite") as fh:
        fh.write(tflite)
        fh.flush()
        return load_model(fh.name).predict(x)
