"""``train()``: dataset -> Keras model -> run directory with model, metrics and plots.

Usable from Python exactly as the CLI uses it::

    from mltool.train.run import TrainConfig, train
    result = train(TrainConfig(task="digits", epochs=5))
    print(result.run_dir, result.metrics["accuracy"])
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mltool import __version__
from mltool._tf import import_tensorflow, load_keras_model
from mltool.data.base import Dataset
from mltool.data.tasks import Splits, get_task, load_task, prepare_splits
from mltool.errors import ConfigError
from mltool.metrics import classification_report
from mltool.runtime.metadata import InputSpec, Normalization
from mltool.runtime.preprocess import normalize
from mltool.train import rundir
from mltool.train.fit import AUGMENTATIONS, FitData, fit_phase
from mltool.train.rundir import DatasetRecord, RunInfo, read_run

# Per-task defaults: (epochs, batch size). Early stopping usually ends runs sooner.
TASK_DEFAULTS: dict[str, tuple[int, int]] = {
    "mnist": (15, 128),
    "fashion-mnist": (15, 128),
    "digits": (40, 32),
    "fire": (25, 32),
    "ecg": (30, 32),
    "images": (25, 32),
}


@dataclass
class TrainConfig:
    task: str
    data: str | None = None
    arch: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    val_split: float = 0.1
    test_split: float = 0.2
    limit: int | None = None
    patience: int = 4
    learning_rate: float = 1e-3
    image_size: int | None = None
    window: int | None = None
    rate_hz: int = 360
    out: Path | None = None
    project: Path = field(default_factory=lambda: Path("runs/train"))
    download: bool = True  # Keras downloads: MNIST data, ImageNet weights
    augment: bool = False  # image tasks: random flip/rotation/zoom/brightness on training batches
    alpha: float | None = None  # mobilenetv2 width (default 0.35)
    weights: str | None = None  # mobilenetv2: imagenet (default) | none | a weights file
    fine_tune: int = 0  # mobilenetv2: then unfreeze this many top layers of the base
    fine_tune_epochs: int | None = None  # default: --epochs
    devices: str = "auto"  # auto | cpu | N (MirroredStrategy over N replicas): mltool.train.devices

    def as_job(self) -> dict[str, Any]:
        """The options as JSON for a run elsewhere (``train --on``): where it writes is decided there."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "project")}

    def resolved(self) -> TrainConfig:
        """Validate and fill task defaults. Raises ConfigError with a fix hint."""
        from mltool.train.models import check_arch

        info = get_task(self.task)
        epochs, batch = TASK_DEFAULTS[self.task]
        cfg = TrainConfig(**{**asdict(self)})
        cfg.arch = self.arch or info.default_arch
        cfg.epochs = self.epochs if self.epochs is not None else epochs
        cfg.batch_size = self.batch_size or batch
        if cfg.window is None:
            cfg.window = self.rate_hz * 10
        check_arch(cfg.arch, info.kind)
        from mltool.train.devices import check_batch, parse_devices

        cfg.devices = parse_devices(cfg.devices)
        if cfg.arch == "mobilenetv2":
            _resolve_transfer(cfg)
        else:
            for flag, value in (("--alpha", cfg.alpha), ("--weights", cfg.weights), ("--fine-tune", cfg.fine_tune or None)):
                if value is not None:
                    raise ConfigError(f"{flag} applies to --arch mobilenetv2", f"drop {flag}, or add --arch mobilenetv2")
        if cfg.augment and info.kind != "image":
            raise ConfigError("--augment is for image tasks", "drop --augment")
        if cfg.epochs < 1:
            raise ConfigError(f"--epochs {cfg.epochs} must be at least 1", "pass --epochs 1 or more")
        if cfg.batch_size < 1:
            raise ConfigError(f"--batch-size {cfg.batch_size} must be at least 1", "pass --batch-size 32, for example")
        if not 0.0 < cfg.val_split < 0.9:
            raise ConfigError(f"--val-split {cfg.val_split} is out of range", "use a fraction such as 0.1")
        if not 0.0 < cfg.test_split < 0.9:
            raise ConfigError(f"--test-split {cfg.test_split} is out of range", "use a fraction such as 0.2")
        check_batch(cfg.devices, cfg.batch_size)
        if cfg.limit is not None and cfg.limit < 10:
            raise ConfigError(f"--max-samples {cfg.limit} is too small", "use at least 10 samples")
        if cfg.image_size is not None and not 8 <= cfg.image_size <= 1024:
            raise ConfigError(f"--image-size {cfg.image_size} is out of range", "use 8 to 1024 pixels")
        if self.image_size is not None and not (info.kind == "image" and info.folder):
            raise ConfigError(f"--image-size does not apply to the {self.task} task ({info.description})",
                              "drop --image-size: it resizes image folders (fire, images)")
        if cfg.out is not None:
            rundir.check_out_dir(Path(cfg.out))
        from mltool._io import ensure_writable_dir

        # before minutes of loading and training: a read-only folder is one line now
        ensure_writable_dir(Path(cfg.out).parent if cfg.out is not None else Path(cfg.project),
                            "--out" if cfg.out is not None else "--project")
        return cfg


def _resolve_transfer(cfg: TrainConfig) -> None:
    from mltool.train.models import MOBILENETV2_TASKS
    from mltool.train.transfer import ALPHAS, BASE_LAYERS, DEFAULT_ALPHA, DEFAULT_SIZE, SIZES

    if cfg.task not in MOBILENETV2_TASKS:
        raise ConfigError(f"--arch mobilenetv2 takes RGB photos; the {cfg.task} task is grayscale",
                          f"use it with {' or '.join(MOBILENETV2_TASKS)}, or another --arch")
    cfg.alpha = DEFAULT_ALPHA if cfg.alpha is None else cfg.alpha
    if cfg.alpha not in ALPHAS:
        raise ConfigError(f"--alpha {cfg.alpha:g} is not a MobileNetV2 width with ImageNet weights",
                          f"use one of {', '.join(f'{a:g}' for a in ALPHAS)}")
    cfg.image_size = DEFAULT_SIZE if cfg.image_size is None else cfg.image_size
    if not SIZES[0] <= cfg.image_size <= SIZES[1]:
        raise ConfigError(f"--image-size {cfg.image_size} is outside MobileNetV2's {SIZES[0]}..{SIZES[1]} px",
                          "use 96 (fast), 128, 160, 192 or 224 (ImageNet weights exist for these)")
    cfg.weights = cfg.weights or "imagenet"
    if cfg.fine_tune < 0 or cfg.fine_tune > BASE_LAYERS - 1:
        raise ConfigError(f"--fine-tune {cfg.fine_tune} is out of range", f"use 0 to {BASE_LAYERS - 1} (the base has {BASE_LAYERS - 1} layers); 30-60 is typical")
    if cfg.fine_tune and cfg.weights == "none":
        raise ConfigError("--fine-tune needs pretrained weights; with --weights none the whole network trains from the start",
                          "drop --fine-tune, or use --weights imagenet or FILE")
    if cfg.fine_tune_epochs is not None and (cfg.fine_tune_epochs < 1 or not cfg.fine_tune):
        raise ConfigError(f"--fine-tune-epochs {cfg.fine_tune_epochs} needs --fine-tune N and at least 1 epoch",
                          "add --fine-tune N, or drop --fine-tune-epochs")


@dataclass
class TrainResult:
    run_dir: Path
    info: RunInfo  # what mltool.json holds
    timings: dict[str, float] = field(default_factory=dict)  # train --on: seconds per step (connect, setup, ...)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.info.metrics

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "task": self.info.task,
            "arch": self.info.arch,
            "classes": self.info.classes,
            "dataset": asdict(self.info.dataset),
            "training": self.info.training,
            "metrics": {k: v for k, v in self.metrics.items() if k != "per_class"},
            "per_class": self.metrics.get("per_class", {}),
            "ran_on": self.info.ran_on,
        }

    def as_dict(self) -> dict[str, Any]:
        return self.summary()


def normalization_for(ds: Dataset, x_train: np.ndarray, arch: str | None = None) -> tuple[float, float]:
    """(mean, std) so that the model sees (x - mean) / std."""
    from mltool.train.models import arch_normalization

    fixed = arch_normalization(arch) if arch else None
    if fixed is not None:
        return fixed
    if ds.kind == "image":
        return 0.0, float(ds.input.get("range", [0, 255])[1])
    std = float(x_train.std()) or 1.0
    return float(x_train.mean()), std


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "mltool": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
    }


def _seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


ProgressFactory = Callable[[int, int], Any]  # (epochs, steps per epoch) -> keras callback

# A run's phases, in order: load, import, fit, epoch (after the first epoch), evaluate, save,
# plot, finish (the rename into place). MLTOOL_TEST_PAUSE_AT=PHASE holds the run at that phase
# for up to a minute, after saying so on stderr, so that tests can signal it at a known point
# instead of after a guessed sleep.
PAUSE_ENV = "MLTOOL_TEST_PAUSE_AT"


def phase(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"paused at {name}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.02)


def _PauseAfterFirstEpoch() -> Any:
    import keras

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 0:
                phase("epoch")

    return Pause()


def train(
    config: TrainConfig,
    *,
    progress: ProgressFactory | None = None,
    callbacks: list[Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> TrainResult:
    """Train, evaluate on the held-out split, and write a complete run directory atomically."""
    cfg = config.resolved()
    started = time.monotonic()
    phase("load")
    log(f"loading {cfg.task} data")
    ds = load_task(cfg.task, cfg.data, image_size=cfg.image_size, window=cfg.window, download=cfg.download)
    splits = prepare_splits(ds, val_split=cfg.val_split, test_split=cfg.test_split, seed=cfg.seed, limit=cfg.limit)
    sizes = splits.sizes()
    log(f"{ds.name}: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test samples from {ds.source}")

    parent = Path(cfg.project)
    tmp = rundir.start(parent if cfg.out is None else Path(cfg.out).parent, cfg.task)
    try:
        info = _fit_and_write(cfg, ds, splits, tmp, progress, callbacks or [], log, started)
        phase("finish")
        final = rundir.finish(tmp, parent, cfg.task, Path(cfg.out) if cfg.out else None)
    except BaseException:
        rundir.abandon(tmp)
        raise
    return TrainResult(final, info)


def _fit_and_write(
    cfg: TrainConfig, ds: Dataset, splits: Splits, tmp: Path,
    progress: ProgressFactory | None, extra_callbacks: list[Any], log: Callable[[str], None], started: float,
) -> RunInfo:
    phase("import")
    import_tensorflow()
    import keras

    from mltool.train import devices
    from mltool.train.models import build_model

    placement = devices.configure(cfg.devices, cfg.batch_size)  # before any tensor exists
    if placement.replicas > 1:
        log(f"training on {placement.replicas} replicas ({', '.join(placement.devices)}"
            f"{', logical devices' if placement.logical else ''}): MirroredStrategy, global batch {cfg.batch_size}, "
            f"{placement.per_replica_batch} per replica")
    from mltool.train.report import plot_confusion, plot_curves, plot_mistakes, write_history_csv

    phase("fit")
    if os.environ.get(PAUSE_ENV) == "epoch":
        extra_callbacks = [*extra_callbacks, _PauseAfterFirstEpoch()]
    _seed_everything(cfg.seed)
    mean, std = normalization_for(ds, splits.x_train, cfg.arch)
    x_train, x_val, x_test = (normalize(a, mean, std) for a in (splits.x_train, splits.x_val, splits.x_test))
    data = FitData(x_train, splits.y_train, x_val, splits.y_val, value_range=((0 - mean) / std, (255 - mean) / std))
    transfer = None
    if cfg.arch == "mobilenetv2":
        from mltool.train.transfer import train_mobilenetv2

        with placement.scope():  # the model is built and compiled in the strategy's scope
            model, phases, transfer = train_mobilenetv2(cfg, ds.num_classes, data, progress=progress,
                                                        callbacks=extra_callbacks, log=log)
    else:
        with placement.scope():
            # synchronised batch norm: with several replicas each sees only its slice of the batch
            model = build_model(cfg.arch, ds.input_shape, ds.num_classes, synchronized=placement.replicas > 1)
            phases = [fit_phase(model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,  # type: ignore[arg-type]
                                patience=cfg.patience, augment=cfg.augment, seed=cfg.seed, progress=progress,
                                callbacks=extra_callbacks)]
    history = [row for p in phases for row in p.history]
    best_epoch = phases[-1].best_epoch
    stopped_early = any(p.stopped_early for p in phases)

    phase("evaluate")
    log("evaluating on the held-out test split")
    probs = model.predict(x_test, batch_size=256, verbose=0)
    report = classification_report(splits.y_test, probs.argmax(axis=1), ds.class_names)
    test_loss = float(keras.losses.sparse_categorical_crossentropy(splits.y_test, probs).numpy().mean())
    report["loss"] = round(test_loss, 6)
    missing = [name for name, pc in report["per_class"].items() if pc["support"] == 0]
    if missing:
        log(f"warning: no test samples of {', '.join(missing)}: the test accuracy says nothing about "
            f"{'them' if len(missing) > 1 else 'it'} (use more data or a larger --test-split)")

    phase("save")
    model.save(tmp / "model.keras")
    (tmp / "labels.txt").write_text("\n".join(ds.class_names) + "\n")
    write_history_csv(history, tmp / "history.csv")
    phase("plot")
    synthetic = "SYNTHETIC data: " if ds.synthetic else ""
    plot_curves(history, tmp / "curves.png", f"{synthetic}{cfg.task} / {cfg.arch}", best_epoch=best_epoch)
    plot_confusion(np.asarray(report["confusion_matrix"]), ds.class_names, tmp / "confusion_matrix.png",
                   f"{synthetic}{cfg.task}: test accuracy {100 * report['accuracy']:.2f}%")
    plot_mistakes(splits.x_test, splits.y_test, probs, ds.class_names, tmp / "mistakes.png", f"{synthetic}{cfg.task}")
    (tmp / "evaluation.json").write_text(json.dumps({"split": "test", **report}, indent=2) + "\n")

    input_info = InputSpec(
        shape=list(ds.input_shape), layout="NHWC" if ds.kind == "image" else "NWC", dtype="float32",
        raw_dtype=ds.input.get("dtype", "float32"), color=ds.input.get("color"), range=ds.input.get("range"),
        resize=ds.input.get("resize"), resize_method=ds.input.get("resize_method"),
        rate_hz=cfg.rate_hz if ds.kind == "signal" else None, window=cfg.window if ds.kind == "signal" else None,
    )
    metrics = {
        "accuracy": report["accuracy"], "loss": report["loss"],
        "macro_precision": report["macro_precision"], "macro_recall": report["macro_recall"],
        "macro_f1": report["macro_f1"], "test_samples": report["samples"],
        "val_accuracy": round(float(history[best_epoch - 1]["val_accuracy"]), 6) if "val_accuracy" in history[-1] else None,
        "per_class": {k: {"precision": v["precision"], "recall": v["recall"]} for k, v in report["per_class"].items()},
        "classes_missing_from_test": missing,
    }
    info = RunInfo(
        task=cfg.task,
        kind=f"{ds.kind}-classification",
        arch=cfg.arch,  # type: ignore[arg-type]
        params=int(model.count_params()),
        input=input_info,
        normalization=Normalization([mean], [std]),
        output={"type": "probabilities", "shape": [ds.num_classes]},
        classes=ds.class_names,
        dataset=DatasetRecord(
            name=ds.name, source=ds.source, fingerprint=ds.fingerprint, synthetic=ds.synthetic,
            official_test_split=ds.official_test_split, samples=splits.sizes(),
            limit=cfg.limit, val_split=cfg.val_split, test_split=cfg.test_split,
            image_size=cfg.image_size, window=cfg.window if ds.kind == "signal" else None,
        ),
        seed=cfg.seed,
        training={
            "epochs_requested": cfg.epochs, "epochs_run": len(history), "best_epoch": best_epoch,
            "stopped_early": stopped_early, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
            "patience": cfg.patience, "duration_s": round(time.monotonic() - started, 2),
            "augment": AUGMENTATIONS if cfg.augment else None,
            "distribution": placement.record(),
            **({"transfer": transfer} if transfer is not None else {}),
        },
        metrics=metrics,
        files={"model": "model.keras", "labels": "labels.txt", "history": "history.csv",
               "curves": "curves.png", "confusion_matrix": "confusion_matrix.png", "mistakes": "mistakes.png",
               "evaluation": "evaluation.json"},
        versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ran_on={"host": platform.node()},  # `train --on` adds how it got there
    )
    # Written last: a directory with mltool.json in it is a complete run.
    info.write(tmp)
    return info


# --------------------------------------------------------------------------- evaluation


def evaluate_run(path: str | Path, data: str | Path | None = None) -> dict[str, Any]:
    """Reload a run's saved model and re-measure it on its held-out test split."""
    run_dir, info = read_run(path)
    ds, splits = info.splits(data)
    model = load_keras_model(run_dir / info.files["model"])
    x = normalize(splits.x_test, info.normalization.mean[0], info.normalization.std[0])
    t0 = time.monotonic()
    probs = model.predict(x, batch_size=256, verbose=0)
    seconds = time.monotonic() - t0
    report = classification_report(splits.y_test, probs.argmax(axis=1), ds.class_names)
    return {
        "run_dir": str(run_dir), "task": info.task, "arch": info.arch, "split": "test",
        "recorded_accuracy": info.metrics["accuracy"], "seconds": round(seconds, 3), **report,
    }
