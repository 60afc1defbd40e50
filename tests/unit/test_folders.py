"""Image and signal folders: the layout, and clear errors for what is wrong with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mltool.data.images import load_image_folder
from mltool.data.signals import load_signal_folder, read_signal
from mltool.data.tasks import load_task
from mltool.errors import DataError


def _img(path, color=(255, 0, 0), size=(20, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_mixed_formats_resized(tmp_path):
    _img(tmp_path / "cats" / "a.png")
    _img(tmp_path / "cats" / "b.jpg", (0, 255, 0))
    _img(tmp_path / "dogs" / "c.bmp", (0, 0, 255))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image, ignored")
    x, y, names = load_image_folder(tmp_path, 16)
    assert names == ["cats", "dogs"]
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 1]
    assert x[2, 8, 8].tolist() == [0, 0, 255]


def test_empty_class_folder_named(tmp_path):
    _img(tmp_path / "fire" / "a.png")
    (tmp_path / "no_fire").mkdir()
    with pytest.raises(DataError) as err:
        load_image_folder(tmp_path, 64)
    assert f"class folder {tmp_path / 'no_fire'} is empty" in str(err.value)


def test_unreadable_image_named(tmp_path):
    _img(tmp_path / "fire" / "a.png")
    _img(tmp_path / "no_fire" / "b.png")
    (tmp_path / "no_fire" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError) as err:
        load_image_folder(tmp_path, 64)
    assert f"cannot read image {tmp_path / 'no_fire' / 'broken.jpg'}" in err.value.one_line()
    assert "Fix: replace or delete the file" in err.value.one_line()


def test_single_class_is_not_a_classifier(tmp_path):
    _img(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="has 1 class folder"):
        load_image_folder(tmp_path, 64)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task("fire", tmp_path / "nope")


def test_fire_not_found_suggests_synth(monkeypatch, tmp_path):
    import mltool.data.tasks as tasks

    monkeypatch.setattr(tasks, "SYSTEM_DATASETS", tmp_path)
    with pytest.raises(DataError) as err:
        load_task("fire")
    assert "`mltool datasets synth fire` writes a synthetic one" in err.value.one_line()


def test_signal_csv_with_header_and_npy(tmp_path):
    (tmp_path / "a.csv").write_text("mv\n1.5\n2.5\n-3\n")
    np.save(tmp_path / "b.npy", np.array([[1.0], [2.0]]))
    assert read_signal(tmp_path / "a.csv").tolist() == [1.5, 2.5, -3.0]
    assert read_signal(tmp_path / "b.npy").tolist() == [1.0, 2.0]


def test_signal_wrong_length_named(tmp_path):
    for cls in ("normal", "arrhythmia"):
        (tmp_path / cls).mkdir()
        np.save(tmp_path / cls / "ok.npy", np.zeros(100, np.float32))
    np.save(tmp_path / "arrhythmia" / "short.npy", np.zeros(90, np.float32))
    with pytest.raises(DataError) as err:
        load_signal_folder(tmp_path, 100)
    line = err.value.one_line()
    assert f"signal file {tmp_path / 'arrhythmia' / 'short.npy'} has 90 samples, expected 100" in line


def test_signal_multichannel_and_garbage(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((10, 2)))
    with pytest.raises(DataError, match=r"has shape \(10, 2\); expected one channel"):
        read_signal(tmp_path / "two.npy")
    (tmp_path / "bad.csv").write_text("1\n2\nabc\n")
    with pytest.raises(DataError, match="cannot read signal file"):
        read_signal(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("1\nnan\n")
    with pytest.raises(DataError, match="NaN"):
        read_signal(tmp_path / "nan.csv")
