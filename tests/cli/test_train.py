"""`mltool train` end to end through the CLI, on real data (digits, Fashion-MNIST) and synthetic folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mltool.train.run import TrainConfig, train

RUN_FILES = {"model.keras", "labels.txt", "mltool.json", "history.csv", "curves.png",
             "confusion_matrix.png", "mistakes.png", "evaluation.json"}


def _check_run_dir(run: Path, classes: list[str]) -> dict:
    assert {p.name for p in run.iterdir()} == RUN_FILES
    info = json.loads((run / "mltool.json").read_text())
    assert info["format"] == "mltool.model/1"
    assert info["classes"] == classes
    assert (run / "labels.txt").read_text().splitlines() == classes
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == info["training"]["epochs_run"] >= 1
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(rows[0])
    for png in ("curves.png", "confusion_matrix.png", "mistakes.png"):
        with Image.open(run / png) as im:
            assert im.format == "PNG" and im.size[0] > 300
    ev = json.loads((run / "evaluation.json").read_text())
    cm = np.array(ev["confusion_matrix"])
    assert cm.shape == (len(classes), len(classes))
    assert cm.sum() == info["metrics"]["test_samples"] == info["dataset"]["samples"]["test"]
    assert ev["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
    assert info["metrics"]["accuracy"] == ev["accuracy"]
    assert set(info["metrics"]["per_class"]) == set(classes)
    for key in ("tensorflow", "keras", "numpy", "python", "mltool"):
        assert info["versions"][key]
    assert info["dataset"]["fingerprint"].startswith("sha256:")
    return info


def test_digits_run_directory_and_metrics(digits_run):
    info = _check_run_dir(digits_run, [str(i) for i in range(10)])
    assert digits_run.name == "digits-1"
    assert info["task"] == "digits" and info["arch"] == "cnn"
    assert info["input"]["shape"] == [8, 8, 1] and info["input"]["layout"] == "NHWC"
    assert info["normalization"] == {"mean": [0.0], "std": [255.0], "formula": "(x - mean) / std"}
    assert info["dataset"]["source"] == "scikit-learn (bundled)"
    assert info["metrics"]["accuracy"] >= 0.93  # 12 epochs; the default 40 reach ~98%


def test_json_summary_matches_files(cli, tmp_path):
    r = cli(["train", "digits", "--epochs", "2", "--max-samples", "400", "--project", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    summary = r.json()
    run = Path(summary["run_dir"])
    info = json.loads((run / "mltool.json").read_text())
    assert summary["metrics"]["accuracy"] == info["metrics"]["accuracy"]
    assert summary["training"]["epochs_run"] == 2
    assert summary["dataset"]["limit"] == 400 and sum(summary["dataset"]["samples"].values()) == 400
    assert "test accuracy" in r.stderr and "run saved to" in r.stderr
    assert f"next: mltool convert {run} --quantize int8" in r.stderr


def test_mistakes_grid_shows_the_misclassified_test_samples(tmp_path):
    """The grid people look at after a confusion matrix: exactly the wrong test samples, captioned."""
    from mltool.train.report import plot_mistakes

    x = np.zeros((6, 8, 8, 1), np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[[0, 2, 2, 1, 1, 0]] * 0.9 + 0.03  # samples 1, 3 and 5 are wrong
    assert plot_mistakes(x, y, probs, ["a", "b", "c"], tmp_path / "m.png", "t") == 3
    with Image.open(tmp_path / "m.png") as im:
        assert im.size[0] >= 3 * 2.2 * 100 - 5  # three panels side by side
    assert plot_mistakes(x, y, np.eye(3)[y], ["a", "b", "c"], tmp_path / "none.png", "t") == 0
    signals = np.random.default_rng(0).normal(size=(6, 100, 1)).astype(np.float32)
    assert plot_mistakes(signals, y, probs, ["a", "b", "c"], tmp_path / "s.png", "t") == 3


def test_same_seed_same_split_same_metrics_and_numbered_runs(cli, tmp_path):
    args = ["train", "digits", "--epochs", "3", "--max-samples", "600", "--project", tmp_path, "--json"]
    a, b = cli(args).json(), cli(args).json()
    c = cli(args[:-1] + ["--seed", "5", "--json"]).json()
    assert [Path(x["run_dir"]).name for x in (a, b, c)] == ["digits-1", "digits-2", "digits-3"]
    assert a["metrics"] == b["metrics"]
    ha = (Path(a["run_dir"]) / "history.csv").read_text().splitlines()
    hb = (Path(b["run_dir"]) / "history.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:-1]) for r in rows]  # drop the timing column
    assert strip(ha) == strip(hb)
    assert c["metrics"] != a["metrics"]


def test_out_dir_is_never_overwritten(cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = cli(["train", "digits", "--epochs", "1", "--out", out])
    assert r.exit_code == 2
    assert f"output directory {out} already exists" in r.stderr
    assert (out / "keep.txt").read_text() == "precious"
    r = cli(["train", "digits", "--epochs", "1", "--max-samples", "300", "--out", tmp_path / "fresh", "--json"])
    assert r.exit_code == 0 and r.json()["run_dir"] == str(tmp_path / "fresh")
    assert (tmp_path / "fresh" / "mltool.json").is_file()


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(task="digits", epochs=5, limit=300, project=tmp_path), callbacks=[Interrupt()])
    assert list(tmp_path.iterdir()) == []


def test_evaluate_reloads_model_and_reproduces_accuracy(cli, digits_run):
    r = cli(["evaluate", digits_run, "--json"])
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["accuracy"] == out["recorded_accuracy"]
    assert out["samples"] == json.loads((digits_run / "mltool.json").read_text())["metrics"]["test_samples"]


def test_evaluate_refuses_non_run(cli, tmp_path):
    r = cli(["evaluate", tmp_path])
    assert r.exit_code == 1
    assert f"Error: {tmp_path} has no mltool.json" in r.stderr


@pytest.mark.slow
def test_fashion_mnist_subset_real_data(cli, fashion_dir, tmp_path):
    r = cli(["train", "fashion-mnist", "--max-samples", "3000", "--epochs", "3", "--project", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    s = r.json()
    info = _check_run_dir(Path(s["run_dir"]), s["classes"])
    assert info["classes"][0] == "T-shirt/top"
    assert info["dataset"]["source"] == str(fashion_dir) and info["dataset"]["official_test_split"]
    assert info["dataset"]["samples"]["test"] == 3000
    assert info["input"]["shape"] == [28, 28, 1]
    assert info["metrics"]["accuracy"] >= 0.70  # 2,700 training images, 3 epochs


def test_dense_baseline_arch(cli, tmp_path):
    r = cli(["train", "digits", "--arch", "dense", "--epochs", "3", "--project", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads((Path(r.json()["run_dir"]) / "mltool.json").read_text())
    assert info["arch"] == "dense" and info["params"] == 8 * 8 * 128 + 128 + 128 * 10 + 10


def test_synthetic_fire_roundtrip(cli, tmp_path):
    data = tmp_path / "fire"
    r = cli(["datasets", "synth", "fire", data, "--count", "40", "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["classes"] == {"fire": 40, "no_fire": 40}
    assert "SYNTHETIC" in (data / "SYNTHETIC.txt").read_text()
    r = cli(["train", "fire", "--data", data, "--epochs", "4", "--project", tmp_path / "runs", "--json"])
    assert r.exit_code == 0, r.stderr
    info = _check_run_dir(Path(r.json()["run_dir"]), ["fire", "no_fire"])
    assert info["arch"] == "fire-cnn" and info["input"]["shape"] == [64, 64, 3]
    assert info["input"]["resize"] == [64, 64] and info["input"]["color"] == "RGB"
    assert info["dataset"]["synthetic"] is True
    assert "SYNTHETIC data" in r.stderr


def test_synthetic_ecg_roundtrip_learns(cli, synth_ecg_dir, tmp_path):
    r = cli(["train", "ecg", "--data", synth_ecg_dir, "--epochs", "15", "--project", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    info = _check_run_dir(Path(r.json()["run_dir"]), ["arrhythmia", "normal"])
    assert info["kind"] == "signal-classification" and info["arch"] == "cnn1d"
    assert info["input"]["shape"] == [3600, 1] and info["input"]["rate_hz"] == 360
    assert info["input"]["layout"] == "NWC"
    assert info["normalization"]["std"][0] > 0
    assert info["metrics"]["accuracy"] >= 0.8


def test_images_task_with_directory_argument(cli, synth_fire_dir, tmp_path):
    r = cli(["train", "images", synth_fire_dir, "--image-size", "32", "--epochs", "2", "--project", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads((Path(r.json()["run_dir"]) / "mltool.json").read_text())
    assert info["task"] == "images" and info["input"]["shape"] == [32, 32, 3]


def test_default_synth_location_is_found_by_train_and_list(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("MLTOOL_DATA", str(tmp_path / "data"))
    r = cli(["datasets", "synth", "ecg", "--count", "3"])
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in cli(["datasets", "list", "--json"]).json()}
    assert rows["ecg"]["available"] and rows["ecg"]["synthetic"]
    assert rows["ecg"]["path"] == str(tmp_path / "data" / "ecg") and rows["ecg"]["samples"] == 6
    assert rows["fire"]["available"] is False
    r = cli(["datasets", "synth", "ecg", "--count", "3"])
    assert r.exit_code == 1 and "already exists and is not empty" in r.stderr


def test_corrupt_image_in_training_folder_fails_cleanly(cli, synth_fire_dir, tmp_path):
    import shutil

    data = tmp_path / "fire"
    shutil.copytree(synth_fire_dir, data)
    (data / "fire" / "fire_9999.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = cli(["train", "fire", "--data", data, "--epochs", "1", "--project", tmp_path / "runs"])
    assert r.exit_code == 1
    assert f"cannot read image {data / 'fire' / 'fire_9999.png'}" in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("task", ["digits", "ecg"])
def test_image_size_on_a_fixed_size_task_is_refused(cli, task, tmp_path):
    """Issue 18 item 16: `train digits --image-size 16` was silently ignored."""
    r = cli(["train", task, "--image-size", "16", "--epochs", "1", "--max-samples", "100", "--project", tmp_path])
    assert r.exit_code == 2, r.stderr
    assert f"--image-size does not apply to the {task} task" in r.stderr and "drop --image-size" in r.stderr
    assert not any(tmp_path.iterdir())
