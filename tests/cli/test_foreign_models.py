"""Models mltool did not make: MediaPipe's own models (from its PyPI wheel), models carrying
standard TFLite Metadata written by tflite-support (Model Maker's library), SSD detectors with
their outputs in the TF1 and TF2 orders, audio models with [1, N] and dynamic inputs, label
files in other formats, custom operators and external delegates. See tests/data/foreign/README.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

FOREIGN = REPO / "tests" / "data" / "foreign"
MEDIAPIPE = "mediapipe==0.10.14"  # the last wheel that ships its models (mediapipe/modules/*/*.tflite)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def mediapipe_models() -> Path:
    """MediaPipe's real models, taken from its wheel on PyPI (cached between runs)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mltool-tests" / "mediapipe"
    wanted = ["face_detection_short_range.tflite", "face_landmark_with_attention.tflite", "hand_landmark_lite.tflite"]
    if not all((cache / w).is_file() for w in wanted):
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                               "--python-version", "3.11", "--platform", "manylinux2014_x86_64", "-d", str(cache), MEDIAPIPE],
                              capture_output=True, text=True, timeout=600)
        wheels = list(cache.glob("mediapipe-*.whl"))
        if proc.returncode != 0 or not wheels:
            if os.environ.get("CI"):
                pytest.fail(f"cannot download {MEDIAPIPE} from PyPI: {proc.stderr[-500:]}")
            pytest.skip(f"{MEDIAPIPE} not downloadable here")
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if Path(name).name in wanted:
                    (cache / Path(name).name).write_bytes(z.read(name))
        wheels[0].unlink()
    return cache


@pytest.fixture(scope="session")
def pictures(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("pictures")
    a = np.zeros((320, 320, 3), np.uint8)
    a[:160, :160] = (255, 0, 0)
    a[160:, 160:] = (0, 0, 255)
    Image.fromarray(a).save(d / "red_blue.png")
    a[:160, 160:] = (0, 255, 0)
    Image.fromarray(a).save(d / "red_green_blue.png")
    return {"red_blue": d / "red_blue.png", "rgb": d / "red_green_blue.png"}


def _wav(path: Path, rate: int, seconds: float, freq: float = 440.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(pcm.tobytes())
    return path


# --------------------------------------------------------------------------- detectors and labels


@pytest.mark.parametrize("model", ["ssd_tf1_order", "ssd_tf2_order", "ssd_converter_order"])
def test_detection_outputs_in_every_order(cli, model, pictures):
    r = cli(["infer", FOREIGN / f"{model}.tflite", pictures["red_blue"], "--labels", FOREIGN / "labels_objects.txt",
             "--mean", "0", "--std", "255", "--json"])
    assert r.exit_code == 0, r.stderr
    dets = _lines(r.stdout)[0]["detections"]
    # red top-left quadrant (4 anchor cells), blue bottom-right: scores near 1, boxes on the anchor grid
    assert {(d["label"], tuple(d["box"])) for d in dets[:2]} == {("red thing", (0.0, 0.0, 0.25, 0.25)),
                                                                ("blue thing", (0.75, 0.75, 1.0, 1.0))}
    assert all(0.99 < d["score"] <= 1.0 for d in dets) and {d["class"] for d in dets} == {0, 2}


def test_inspect_shows_detection_shapes_after_allocation(cli):
    rep = cli(["inspect", FOREIGN / "ssd_tf1_order.tflite", "--json"]).json()
    assert [o["shape"] for o in rep["outputs"]] == [[1, 5, 4], [1, 5], [1, 5], [1]]
    assert [o["shape_signature"] for o in rep["outputs"]] == [[], [], [], []]  # what the file itself says
    assert rep["runnable"] is True and rep["signatures"] == []


def test_label_file_with_id_gaps_never_borrows_a_name(cli, pictures, tmp_path):
    # labels_objects_ids.txt: BOM, CRLF, "0  red thing" and "2  blue thing" (no class 1)
    r = cli(["infer", FOREIGN / "ssd_tf1_order.tflite", pictures["rgb"], "--labels", FOREIGN / "labels_objects_ids.txt",
             "--mean", "0", "--std", "255", "--json", "--save", tmp_path / "out"])
    assert r.exit_code == 0, r.stderr
    names = {(d["class"], d["label"]) for d in _lines(r.stdout)[0]["detections"]}
    assert names == {(0, "red thing"), (1, "1"), (2, "blue thing")}
    assert (tmp_path / "out" / "red_green_blue.jpg").is_file()


def test_standard_metadata_detector_needs_no_flags(cli, pictures):
    r = cli(["infer", FOREIGN / "ssd_tf1_order_metadata.tflite", pictures["red_blue"], "--json"])
    assert r.exit_code == 0, r.stderr
    assert {d["label"] for d in _lines(r.stdout)[0]["detections"]} == {"red thing", "blue thing"}
    rep = cli(["inspect", FOREIGN / "ssd_tf1_order_metadata.tflite", "--json"]).json()
    tm = rep["tflite_metadata"]
    assert tm["mean"] == [0.0] and tm["std"] == [255.0] and tm["labels"] == 3 and tm["label_file"] == "labels_objects.txt"
    assert tm["output_names"] == ["location", "category", "score", "number of detections"]


# --------------------------------------------------------------------------- classifiers with TFLite Metadata


@pytest.mark.parametrize("model", ["classifier_tfhub_style", "classifier_modelmaker_uint8"])
def test_tflite_metadata_supplies_normalisation_and_packed_labels(cli, model, pictures):
    by_metadata = cli(["infer", FOREIGN / f"{model}.tflite", pictures["rgb"], "--json", "-k", "5"])
    assert by_metadata.exit_code == 0, by_metadata.stderr
    explicit = cli(["infer", FOREIGN / f"{model}.tflite", pictures["rgb"], "--json", "-k", "5", "--mean", "127.5",
                    "--std", "127.5", "--labels", FOREIGN / "labels_classifier.txt"])
    a, b = _lines(by_metadata.stdout)[0]["predictions"], _lines(explicit.stdout)[0]["predictions"]
    assert a == b and {p["label"] for p in a} == {"cat", "dog", "bird", "fish", "horse"}
    assert "feeding raw pixels" not in by_metadata.stderr


def test_float_model_without_any_metadata_asks_for_mean_and_std(cli, pictures):
    r = cli(["infer", FOREIGN / "classifier_plain_float.tflite", pictures["rgb"]])
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"Error: {FOREIGN / 'classifier_plain_float.tflite'} has no metadata saying how to normalise "
                                "its float input. Fix: pass --mean and --std (e.g. --mean 0 --std 255 for [0, 1], "
                                "--mean 127.5 --std 127.5 for [-1, 1])")


# --------------------------------------------------------------------------- signal layouts, dynamic shapes


def test_audio_model_taking_1_by_n_with_metadata_rate(cli, tmp_path):
    wav = _wav(tmp_path / "tone.wav", 16000, 2.5)
    r = cli(["infer", FOREIGN / "audio_classifier_1x16000.tflite", wav, "--json"])
    assert r.exit_code == 0, r.stderr
    res = [x for x in _lines(r.stdout) if "predictions" in x]
    assert [x["name"] for x in res] == [f"{wav}@0.00s", f"{wav}@1.00s"]  # 16000-sample windows at 16 kHz
    assert {p["label"] for p in res[0]["predictions"]} == {"silence", "hum", "click"}
    assert "feeding the samples as they are" in r.stderr  # said once, not per window
    assert r.stderr.count("feeding the samples as they are") == 1
    r = cli(["infer", FOREIGN / "audio_classifier_1x16000.tflite", _wav(tmp_path / "low.wav", 8000, 3)])
    assert r.exit_code == 1 and "is sampled at 8000 Hz, the model expects 16000 Hz" in r.stderr


def test_three_channel_signal_model(cli, tmp_path):
    np.save(tmp_path / "imu.npy", np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32))
    r = cli(["infer", FOREIGN / "signal_128x3.tflite", tmp_path / "imu.npy", "--hop", "64", "--json"])
    assert r.exit_code == 0, r.stderr
    assert [x["name"] for x in _lines(r.stdout) if "predictions" in x] == [f"{tmp_path / 'imu.npy'}@{s}" for s in (0, 64, 128)]
    np.save(tmp_path / "mono.npy", np.zeros(300, np.float32))
    r = cli(["infer", FOREIGN / "signal_128x3.tflite", tmp_path / "mono.npy"])
    assert r.exit_code == 1 and "has shape (300,); expected 3 channels" in r.stderr


def test_dynamic_length_model(cli, tmp_path):
    model = FOREIGN / "audio_dynamic_length.tflite"
    rep = cli(["inspect", model, "--json"]).json()
    assert rep["inputs"][0]["shape_signature"] == [-1, -1] and rep["dynamic_inputs"] == [rep["inputs"][0]["name"]]
    np.save(tmp_path / "a.npy", np.ones(5000, np.float32))
    np.save(tmp_path / "b.npy", np.ones(1200, np.float32))
    r = cli(["infer", model, tmp_path, "--json"])  # each file whole: 5000 and 1200 samples
    assert r.exit_code == 0, r.stderr
    assert [x["name"] for x in _lines(r.stdout) if "predictions" in x] == [f"{tmp_path / 'a.npy'}@0", f"{tmp_path / 'b.npy'}@0"]
    r = cli(["infer", model, tmp_path / "a.npy", "--window", "2000", "--json"])
    assert [x["name"] for x in _lines(r.stdout) if "predictions" in x] == [f"{tmp_path / 'a.npy'}@0", f"{tmp_path / 'a.npy'}@2000"]
    r = cli(["infer", model, tmp_path / "a.npy", "--input-shape", "1,2500", "--json"])
    assert len([x for x in _lines(r.stdout) if "predictions" in x]) == 2
    r = cli(["infer", model, "-"])
    assert r.exit_code == 2 and "pass --window N" in r.stderr
    r = cli(["bench", model, "--input-shape", "1,16000", "--runs", "5", "--json"])
    assert r.exit_code == 0, r.stderr and r.json()["rows"][0]["input"] == [[1, 16000]]
    assert r.json()["rows"][0]["input"] == [[1, 16000]]
    r = cli(["infer", model, tmp_path / "a.npy", "--input-shape", "1,x"])
    assert r.exit_code == 2 and "--input-shape '1,x' is not a list of integers" in r.stderr


# --------------------------------------------------------------------------- MediaPipe's own models


def test_mediapipe_models(cli, mediapipe_models, pictures):
    custom = mediapipe_models / "face_landmark_with_attention.tflite"
    r = cli(["infer", custom, pictures["rgb"]])
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"Error: ai_edge_litert cannot run {custom}: it uses the custom operator Landmarks2TransformMatrix. "
                                "Fix: MediaPipe's custom op: run the model with MediaPipe (pip install mediapipe)")
    rep = cli(["inspect", custom, "--json"])
    assert rep.exit_code == 0 and rep.json()["runnable"] is False
    assert rep.json()["custom_operators"] == ["Landmarks2TransformMatrix", "TransformLandmarks", "TransformTensorBilinear"]

    face = mediapipe_models / "face_detection_short_range.tflite"
    rep = cli(["inspect", face, "--json"]).json()
    assert rep["tflite_metadata"]["mean"] == [127.5] and rep["tflite_metadata"]["name"] == "Short Range Face Detection"
    r = cli(["infer", face, pictures["rgb"], "--json"])  # neither classifier nor detector: its outputs as tensors
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert {k: np.asarray(v).shape for k, v in rec["outputs"].items()} == {"raw boxes/keypoints": (896, 16), "scores": (896, 1)}
    r = cli(["infer", face, pictures["rgb"], "--task", "classify"])
    assert r.exit_code == 2 and "is not a classifier: its first output regressors has shape [1, 896, 16]" in r.stderr
    r = cli(["bench", face, "--runs", "5", "--json"])
    assert r.exit_code == 0 and r.json()["rows"][0]["latency_ms"]["median"] > 0

    hand = mediapipe_models / "hand_landmark_lite.tflite"  # labels packed in the model: handedness.txt
    rep = cli(["inspect", hand, "--json"]).json()
    assert rep["tflite_metadata"]["label_file"] == "handedness.txt" and rep["tflite_metadata"]["labels"] == 2


# --------------------------------------------------------------------------- custom operators and delegates


def _with_custom_op(src: Path, dst: Path, code: str) -> Path:
    from mltool._tf import import_tensorflow

    import_tensorflow()
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    model.operatorCodes[0].builtinCode = 32  # CUSTOM
    model.operatorCodes[0].deprecatedBuiltinCode = 32
    model.operatorCodes[0].customCode = code
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return dst


def test_edgetpu_model_names_what_it_needs(cli, pictures, tmp_path):
    model = _with_custom_op(FOREIGN / "classifier_plain_float.tflite", tmp_path / "m_edgetpu.tflite", "edgetpu-custom-op")
    r = cli(["infer", model, pictures["rgb"], "--mean", "0", "--std", "255"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "it uses the custom operator edgetpu-custom-op" in r.stderr and "--delegate libedgetpu.so.1" in r.stderr
    r = cli(["bench", model, "--runs", "3"])
    assert r.exit_code == 1 and "edgetpu-custom-op" in r.stderr and "Traceback" not in r.stderr


DELEGATE_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* TfLiteDelegate as in tensorflow/lite/core/c/common.h */
typedef struct Delegate { void* data_; int (*Prepare)(void*, struct Delegate*); void* copy_from; void* copy_to;
                          void* free_handle; int64_t flags; void* opaque_builder; } Delegate;
static void note(const char* what) { FILE* f = fopen(getenv("TEST_DELEGATE_LOG"), "a"); fputs(what, f); fclose(f); }
static int prepare(void* context, Delegate* d) { note("prepare\n"); return 0; }  /* claims no node: all stay on CPU */
Delegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n, void (*report_error)(const char*)) {
  for (size_t i = 0; i < n; i++) {
    char line[256]; snprintf(line, sizeof line, "option %s=%s\n", keys[i], values[i]); note(line);
    if (!strcmp(keys[i], "fail")) { report_error("the test delegate was told to fail"); return NULL; }
  }
  Delegate* d = calloc(1, sizeof(Delegate)); d->Prepare = prepare; return d;
}
void tflite_plugin_destroy_delegate(Delegate* d) { free(d); }
"""


@pytest.fixture(scope="session")
def test_delegate(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("delegate")
    (d / "delegate.c").write_text(DELEGATE_C)
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the test delegate") if os.environ.get("CI") else pytest.skip("no gcc")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "libtestdelegate.so"), str(d / "delegate.c")], check=True)
    return d / "libtestdelegate.so"


def test_external_delegate_is_loaded_with_its_options(cli, test_delegate, pictures, tmp_path, monkeypatch):
    log = tmp_path / "delegate.log"
    monkeypatch.setenv("TEST_DELEGATE_LOG", str(log))
    model = FOREIGN / "classifier_tfhub_style.tflite"
    plain = _lines(cli(["infer", model, pictures["rgb"], "--json"]).stdout)[0]["predictions"]
    r = cli(["infer", model, pictures["rgb"], "--delegate", test_delegate, "--delegate-option", "device=usb",
             "--delegate-option", "cache=/tmp/x", "--json"])
    assert r.exit_code == 0, r.stderr
    assert _lines(r.stdout)[0]["predictions"] == plain  # the delegate took no node: same answers
    assert log.read_text().splitlines() == ["option device=usb", "option cache=/tmp/x", "prepare"]
    assert f"delegate {test_delegate}" in r.stderr
    r = cli(["bench", model, "--delegate", test_delegate, "--runs", "3", "--json"])
    assert r.exit_code == 0, r.stderr
    r = cli(["infer", model, pictures["rgb"], "--delegate", test_delegate, "--delegate-option", "fail=1"])
    assert r.exit_code == 1 and f"Error: cannot load delegate {test_delegate}" in r.stderr and "Traceback" not in r.stderr
    proc = subprocess.run([sys.executable, "-m", "mltool", "infer", str(model), str(pictures["rgb"]), "--delegate", "libedgetpu.so.1"],
                          capture_output=True, text=True, timeout=60)  # a real process: nothing printed at exit either
    assert proc.returncode == 1 and proc.stderr.startswith("Error: cannot load delegate libedgetpu.so.1")
    assert "apt install libedgetpu1-std" in proc.stderr and proc.stderr.count("\n") == 1
    r = cli(["infer", model, pictures["rgb"], "--delegate-option", "novalue"])
    assert r.exit_code == 2 and "--delegate-option 'novalue' is not KEY=VALUE" in r.stderr


def test_runtime_errors_are_one_line(cli, pictures):
    # a shape the model cannot take: the runtime refuses at allocation
    r = cli(["infer", FOREIGN / "classifier_tfhub_style.tflite", pictures["rgb"], "--input-shape", "1,2,2,3"])
    assert r.exit_code == 1 and r.stderr.count("Error:") == 1 and "Traceback" not in r.stderr
    assert "could not allocate tensors for" in r.stderr and "with --input-shape 1,2,2,3" in r.stderr
    assert "give a shape that fits the model's signature -1,32,32,3" in r.stderr
    r = cli(["infer", FOREIGN / "classifier_tfhub_style.tflite", pictures["rgb"], "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.stderr


def test_serve_takes_the_delegate_too(test_delegate, pictures, tmp_path):
    import requests

    from tests.serve_process import ServeProcess

    log = tmp_path / "delegate.log"
    model = FOREIGN / "classifier_tfhub_style.tflite"
    s = ServeProcess([model, "--delegate", test_delegate, "--delegate-option", "device=usb"], log=tmp_path / "serve.log",
                     env={"TEST_DELEGATE_LOG": str(log)})
    try:
        r = requests.post(f"{s.url}/api/image", data=pictures["rgb"].read_bytes(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and {p["label"] for p in r.json()["predictions"]} <= {"cat", "dog", "bird", "fish", "horse"}
    finally:
        s.stop()
    assert "option device=usb" in log.read_text().splitlines() and "prepare" in log.read_text()
