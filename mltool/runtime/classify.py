"""Classification outputs: probabilities, top-k, and which class an alert watches."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mltool.errors import ConfigError, DataError
from mltool.runtime.labels import Labels


class Classification(NamedTuple):
    label: str
    score: float
    index: int


def probabilities(output: np.ndarray) -> np.ndarray:
    """The first output as class probabilities: as they are when they already are some, else a
    softmax; a single output is one class's probability (a sigmoid unless already in [0, 1])."""
    v = output.reshape(-1).astype(np.float32)
    if not np.all(np.isfinite(v)):
        raise DataError("the model produced NaN or infinite scores", "check the input and the model (mltool inspect)")
    if v.size == 1:
        return v if 0 <= v[0] <= 1 else (1 / (1 + np.exp(-v))).astype(np.float32)
    if v.min() >= 0 and v.max() <= 1.0001 and abs(float(v.sum()) - 1) < 0.05:
        return v
    e = np.exp(v - v.max())
    return e / e.sum()


def is_scores(shape: tuple[int, ...]) -> bool:
    """Whether an output of ``shape`` can be class scores: [N], [1, N], [1, 1, N]..."""
    return len(shape) >= 1 and all(d == 1 for d in shape[:-1]) and shape[-1] >= 1


def top_k(probs: np.ndarray, labels: Labels, k: int) -> list[Classification]:
    k = max(1, min(k, len(probs)))
    idx = np.argsort(-probs, kind="stable")[:k]
    return [Classification(labels.name(int(i)), round(float(probs[i]), 6), int(i)) for i in idx]


def alert_index(labels: Labels, alert_class: str | None, classes: int | None = None) -> int:
    """Which class an --alert-threshold watches: --alert-class (a label, or an index below
    ``classes``), else the first class that is not a "no..."/"normal" class (fire in
    fire/no_fire, arrhythmia in arrhythmia/normal)."""
    if alert_class is not None:
        found = labels.index(alert_class)
        if found is not None:
            return found
        if alert_class.isdigit() and (classes is None or int(alert_class) < classes):
            return int(alert_class)
        if alert_class.isdigit():
            raise ConfigError(f"--alert-class {alert_class} is out of range: the model has {classes} classes",
                              f"use 0..{(classes or 1) - 1} or a label name")
        raise ConfigError(f"--alert-class '{alert_class}' is not one of the model's labels",
                          f"choose from: {', '.join(labels.names) or 'class indexes'}")
    for i in labels.ids:
        low = labels.name(i).lower()
        if not (low.startswith(("no_", "no-", "no ", "non", "not")) or low in ("normal", "background", "negative", "none")):
            return i
    return labels.ids[0] if labels else 0
