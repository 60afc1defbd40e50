"""The in-memory dataset every task produces, and the seeded splits used by training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """A classification dataset held in memory.

    ``x_*`` keep the raw sample values (uint8 pixels, sensor readings); models see
    ``(x - mean) / std`` with the normalisation recorded in ``mltool.json``.
    """

    name: str
    kind: str  # "image" or "signal"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str
    fingerprint: str
    synthetic: bool = False
    official_test_split: bool = False
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def fingerprint(*arrays: np.ndarray, names: list[str] | None = None) -> str:
    """Content hash of the samples, labels and class names (independent of where files live)."""
    h = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.dtype.str).encode())
        h.update(str(arr.shape).encode())
        h.update(memoryview(arr).cast("B"))
    for name in names or []:
        h.update(name.encode() + b"\0")
    return "sha256:" + h.hexdigest()


def stratified_split(
    y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of every class held out, seeded and reproducible.

    Classes with at least two samples always contribute at least one sample to each side.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(len(idx) * fraction))
        if fraction > 0 and len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    keep_idx = np.concatenate(keep)
    held_idx = np.concatenate(held)
    # Interleave classes so that mini-batches are mixed even before Keras shuffles.
    return keep_idx[rng.permutation(len(keep_idx))], held_idx[rng.permutation(len(held_idx))]


def stratified_subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of exactly ``n`` samples with the class balance of ``y`` (all if ``n >= len(y)``).

    Per-class quotas use largest remainders so they add up to ``n`` exactly.
    """
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n / len(y))
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]:
        quota[i] += 1
    picked = [
        rng.permutation(np.flatnonzero(y == cls))[:q] for cls, q in zip(classes, quota)
    ]
    return np.sort(np.concatenate(picked))
