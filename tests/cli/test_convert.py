"""`mltool convert` round trips: every mode, run through LiteRT on real held-out data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def test_all_modes_written_and_accurate(converted_digits, digits_run):
    res = converted_digits
    modes = {m["mode"]: m for m in res["modes"]}
    assert list(modes) == ["none", "float16", "dynamic", "int8", "int16x8"]
    keras_acc = res["reference"]["accuracy"]
    assert keras_acc == json.loads((digits_run / "mltool.json").read_text())["metrics"]["accuracy"]
    assert res["eval_samples"] == 359 and res["runtime"].startswith("ai_edge_litert")
    for name, m in modes.items():
        path = Path(m["path"])
        assert path.is_file() and path.stat().st_size == m["size_bytes"]
        assert m["accuracy"] >= keras_acc - 0.02, name
        assert m["agreement"] >= 0.97, name
        assert m["drop_points"] == pytest.approx(100 * (keras_acc - m["accuracy"]), abs=1e-3)
        assert m["latency_ms"]["median"] > 0
    assert modes["none"]["agreement"] == 1.0 and modes["none"]["size_vs_float32"] == 1.0
    assert modes["float16"]["size_vs_float32"] < 0.6
    assert modes["int8"]["size_vs_float32"] < 0.35 and modes["dynamic"]["size_vs_float32"] < 0.35
    assert (modes["int8"]["input_dtype"], modes["int8"]["output_dtype"]) == ("int8", "int8")
    assert modes["int16x8"]["input_dtype"] == "float32"
    report = json.loads((Path(res["out_dir"]) / "convert.json").read_text())
    assert report["modes"] == res["modes"]
    assert not [p for p in Path(res["out_dir"]).iterdir() if p.name.startswith(".")]


READ_WITHOUT_TF = r"""
import json, sys
sys.modules["tensorflow"] = None   # any import of TensorFlow now fails
sys.modules["keras"] = None
from mltool.runtime.interpreter import load_model
import numpy as np
m = load_model(sys.argv[1])
x = np.zeros((1, 8, 8, 1), np.float32)
probs = m.run(x)[0]
print(json.dumps({"meta": m.metadata.to_dict(), "runtime": m.runtime, "sum": float(probs.sum()),
                  "in": str(m.inputs[0].dtype)}))
"""


def test_metadata_read_back_without_tensorflow(converted_digits, digits_run):
    int8 = next(m for m in converted_digits["modes"] if m["mode"] == "int8")
    proc = subprocess.run([sys.executable, "-c", READ_WITHOUT_TF, int8["path"]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    meta = out["meta"]
    run_info = json.loads((digits_run / "mltool.json").read_text())
    assert meta["format"] == "mltool.tflite/1"
    assert meta["labels"] == [str(i) for i in range(10)] and meta["task"] == "digits"
    assert meta["normalization"]["std"] == [255.0]
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["shape"] == [8, 8, 1]
    assert meta["quantization"] == {"mode": "int8", "io": "int8"}
    assert meta["dataset"]["fingerprint"] == run_info["dataset"]["fingerprint"]
    assert meta["source"]["sha256"].startswith("sha256:") and meta["mltool_version"] == "0.1.0"
    assert out["runtime"] == "ai_edge_litert" and out["in"] == "int8"
    assert out["sum"] == pytest.approx(1.0, abs=0.05)  # dequantized softmax


def test_inspect_cli_without_tensorflow(converted_digits):
    path = next(m for m in converted_digits["modes"] if m["mode"] == "int8")["path"]
    code = ("import sys, json; sys.modules['tensorflow'] = None\n"
            "from mltool.cli import main\n"
            "try:\n    main(['inspect', sys.argv[1], '--json'])\nexcept SystemExit as e:\n    assert e.code in (0, None)\n"
            "assert 'keras' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["inputs"][0]["dtype"] == "int8"
    assert rep["inputs"][0]["quantization"]["zero_point"] == -128
    assert rep["inputs"][0]["shape_signature"] == [-1, 8, 8, 1]
    # a batch of -1 (every Keras conversion) is not a dynamic input: infer runs it without --input-shape
    assert rep["dynamic_inputs"] == [] and rep["dynamic_batch"] is True
    assert "dynamic inputs" not in proc.stderr
    assert rep["operators"]["CONV_2D"] == 2 and rep["operators"]["SOFTMAX"] == 1
    assert rep["signatures"][0]["key"] == "serving_default"
    assert rep["mltool_metadata"]["quantization"]["mode"] == "int8"
    assert rep["metadata_entries"] == sorted(rep["metadata_entries"]) and "mltool" in rep["metadata_entries"]


def test_inspect_foreign_uint8_model_without_metadata(cli, foreign_models):
    r = cli(["inspect", foreign_models["uint8"], "--json"])
    assert r.exit_code == 0, r.stderr
    rep = r.json()
    assert rep["mltool_metadata"] is None
    inp, out = rep["inputs"][0], rep["outputs"][0]
    assert inp["dtype"] == "uint8" and out["dtype"] == "uint8"
    assert inp["shape"] == [1, 6, 6, 1]
    assert 0 < inp["quantization"]["scale"] < 1 and 0 <= inp["quantization"]["zero_point"] <= 255
    human = cli(["inspect", foreign_models["uint8"]])
    assert "mltool metadata: none" in human.stderr and "uint8" in human.stderr


def test_inspect_model_with_two_inputs(cli, foreign_models):
    rep = cli(["inspect", foreign_models["two"], "--json"]).json()
    assert sorted(tuple(i["shape"]) for i in rep["inputs"]) == [(1, 3), (1, 4)]
    assert len(rep["signatures"][0]["inputs"]) == 2


@pytest.mark.parametrize("cut", [0, 7, 16, 200, "half", -1])
def test_truncated_and_non_models_get_clear_error(cli, converted_digits, tmp_path, cut):
    data = Path(converted_digits["modes"][0]["path"]).read_bytes()
    n = {"half": len(data) // 2, -1: len(data) - 1}.get(cut, cut)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data[:n])
    r = cli(["inspect", bad])
    assert r.exit_code == 1
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith(f"Error: {bad}") and ("not a TFLite model" in err or "damaged or truncated" in err or "could not load" in err)


def test_text_file_is_not_a_model(cli, tmp_path):
    f = tmp_path / "model.tflite"
    f.write_text("hello, I am a text file\n")
    r = cli(["inspect", f])
    assert r.exit_code == 1 and "is not a TFLite model (file identifier" in r.stderr


FUZZ = r"""
import sys, random
from mltool.errors import ModelError
from mltool.runtime.inspect import inspect_model
data = bytearray(open(sys.argv[1], "rb").read())
rng = random.Random(0)
ok = bad = 0
for i in range(150):
    d = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(0, min(len(d), 4096)) if rng.random() < 0.7 else rng.randrange(len(d))
        d[pos] = rng.randrange(256)
    open(sys.argv[2], "wb").write(d)
    try:
        inspect_model(sys.argv[2]); ok += 1
    except ModelError:
        bad += 1
print(ok, bad)
"""


def test_corrupted_models_never_crash_the_process(converted_digits, tmp_path):
    src = next(m for m in converted_digits["modes"] if m["mode"] == "int8")["path"]
    proc = subprocess.run([sys.executable, "-c", FUZZ, src, str(tmp_path / "fuzz.tflite")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"process died with {proc.returncode}: {proc.stderr[-2000:]}"
    ok, bad = map(int, proc.stdout.split())
    assert ok + bad == 150 and bad > 0


def test_uint8_io_option(cli, digits_run, tmp_path):
    r = cli(["convert", digits_run, "-q", "int8", "--io", "uint8", "--out", tmp_path, "--json"])
    assert r.exit_code == 0, r.stderr
    m = r.json()["modes"][0]
    assert (m["input_dtype"], m["output_dtype"]) == ("uint8", "uint8")
    assert m["agreement"] >= 0.97


def test_bad_calibration_is_caught_by_max_drop(cli, digits_run, tmp_path):
    calib = tmp_path / "black"
    calib.mkdir()
    for i in range(20):
        Image.new("L", (8, 8), 0).save(calib / f"{i}.png")
    r = cli(["convert", digits_run, "-q", "int8", "--calib", calib, "--out", tmp_path / "out", "--max-drop", "1", "--json"])
    assert r.exit_code == 1
    res = r.json()
    assert res["calibration"] == f"20 files from {calib}"
    drop = res["modes"][0]["drop_points"]
    assert drop > 1
    assert f"Error: int8 loses {drop:.2f} accuracy points, more than --max-drop 1" in r.stderr


def test_keras_file_needs_calibration_data(cli, digits_run, tmp_path):
    model = tmp_path / "plain.keras"
    shutil.copy(digits_run / "model.keras", model)
    r = cli(["convert", model, "-q", "int8"])
    assert r.exit_code == 1
    assert f"{model} has no recorded training data to calibrate int8 quantization" in r.stderr
    assert "--calib DIR" in r.stderr
    assert not list(tmp_path.glob("*.tflite"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(5):
        Image.new("L", (8, 8), i * 3).save(imgs / f"{i}.png")
    r = cli(["convert", model, "-q", "int8", "--calib", imgs])
    assert r.exit_code == 2 and "does not record its input normalisation" in r.stderr
    r = cli(["convert", model, "-q", "int8", "--calib", imgs, "--mean", "0", "--std", "255", "--json"])
    assert r.exit_code == 0, r.stderr
    res = r.json()
    assert res["modes"][0]["accuracy"] is None and res["modes"][0]["agreement"] is not None
    assert (tmp_path / "plain_int8.tflite").is_file()


def test_lambda_layer_refused(cli, tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    r = cli(["convert", path])
    assert r.exit_code == 1
    assert "needs unsafe deserialisation (it contains a Lambda layer or custom code)" in r.stderr
    assert not list(tmp_path.glob("*.tflite"))


def test_h5_needs_allow_legacy(cli, tmp_path):
    f = tmp_path / "old.h5"
    f.write_bytes(b"\x89HDF\r\n\x1a\n")
    r = cli(["convert", f])
    assert r.exit_code == 1 and "is a legacy HDF5 model" in r.stderr and "--allow-legacy" in r.stderr


def test_savedmodel_source(cli, digits_run, tmp_path):
    from mltool._tf import load_keras_model

    sm = tmp_path / "saved"
    load_keras_model(digits_run / "model.keras").export(str(sm))
    r = cli(["convert", sm, "-q", "dynamic", "--json"])
    assert r.exit_code == 0, r.stderr
    res = r.json()
    assert res["source_kind"] == "savedmodel" and res["reference"]["name"] == "float32 tflite"
    assert (tmp_path / "model_dynamic.tflite").is_file()


def test_failed_conversion_leaves_previous_file_intact(digits_run, tmp_path, monkeypatch):
    import mltool.convert.converter as conv
    from mltool.errors import ModelError

    target = tmp_path / "model_int8.tflite"
    target.write_bytes(b"previous good model")
    real = conv._convert_one

    def failing(src, mode, io_type, calib):
        if mode == "int8":
            raise ModelError("boom", "x")
        return real(src, mode, io_type, calib)

    monkeypatch.setattr(conv, "_convert_one", failing)
    with pytest.raises(ModelError):
        conv.convert(conv.ConvertConfig(model=digits_run, quantize="int8", out=tmp_path))
    assert target.read_bytes() == b"previous good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model_int8.tflite"]


def test_atomic_write_interrupted(tmp_path, monkeypatch):
    from mltool import _io

    dest = tmp_path / "m.tflite"
    dest.write_bytes(b"old")

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write_bytes(dest, b"new" * 1000)
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_bad_options(cli, digits_run):
    r = cli(["convert", digits_run, "-q", "int4"])
    assert r.exit_code == 2 and "unknown quantization mode 'int4'" in r.stderr
    r = cli(["convert", digits_run, "-q", "dynamic", "--io", "uint8"])
    assert r.exit_code == 2 and "--io applies to --quantize int8 only" in r.stderr


def test_calib_folder_ignores_non_sample_files(cli, digits_run, tmp_path):
    calib = tmp_path / "calib"
    (calib / "sub").mkdir(parents=True)
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(calib / "sub" / f"{i}.png")
    (calib / "SYNTHETIC.txt").write_text("marker, not a sample")
    (calib / "README.md").write_text("notes")
    r = cli(["convert", digits_run, "-q", "int8", "--calib", calib, "--out", tmp_path / "out", "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["calibration"] == f"6 files from {calib}"


def test_mode_the_runtime_refuses_is_reported_not_fatal(cli, digits_run, tmp_path, monkeypatch):
    # LiteRT refuses some int16x8 models (seen with MobileNetV2's depthwise convs); simulate the refusal.
    import mltool.runtime.interpreter as rt
    from mltool.errors import ModelError

    real = rt.load_model

    def picky(path, threads=None):
        if "int16x8" in str(path):
            raise ModelError(f"ai_edge_litert could not load {path} (Node number 15 (DEPTHWISE_CONV_2D) failed to prepare.)", "x")
        return real(path, threads)

    monkeypatch.setattr(rt, "load_model", picky)
    r = cli(["convert", digits_run, "-q", "all", "--out", tmp_path, "--json"])
    assert r.exit_code == 1
    modes = {m["mode"]: m for m in r.json()["modes"]}
    assert modes["int16x8"]["error"].startswith("ai_edge_litert could not load") and modes["int16x8"]["accuracy"] is None
    assert all(modes[m]["error"] is None and modes[m]["accuracy"] is not None for m in ("none", "float16", "dynamic", "int8"))
    assert "Error: int16x8 converted but" in r.stderr and "cannot run" in r.stderr
    assert len(list(tmp_path.glob("*.tflite"))) == 5
