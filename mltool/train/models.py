"""The model zoo. Every model ends in a softmax so the converted .tflite outputs probabilities.

``mobilenetv2`` is built in :mod:`mltool.train.transfer` (pretrained weights, two phases).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mltool.errors import ConfigError, did_you_mean

ARCHS: dict[str, str] = {
    "cnn": "two conv blocks (32, 64) with batch norm, max pooling and dropout, Dense 128",
    "dense": "the tutorial baseline: Flatten, Dense 128 relu, Dense softmax",
    "fire-cnn": "fire-detection tutorial CNN: Conv2D 16/32/64 + average pooling + dropout, Dense 256, 128",
    "cnn1d": "1-D CNN for signals: four Conv1D blocks with pooling, global average pooling, Dense 64",
    "mobilenetv2": "MobileNetV2 transfer learning (ImageNet weights): frozen base + new head, then --fine-tune N layers",
}

# Which architectures suit which input kind.
_KINDS = {"cnn": {"image"}, "dense": {"image", "signal"}, "fire-cnn": {"image"}, "cnn1d": {"signal"},
          "mobilenetv2": {"image"}}

# What `train --help` and the README show: (default input, parameters). Counted from real builds
# (tests/cli/test_transfer.py checks them). All but mobilenetv2 take any input size; cnn and
# fire-cnn grow with it (a Flatten feeds a Dense layer). MobileNetV2's head adds 1,281 per class.
ARCH_TABLE: dict[str, tuple[str, str]] = {
    "cnn": ("28x28 gray", "421,930 at 28x28, 10 classes"),
    "dense": ("any", "101,770 at 28x28, 10 classes"),
    "fire-cnn": ("64x64 RGB", "1,105,570 at 64x64; 2,416,290 at 96x96 (2 classes)"),
    "cnn1d": ("3600x1", "30,194 (2 classes)"),
    "mobilenetv2": ("96..224 RGB", "410,208 / 706,224 / 1,382,064 / 2,257,984 at alpha .35/.5/.75/1"),
}
MOBILENETV2_TASKS = ("fire", "images")  # RGB photos; the digit and clothing sets are grayscale


def check_arch(arch: str, kind: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{arch}'", did_you_mean(arch, ARCHS))
    if kind not in _KINDS[arch]:
        fits = [a for a, kinds in _KINDS.items() if kind in kinds]
        raise ConfigError(f"architecture '{arch}' does not take {kind} input", f"use one of: {', '.join(fits)}")


def arch_normalization(arch: str) -> tuple[float, float] | None:
    """(mean, std) an architecture needs whatever the data: MobileNetV2 takes [-1, 1]."""
    return (127.5, 127.5) if arch == "mobilenetv2" else None


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, synchronized: bool = False) -> Any:
    """A compiled-ready (uncompiled) Keras model named after ``arch`` (not ``mobilenetv2``).
    ``synchronized``: batch norm statistics over all replicas (MirroredStrategy, replicas > 1)."""
    builder: Callable[..., Any] = {
        "cnn": _cnn, "dense": _dense, "fire-cnn": _fire_cnn, "cnn1d": _cnn1d,
    }[arch]
    return builder(tuple(input_shape), num_classes, synchronized)


def _cnn(shape: tuple[int, ...], n: int, sync: bool = False) -> Any:
    import keras
    from keras import layers

    # Small inputs (8x8 digits) get one pooling step fewer.
    pool_twice = min(shape[0], shape[1]) >= 16
    blocks: list[Any] = [
        keras.Input(shape),
        layers.Conv2D(32, 3, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9, synchronized=sync),
        layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9, synchronized=sync),
        layers.ReLU(),
    ]
    if pool_twice:
        blocks.append(layers.MaxPooling2D())
    blocks += [
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.4),
        layers.Dense(n, activation="softmax"),
    ]
    return keras.Sequential(blocks, name="cnn")


def _dense(shape: tuple[int, ...], n: int, sync: bool = False) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [keras.Input(shape), layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(n, activation="softmax")],
        name="dense",
    )


def _fire_cnn(shape: tuple[int, ...], n: int, sync: bool = False) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(16, 3, activation="relu", padding="same"),
            layers.AveragePooling2D(2),
            layers.Dropout(0.2),
            layers.Conv2D(32, 3, activation="relu", padding="same"),
            layers.AveragePooling2D(2),
            layers.Dropout(0.2),
            layers.Conv2D(64, 3, activation="relu", padding="same"),
            layers.AveragePooling2D(2),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(128, activation="relu"),
            layers.Dense(n, activation="softmax"),
        ],
        name="fire_cnn",
    )


def _cnn1d(shape: tuple[int, ...], n: int, sync: bool = False) -> Any:
    import keras
    from keras import layers

    blocks: list[Any] = [keras.Input(shape)]
    for filters, kernel in ((16, 7), (32, 5), (64, 5), (64, 3)):
        blocks += [
            layers.Conv1D(filters, kernel, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9, synchronized=sync),
            layers.ReLU(),
            layers.MaxPooling1D(4 if filters < 64 else 2),
        ]
    blocks += [
        layers.GlobalAveragePooling1D(),
        layers.Dropout(0.3),
        layers.Dense(64, activation="relu"),
        layers.Dense(n, activation="softmax"),
    ]
    return keras.Sequential(blocks, name="cnn1d")
