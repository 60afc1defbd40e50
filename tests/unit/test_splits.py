from __future__ import annotations

import numpy as np

from mltool.data.base import fingerprint, stratified_split, stratified_subsample
from mltool.data.tasks import load_task, prepare_splits


def test_stratified_split_is_seeded_disjoint_and_balanced():
    y = np.repeat(np.arange(4), 50)
    keep, held = stratified_split(y, 0.2, seed=7)
    keep2, held2 = stratified_split(y, 0.2, seed=7)
    assert keep.tolist() == keep2.tolist() and held.tolist() == held2.tolist()
    assert set(keep).isdisjoint(held) and len(keep) + len(held) == 200
    assert np.bincount(y[held]).tolist() == [10, 10, 10, 10]
    assert stratified_split(y, 0.2, seed=8)[1].tolist() != held.tolist()


def test_subsample_keeps_balance():
    y = np.repeat(np.arange(10), 100)
    idx = stratified_subsample(y, 200, seed=0)
    assert len(idx) == 200 and np.bincount(y[idx]).tolist() == [20] * 10


def test_fingerprint_changes_with_content():
    a = np.zeros((3, 2), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    assert fingerprint(a, names=["x"]) == fingerprint(a.copy(), names=["x"])
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a, names=["x"]) != fingerprint(a, names=["y"])


def test_digits_splits_and_limit():
    ds = load_task("digits")
    assert ds.x_train.shape == (1797, 8, 8, 1) and ds.num_classes == 10
    s = prepare_splits(ds, val_split=0.1, test_split=0.2, seed=0, limit=None)
    assert sum(s.sizes().values()) == 1797
    assert 355 <= s.sizes()["test"] <= 365
    small = prepare_splits(ds, val_split=0.1, test_split=0.2, seed=0, limit=500)
    assert sum(small.sizes().values()) == 500
