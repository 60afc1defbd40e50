"""`mltool train --arch mobilenetv2`: weights from a locally written file (the Keras cache or
--weights FILE; nothing is downloaded here), --weights none, two phases, augmentation that never
reaches the saved model, and the int8 conversion and inference of the result. Kept small:
alpha 0.35 at 96 px on 200 synthetic fire images (fewer and a network trained from scratch is
too unsure of itself for an int8 accuracy check to mean anything)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from mltool.train.transfer import BASE_URL, weights_file

NAME = weights_file(0.35, 96)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


def _base(model):
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def _all_layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from mltool.data.synth import synthesize

    out = tmp_path_factory.mktemp("photos") / "fire"
    synthesize("fire", out, per_class=100, seed=5)
    return out


@pytest.fixture(scope="module")
def scratch_run(cli_module, photos, tmp_path_factory) -> Path:
    """--weights none: the whole network trains from the start (the expensive trace, once)."""
    project = tmp_path_factory.mktemp("mnv2_none")
    r = cli_module(["train", "fire", "--data", photos, "--arch", "mobilenetv2", "--weights", "none",
                    "--epochs", "8", "--patience", "0", "--project", project, "--json"])
    assert r.exit_code == 0, r.stderr
    return Path(r.json()["run_dir"])


@pytest.fixture(scope="module")
def pretrained(scratch_run, tmp_path_factory) -> dict:
    """The scratch run's base written the way users get pretrained weights: Keras' no-top HDF5
    file in a Keras cache, and a Keras 3 .weights.h5 file for --weights FILE."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from mltool._tf import load_keras_model

    base = _base(load_keras_model(scratch_run / "model.keras"))
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    with h5py.File(home / "models" / NAME, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, base)
    file = home / "base.weights.h5"
    base.save_weights(file)
    return {"home": home, "file": file, "weights": {w.path: w.numpy() for w in base.weights}}


@pytest.fixture(scope="module")
def transfer_run(cli_module, pretrained, photos, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("mnv2_transfer")
    r = cli_module(["train", "fire", "--data", photos, "--arch", "mobilenetv2", "--no-download", "--augment",
                    "--epochs", "2", "--fine-tune", "12", "--fine-tune-epochs", "1", "--batch-size", "16",
                    "--patience", "0", "--project", project, "--json"], env={"KERAS_HOME": str(pretrained["home"])})
    assert r.exit_code == 0, r.stderr
    return Path(r.json()["run_dir"])


@pytest.fixture(scope="module")
def cli_module():
    from tests.conftest import invoke

    return invoke


def test_weights_none_trains_the_whole_network_from_scratch(scratch_run):
    info = json.loads((scratch_run / "mltool.json").read_text())
    assert info["arch"] == "mobilenetv2" and info["params"] == 410_208 + 2 * 1281
    assert info["normalization"] == {"mean": [127.5], "std": [127.5], "formula": "(x - mean) / std"}
    assert info["input"]["shape"] == [96, 96, 3] and info["input"]["resize"] == [96, 96]
    t = info["training"]["transfer"]
    assert t["weights"] == "none" and t["alpha"] == 0.35 and [p["name"] for p in t["phases"]] == ["full"]
    assert t["phases"][0]["trainable_params"] > 390_000  # all but batch-norm statistics
    rows = list(csv.DictReader((scratch_run / "history.csv").open()))
    assert float(rows[-1]["accuracy"]) >= 0.9 and info["metrics"]["accuracy"] >= 0.6, info["metrics"]  # 40 test images
    # batch-norm statistics fit the trained weights: deep features still tell images apart
    import keras

    from mltool._tf import load_keras_model
    from mltool.data.images import load_image_folder

    model = load_keras_model(scratch_run / "model.keras")
    x, _, _ = load_image_folder(info["dataset"]["source"], 96)
    features = keras.Model(model.input, model.layers[2].output).predict((x[:32] - 127.5) / 127.5, verbose=0)
    assert features.std(axis=0).mean() > 1e-3


def test_imagenet_weights_come_from_the_keras_cache_then_two_phases(transfer_run, pretrained):
    from mltool._tf import load_keras_model

    info = json.loads((transfer_run / "mltool.json").read_text())
    t = info["training"]["transfer"]
    assert t["weights"] == f"imagenet ({pretrained['home'] / 'models' / NAME})"
    assert [(p["name"], p["epochs_run"], p["learning_rate"]) for p in t["phases"]] == [("head", 2, 0.001), ("fine-tune", 1, 0.0001)]
    assert t["phases"][0]["trainable_params"] == 2 * 1281  # only the new head
    assert t["phases"][1]["trainable_params"] > 50_000 and t["fine_tune_layers"] == 12
    rows = list(csv.DictReader((transfer_run / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head"] * 2 + ["fine-tune"] * 1 and [r["epoch"] for r in rows] == list("123")
    # the frozen part of the base is exactly the file; the top 12 layers moved (batch norm did not)
    import keras

    base = _base(load_keras_model(transfer_run / "model.keras"))
    top = {w.path for layer in base.layers[-12:] if not isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights}
    saved = pretrained["weights"]
    changed = {w.path for w in base.weights if not np.array_equal(w.numpy(), saved[w.path])}
    assert changed and changed <= top


def test_augmentation_trains_but_is_not_in_the_saved_model(transfer_run):
    import keras

    from mltool._tf import load_keras_model
    from mltool.train.fit import AUGMENTATIONS
    from mltool.train.transfer import build

    info = json.loads((transfer_run / "mltool.json").read_text())
    assert info["training"]["augment"] == AUGMENTATIONS
    model = load_keras_model(transfer_run / "model.keras")
    kinds = [type(layer).__name__ for layer in _all_layers(model)]
    assert not [k for k in kinds if k.startswith("Random")]
    plain, _ = build(0.35, 96, 2, None)  # the same model built without any augmentation
    assert kinds == [type(layer).__name__ for layer in _all_layers(plain)]
    x = np.random.default_rng(0).uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    assert np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(model, keras.Model)


def test_weights_file_is_loaded_into_the_base(pretrained):
    from mltool.train.transfer import build, resolve_weights

    path, described = resolve_weights(str(pretrained["file"]), 0.35, 96, download=False, log=print)
    assert (path, described) == (pretrained["file"], f"file {pretrained['file']}")
    model, base = build(0.35, 96, 2, path)
    assert all(np.array_equal(w.numpy(), pretrained["weights"][w.path]) for w in base.weights)
    assert model.count_params() == base.count_params() + 2 * 1281


def test_int8_conversion_passes_its_accuracy_check_and_infer_matches_keras(cli, scratch_run, photos):
    from mltool._tf import load_keras_model
    from mltool.data.images import read_image
    from mltool.runtime.interpreter import load_model

    r = cli(["convert", scratch_run, "-q", "int8", "--max-drop", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    mode = r.json()["modes"][0]
    assert mode["mode"] == "int8" and mode["drop_points"] <= 5 and mode["agreement"] >= 0.8
    tflite = Path(mode["path"])
    meta = load_model(tflite).metadata
    assert meta.normalization.mean == [127.5] and meta.normalization.std == [127.5]
    # infer feeds (pixels - 127.5) / 127.5, as training did: its scores are the int8 model's own
    # on exactly that input, and its top labels follow Keras'
    r = cli(["infer", tflite, photos / "fire", "--json", "-k", "2"])
    assert r.exit_code == 0, r.stderr
    results = [o for o in _lines(r.stdout) if "predictions" in o]
    x = np.stack([read_image(o["name"], None, "RGB") for o in results]).astype(np.float32)
    by_hand = load_model(tflite).predict((x - 127.5) / 127.5)
    scores = np.asarray([[next(p["score"] for p in o["predictions"] if p["label"] == c) for c in ("fire", "no_fire")]
                         for o in results])
    assert len(results) == 100 and np.allclose(scores, by_hand, atol=1e-4)
    keras_top = load_keras_model(scratch_run / "model.keras").predict((x - 127.5) / 127.5, verbose=0).argmax(1)
    assert np.mean(scores.argmax(1) == keras_top) >= 0.8


def test_offline_without_weights_is_one_line_naming_the_file_and_folder(cli, synth_fire_dir, tmp_path, monkeypatch):
    home = Path(os.environ["KERAS_HOME"])
    args = ["train", "fire", "--data", synth_fire_dir, "--arch", "mobilenetv2", "--project", tmp_path / "runs"]
    r = cli([*args, "--no-download"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: ImageNet weights for MobileNetV2 alpha 0.35 at 96 px are not in the Keras cache and could not be "
        f"downloaded (downloads disabled by --no-download). Fix: put {NAME} (from {BASE_URL}{NAME}) in {home / 'models'}, "
        "or pass --weights FILE or --weights none")
    # the download path itself, against a port where nothing listens
    monkeypatch.setattr("mltool.train.transfer.BASE_URL", "http://127.0.0.1:9/")
    r = cli(args)
    assert r.exit_code == 1 and "could not be downloaded (" in r.stderr and f"Fix: put {NAME}" in r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "runs").glob("fire-*"))


def test_weights_of_another_alpha_are_refused(cli, pretrained, synth_fire_dir, tmp_path):
    r = cli(["train", "fire", "--data", synth_fire_dir, "--arch", "mobilenetv2", "--alpha", "0.5", "--weights",
             pretrained["file"], "--project", tmp_path])
    assert r.exit_code == 1
    assert f"Error: weights file {pretrained['file']} does not fit a MobileNetV2 base with alpha 0.5 (" in r.stderr
    assert "Fix: use the no-top weights for that alpha, e.g. mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5" in r.stderr


@pytest.mark.parametrize("extra, message", [
    (["digits", "--arch", "mobilenetv2"], "--arch mobilenetv2 takes RGB photos; the digits task is grayscale"),
    (["fire", "--arch", "mobilenetv2", "--alpha", "0.4"], "--alpha 0.4 is not a MobileNetV2 width with ImageNet weights"),
    (["fire", "--arch", "mobilenetv2", "--image-size", "64"], "--image-size 64 is outside MobileNetV2's 96..224 px"),
    (["fire", "--arch", "mobilenetv2", "--weights", "none", "--fine-tune", "5"], "--fine-tune needs pretrained weights"),
    (["fire", "--arch", "mobilenetv2", "--fine-tune", "154"], "--fine-tune 154 is out of range"),
    (["fire", "--alpha", "0.5"], "--alpha applies to --arch mobilenetv2"),
    (["ecg", "--augment"], "--augment is for image tasks"),
])
def test_usage_errors(cli, tmp_path, extra, message):
    r = cli(["train", *extra, "--project", tmp_path])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and list(tmp_path.iterdir()) == []


def test_arch_table_counts_match_real_builds():
    from mltool._tf import import_tensorflow
    from mltool.train.models import ARCH_TABLE, build_model
    from mltool.train.transfer import build

    import_tensorflow()

    def numbers(text: str) -> list[int]:
        return [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+|\d{5,}", text)]

    assert numbers(ARCH_TABLE["cnn"][1]) == [build_model("cnn", (28, 28, 1), 10).count_params()]
    assert numbers(ARCH_TABLE["dense"][1]) == [build_model("dense", (28, 28, 1), 10).count_params()]
    assert numbers(ARCH_TABLE["fire-cnn"][1]) == [build_model("fire-cnn", (s, s, 3), 2).count_params() for s in (64, 96)]
    assert numbers(ARCH_TABLE["cnn1d"][1]) == [build_model("cnn1d", (3600, 1), 2).count_params()]
    assert numbers(ARCH_TABLE["mobilenetv2"][1]) == [_base(build(a, 96, 2, None)[0]).count_params() for a in (0.35, 0.5, 0.75, 1.0)]
    assert build(0.35, 96, 3, None)[0].count_params() - build(0.35, 96, 2, None)[0].count_params() == 1281
