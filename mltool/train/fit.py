"""One training phase: compile, fit with early stopping and progress, history with seconds per
epoch. Transfer learning runs two of them (:mod:`mltool.train.transfer`).

``--augment`` (random horizontal flip, rotation up to 10 degrees, zoom up to 10%, brightness up
to 20%) is applied to the training batches in the input pipeline, never as layers of the model:
the saved and converted model contains no augmentation and gives the same answer twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

AUGMENTATIONS = ["horizontal flip", "rotation +/-10 deg", "zoom +/-10%", "brightness +/-20%"]


@dataclass
class FitData:
    x_train: np.ndarray  # normalised
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    value_range: tuple[float, float] = (0.0, 1.0)  # what pixels 0 and 255 became (for brightness)


@dataclass
class Phase:
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int = 0  # counted over the whole run


def fit_phase(model: Any, data: FitData, *, epochs: int, batch_size: int, learning_rate: float, patience: int,
              augment: bool = False, seed: int = 0, progress: Callable[[int, int], Any] | None = None,
              callbacks: list[Any] | None = None, start_epoch: int = 0, phase: str | None = None) -> Phase:
    """Compile ``model`` (Adam, cosine decay from ``learning_rate``) and fit it for up to
    ``epochs``; early stopping on val_loss restores the best weights."""
    import keras

    steps = int(np.ceil(len(data.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps * epochs, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,  # XLA is ~5x slower for these small CNNs on CPU (measured)
    )
    epoch_times: list[float] = []

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.monotonic() - self._t)

    cbs: list[Any] = [_Timer()]
    has_val = len(data.x_val) > 0
    if patience > 0 and has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0))
    if progress is not None:
        cbs.append(progress(epochs, steps))
    cbs += callbacks or []
    validation = (data.x_val, data.y_val) if has_val else None
    if augment:
        fit = model.fit(augmented(data, batch_size, seed), validation_data=validation, epochs=epochs, callbacks=cbs,
                        shuffle=False, verbose=0)  # the dataset shuffles itself
    else:
        fit = model.fit(data.x_train, data.y_train, validation_data=validation, epochs=epochs, batch_size=batch_size,
                        shuffle=True, callbacks=cbs, verbose=0)
    hist = fit.history
    out = Phase()
    for i in range(len(hist.get("loss", []))):
        row: dict[str, Any] = {"epoch": start_epoch + i + 1}
        if phase is not None:
            row["phase"] = phase
        out.history.append({**row, **{k: float(v[i]) for k, v in hist.items()}, "seconds": round(epoch_times[i], 3)})
    out.best_epoch = start_epoch + len(out.history)
    out.stopped_early = len(out.history) < epochs
    if out.stopped_early and "val_loss" in hist:
        out.best_epoch = start_epoch + int(np.argmin(hist["val_loss"])) + 1
    return out


def augmenter(value_range: tuple[float, float], seed: int) -> Any:
    """The augmentation layers (a separate model, applied to batches only)."""
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
        layers.RandomBrightness(0.2, value_range=value_range, seed=seed + 3),
    ], name="augmentation")


def augmented(data: FitData, batch_size: int, seed: int) -> Any:
    """Shuffled training batches, augmented afresh every epoch."""
    import tensorflow as tf

    aug = augmenter(data.value_range, seed)
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
