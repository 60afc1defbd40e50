"""Transfer learning from MobileNetV2: the standard edge recipe for a few hundred real photos.

Phase 1 trains a new head (global average pooling, dropout 0.2, softmax) on the frozen
ImageNet base. Phase 2 (``--fine-tune N``) unfreezes the top N layers of the base and trains
on at a tenth of the learning rate; batch normalisation stays frozen and in inference mode (as
in Keras' transfer-learning guide: its statistics come from ImageNet, not from a few batches).
With ``--weights none`` there is nothing to keep: the whole network trains from the start, and
its batch-norm statistics are measured on the data before training (instead of starting at
mean 0 / variance 1, which a short run never forgets: deep features then collapse to one value
at inference) and measured again on the final weights after it.

MobileNetV2 takes pixels scaled to [-1, 1]: recorded as normalisation mean 127.5, std 127.5,
so convert, infer and serve feed it exactly that. The base's weights come from ``--weights``:
``imagenet`` (the Keras cache first, then a download), ``none``, or a file.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mltool.errors import DataError
from mltool.train.fit import FitData, Phase, fit_phase

ALPHAS = (0.35, 0.5, 0.75, 1.0)
SIZES = (96, 224)  # accepted --image-size range
WEIGHT_SIZES = (96, 128, 160, 192, 224)  # sizes Keras publishes ImageNet weights for
BASE_LAYERS = 154  # layers in the base without its top (input layer included)
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
DEFAULT_ALPHA, DEFAULT_SIZE = 0.35, 96  # the usual edge choice (Edge Impulse's default too)


def weights_file(alpha: float, size: int) -> str:
    """Keras' name for the no-top ImageNet weights. Sizes without their own file use the 224
    weights, as Keras does (convolution weights do not depend on the input size)."""
    rows = size if size in WEIGHT_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def keras_models_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(weights: str, alpha: float, size: int, download: bool, log: Callable[[str], None]) -> tuple[Path | None, str]:
    """(file to load or None, what to record in mltool.json)."""
    if weights == "none":
        return None, "none"
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(f"weights file {path} does not exist",
                            "pass --weights imagenet, --weights none, or a Keras weights file for a MobileNetV2 base")
        return path, f"file {path}"
    name = weights_file(alpha, size)
    cached = keras_models_dir() / name
    if cached.is_file():
        return cached, f"imagenet ({cached})"
    if not download:
        _offline(name, alpha, size, "downloads disabled by --no-download")
    log(f"downloading {name} into {keras_models_dir()}")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        import keras

        # Keras draws its download progress on stdout, which belongs to --json output.
        with contextlib.redirect_stdout(sys.stderr):
            got = keras.utils.get_file(name, BASE_URL + name, cache_subdir="models", cache_dir=str(keras_models_dir().parent))
    except Exception as exc:  # DNS, refused, timeout, HTTP error
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        _offline(name, alpha, size, reason)
    finally:
        socket.setdefaulttimeout(old)
    return Path(got), f"imagenet ({got}, downloaded)"


def _offline(name: str, alpha: float, size: int, reason: str) -> None:
    raise DataError(f"ImageNet weights for MobileNetV2 alpha {alpha:g} at {size} px are not in the Keras cache "
                    f"and could not be downloaded ({reason})",
                    f"put {name} (from {BASE_URL}{name}) in {keras_models_dir()}, or pass --weights FILE or --weights none")


def build(alpha: float, size: int, num_classes: int, weights: Path | None) -> tuple[Any, Any]:
    """(model, base): the base with ``weights`` loaded, a new softmax head."""
    import keras
    from keras import layers

    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None)
    if weights is not None:
        try:
            # Keras skips parts of a .weights.h5 that do not match with only a warning, leaving
            # those layers random: any such warning is a refusal here.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                base.load_weights(weights)
            skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "retain" in str(w.message)]
            if skipped:
                raise ValueError(skipped[0])
        except Exception as exc:  # shape mismatch (other alpha), not HDF5, truncated
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise DataError(f"weights file {weights} does not fit a MobileNetV2 base with alpha {alpha:g} ({first})",
                            f"use the no-top weights for that alpha, e.g. {weights_file(alpha, size)}") from None
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.9  # the default 0.999 needs thousands of steps: short runs from scratch
    inputs = keras.Input((size, size, 3))
    # Pretrained: batch norm in inference mode for good, even once layers are unfrozen.
    x = base(inputs, training=False) if weights is not None else base(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"mobilenetv2_{alpha:g}_{size}"), base


def recalibrate_batchnorm(model: Any, x: Any, batch_size: int, max_batches: int = 16) -> None:
    """Set the moving mean/variance of every trainable batch-norm layer to their average over
    up to ``max_batches`` shuffled batches of ``x`` run through the network ("precise BN")."""
    import keras
    import numpy as np

    def walk(m: Any) -> Any:
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    bns = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momentum = [layer.momentum for layer in bns]
    order = np.random.default_rng(0).permutation(len(x))
    for k in range(min(max_batches, math.ceil(len(x) / batch_size))):
        for layer in bns:
            layer.momentum = k / (k + 1)  # a running average over the batches seen so far
        model(x[order[k * batch_size : (k + 1) * batch_size]], training=True)
    for layer, m in zip(bns, momentum):
        layer.momentum = m


def _trainable(model: Any) -> int:
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))


def train_mobilenetv2(cfg: Any, num_classes: int, data: FitData, *, progress: Any, callbacks: list[Any],
                      log: Callable[[str], None]) -> tuple[Any, list[Phase], dict[str, Any]]:
    """Build and train; returns (model, phases, the ``transfer`` record for mltool.json)."""
    from keras import layers

    path, described = resolve_weights(cfg.weights, cfg.alpha, cfg.image_size, cfg.download, log)
    model, base = build(cfg.alpha, cfg.image_size, num_classes, path)
    pretrained = path is not None
    common = dict(batch_size=cfg.batch_size, patience=cfg.patience, augment=cfg.augment, seed=cfg.seed,
                  progress=progress, callbacks=callbacks)
    if pretrained:
        base.trainable = False
    first = "head" if pretrained else "full"
    record: dict[str, Any] = {"base": "MobileNetV2", "alpha": cfg.alpha, "weights": described, "fine_tune_layers": cfg.fine_tune,
                              "phases": []}
    log(f"phase 1 ({first}): {_trainable(model):,} trainable parameters, weights {described}")
    if not pretrained:
        recalibrate_batchnorm(model, data.x_train, cfg.batch_size)
    phases = [fit_phase(model, data, epochs=cfg.epochs, learning_rate=cfg.learning_rate, phase=first, **common)]
    if not pretrained:
        recalibrate_batchnorm(model, data.x_train, cfg.batch_size)
    record["phases"].append({"name": first, "epochs_run": len(phases[0].history), "learning_rate": cfg.learning_rate,
                             "trainable_params": _trainable(model)})
    if cfg.fine_tune:
        base.trainable = True
        for layer in base.layers[: len(base.layers) - cfg.fine_tune]:
            layer.trainable = False
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
        lr = cfg.learning_rate / 10
        epochs = cfg.fine_tune_epochs or cfg.epochs
        log(f"phase 2 (fine-tune the top {cfg.fine_tune} layers): {_trainable(model):,} trainable parameters, learning rate {lr:g}")
        done = len(phases[0].history)
        phases.append(fit_phase(model, data, epochs=epochs, learning_rate=lr, phase="fine-tune", start_epoch=done, **common))
        record["phases"].append({"name": "fine-tune", "epochs_run": len(phases[1].history), "learning_rate": lr,
                                 "trainable_params": _trainable(model)})
    return model, phases, record
