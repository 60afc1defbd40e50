"""IDX reading on the real Fashion-MNIST files and on deliberately broken ones."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from mltool.data.idx import read_idx
from mltool.data.tasks import load_task
from mltool.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_real_fashion_mnist_files(fashion_dir):
    x = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz", expect_ndim=3)
    y = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz", expect_ndim=1)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10
    assert 0 < x.mean() < 255


def test_loader_uses_debian_location_and_official_test_split(fashion_dir, monkeypatch):
    ds = load_task("fashion-mnist")
    assert ds.source == str(fashion_dir)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.official_test_split
    assert ds.fingerprint == load_task("fashion-mnist", fashion_dir).fingerprint


def test_roundtrip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    with gzip.open(tmp_path / "a.gz", "wb") as fh:
        fh.write(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_wrong_magic_names_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 100)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is not an IDX file \(bad magic number 1f8b0800\)"):
        read_idx(bad)


def test_truncated_names_file_and_sizes(tmp_path):
    arr = np.zeros((10, 28, 28), np.uint8)
    with gzip.open(tmp_path / "x.gz", "wb") as fh:
        fh.write(_idx_bytes(arr)[:-100])
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "x.gz")
    assert "x.gz is truncated: 7740 data bytes, header promises 7840" in str(err.value)


def test_truncated_gzip_stream(fashion_dir, tmp_path):
    src = (fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    cut = tmp_path / "t10k-labels-idx1-ubyte.gz"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataError, match="is not a readable gzip file"):
        read_idx(cut)


def test_wrong_dimensions(tmp_path):
    (tmp_path / "labels").write_bytes(_idx_bytes(np.zeros((5,), np.uint8)))
    with pytest.raises(DataError, match="has 1 dimensions, expected 3"):
        read_idx(tmp_path / "labels", expect_ndim=3)


def test_data_dir_missing_one_file(fashion_dir, tmp_path):
    for f in fashion_dir.iterdir():
        if "t10k-labels" not in f.name:
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DataError) as err:
        load_task("fashion-mnist", tmp_path)
    assert f"{tmp_path} has no t10k-labels-idx1-ubyte.gz" in str(err.value)


def test_mismatched_counts(tmp_path):
    imgs = np.zeros((12, 4, 4), np.uint8)
    for stem, arr in (
        ("train-images-idx3-ubyte", imgs), ("train-labels-idx1-ubyte", np.zeros(11, np.uint8)),
        ("t10k-images-idx3-ubyte", imgs), ("t10k-labels-idx1-ubyte", np.zeros(12, np.uint8)),
    ):
        (tmp_path / stem).write_bytes(_idx_bytes(arr))
    with pytest.raises(DataError, match="train split .* has 12 images but 11 labels"):
        load_task("mnist", tmp_path)


def test_mnist_offline_error_says_where_to_put_files(monkeypatch, tmp_path):
    import mltool.data.tasks as tasks

    monkeypatch.setattr(tasks, "SYSTEM_DATASETS", tmp_path / "system")
    with pytest.raises(DataError) as err:
        load_task("mnist", download=False)
    msg = err.value.one_line()
    assert "mnist is not available locally and could not be downloaded" in msg
    assert "train-images-idx3-ubyte.gz" in msg and str(Path(tasks.keras_cache_dir()) / "mnist") in msg


def test_mnist_from_keras_cache_npz(monkeypatch, tmp_path):
    import mltool.data.tasks as tasks

    monkeypatch.setattr(tasks, "SYSTEM_DATASETS", tmp_path / "system")
    cache = tasks.keras_cache_dir()
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(cache / "mnist.npz", x_train=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10))
    ds = load_task("mnist")
    assert ds.source == str(cache / "mnist.npz")
    assert ds.x_train.shape == (20, 28, 28, 1)
