"""YOLO detectors (every Ultralytics output convention) and raw-tensor models, end to end.

The fixtures (tests/yolo_models.py) are tiny Keras models whose outputs are known functions of
the input, so the boxes after letterbox, NMS and un-letterbox are known to the pixel: through
`infer`, the Python Predictor, `serve` (every protocol) and MQTT.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.yolo_models import BLUE_MEAN, RED_MEAN, append_zip, expected

# model -> (family, labels from its metadata, pixel tolerance, score tolerance)
LAYOUTS = {
    "v8_nhwc": ("YOLO v8/v9/11", True, 0.05, 1e-3),
    "v8_nchw": ("YOLO v8/v9/11", True, 0.05, 1e-3),
    "v8_pixels_nometa": ("YOLO v8/v9/11", False, 0.05, 1e-3),
    "v5_nhwc": ("YOLOv5", True, 0.05, 1e-3),
    "e2e_nhwc_legacy": ("YOLO end-to-end", True, 0.05, 1e-3),
    "e2e_nchw_pixels": ("YOLO end-to-end", True, 0.05, 1e-3),
    "v8_int8": ("YOLO v8/v9/11", False, 1.0, 0.02),
    "v8_int8_float_io": ("YOLO v8/v9/11", False, 1.0, 0.02),
    "v8_dynamic": ("YOLO v8/v9/11", False, 0.5, 0.01),
    "v8_float16": ("YOLO v8/v9/11", False, 0.05, 2e-3),
}


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


def _picture(path: Path, width: int, height: int, rgb=(255, 0, 0)) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), rgb).save(path)
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("yolo_pics")
    return {"landscape": _picture(d / "red.png", 320, 240), "portrait": _picture(d / "red_tall.png", 240, 320),
            "green": _picture(d / "green.png", 320, 240, (0, 255, 0))}


def _pixels(det: dict, w: int, h: int) -> tuple[float, ...]:
    y0, x0, y1, x1 = det["box"]
    return (x0 * w, y0 * h, x1 * w, y1 * h)


def _check(dets: list[dict], want: list[tuple[str, str, float]], w: int, h: int, tol_px: float, tol_score: float,
           named: bool = True) -> None:
    """``want``: (box key, label, score) in the order NMS gives them."""
    boxes = expected(w, h)
    names = {"red": 0, "green": 1, "blue": 2}
    assert [d["class"] for d in dets] == [names[lab] for _k, lab, _s in want], dets
    assert [d["label"] for d in dets] == [lab if named else str(names[lab]) for _k, lab, _s in want]
    for d, (key, _lab, score) in zip(dets, want):
        assert d["score"] == pytest.approx(score, abs=tol_score)
        assert _pixels(d, w, h) == pytest.approx(boxes[key], abs=tol_px), (key, _pixels(d, w, h), boxes[key])


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_layout_gives_the_known_boxes(cli, yolo_models, pictures, name):
    family, named, tol_px, tol_score = LAYOUTS[name]
    for shape, (w, h) in (("landscape", (320, 240)), ("portrait", (240, 320))):
        r = cli(["infer", yolo_models[name], pictures[shape], "--json"])
        assert r.exit_code == 0, r.stderr
        (rec, summary) = _lines(r.stdout)
        # A (red) and C (green, overlapping A but another class); B lost to A in NMS; D (blue) under 0.25
        _check(rec["detections"], [("A", "red", RED_MEAN), ("C", "green", 0.9 * RED_MEAN)], w, h, tol_px, tol_score, named)
        assert f"detection, {family})" in r.stderr and summary["frames"] == 1


def test_nms_options_threshold_and_clipping(cli, yolo_models, pictures):
    m, pic = yolo_models["v8_nhwc"], pictures["landscape"]

    def dets(*args):
        r = cli(["infer", m, pic, "--json", *args])
        assert r.exit_code == 0, r.stderr
        return _lines(r.stdout)[0]["detections"]

    _check(dets("--agnostic"), [("A", "red", RED_MEAN)], 320, 240, 0.05, 1e-3)  # C overlaps A by IoU 0.87
    _check(dets("--iou", "0.8"), [("A", "red", RED_MEAN), ("C", "green", 0.9 * RED_MEAN), ("B", "red", 0.8 * RED_MEAN)],
           320, 240, 0.05, 1e-3)  # B overlaps A by IoU 0.75
    _check(dets("--max-det", "1"), [("A", "red", RED_MEAN)], 320, 240, 0.05, 1e-3)
    _check(dets("--score-threshold", "0.1"), [("A", "red", RED_MEAN), ("C", "green", 0.9 * RED_MEAN), ("D", "blue", BLUE_MEAN)],
           320, 240, 0.05, 1e-3)
    r = cli(["infer", m, pictures["portrait"], "--json", "--score-threshold", "0.1"])
    d = _lines(r.stdout)[0]["detections"][2]
    assert d["label"] == "blue" and _pixels(d, 240, 320) == pytest.approx((180, 150, 240, 250), abs=0.05)  # clipped at x 240
    r = cli(["infer", m, pictures["green"], "--json"])  # no red: nothing scores 0.25
    assert _lines(r.stdout)[0]["detections"] == []
    for args, message in ((["--iou", "1.5"], "--iou 1.5 is not between 0 and 1"), (["--max-det", "0"], "--max-det 0 must be at least 1"),
                          (["--score-threshold", "2"], "--score-threshold 2.0 is not between 0 and 1")):
        r = cli(["infer", m, pic, *args])
        assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_annotated_output_is_drawn_at_the_boxes(cli, yolo_models, pictures, tmp_path):
    import cv2

    r = cli(["infer", yolo_models["v8_nchw"], pictures["landscape"], "--save", tmp_path / "out", "--json"])
    assert r.exit_code == 0, r.stderr
    img = cv2.imread(str(tmp_path / "out" / "red.jpg"))  # BGR; the text strip goes below the picture
    assert img.shape[1] == 320 and img.shape[0] > 240
    assert int(img[90:110, 200, 1].min()) > 120  # on A's right edge (x 200): a green line (1 px, blurred by JPEG)
    assert int(img[90:110, 195, 1].max()) < 60  # beside it, inside the box: red
    b, g, r = (int(v) for v in img[100, 120])  # inside the boxes: the red picture
    assert r > 200 and g < 60, (b, g, r)
    saved = _lines((tmp_path / "out" / "predictions.jsonl").read_text())
    assert [d["label"] for d in saved[0]["detections"]] == ["red", "green"]


def test_python_predictor(yolo_models, detector):
    from mltool import Predictor

    p = Predictor(yolo_models["v8_nchw"])
    assert p.family.label == "YOLO v8/v9/11" and p.score_threshold == 0.25 and p.input.layout == "NCHW"
    assert p.labels.names == ["red", "green", "blue"]
    assert "84 = the grid cells of strides 8/16/32 at 64x64" in p.describe()["evidence"]
    red = np.zeros((240, 320, 3), np.uint8)
    red[..., 0] = 255
    res = p(red)
    assert [(d.label, d.pixels(320, 240)) for d in res.detections] == [("red", (40, 40, 200, 160)), ("green", (45, 45, 205, 165))]
    assert res.top.label == "red" and res.task == "detection"
    assert res.annotated()[:240].shape == (240, 320, 3) and res.annotated()[100, 200, 1] == 255  # A's right edge, green
    # boxes for a tensor fed directly (no picture): relative to the input itself
    (_c, dets, _a) = p.decode(p.model.run_prepared(p.input.image(red)))
    assert dets[0].pixels(64, 64) == (8, 16, 40, 40)
    assert Predictor(detector, mean=[0], std=[255]).score_threshold == 0.5  # SSD keeps its default
    assert Predictor(yolo_models["v8_nchw"], iou=0.8)(red).detections[2].label == "red"


def test_names_come_from_the_model_itself(cli, yolo_models, pictures, tmp_path):
    rep = cli(["inspect", yolo_models["e2e_nhwc_legacy"], "--json"]).json()
    # the legacy temp_meta.txt holds a dict literal: metadata, not a one-line label file
    assert rep["tflite_metadata"]["dict_file"] == "temp_meta.txt" and "labels" not in rep["tflite_metadata"]
    assert rep["ultralytics_metadata"]["names"] == {"0": "red", "1": "green", "2": "blue"}  # int keys, as JSON
    assert rep["family"]["evidence"].endswith("metadata from temp_meta.txt")
    for name, file in (("v8_nhwc", "metadata.json"), ("v5_nhwc", "meta.txt")):
        rep = cli(["inspect", yolo_models[name], "--json"]).json()
        assert rep["family"]["evidence"].endswith(f"metadata from {file}") and rep["problems"] == []
    # a --labels file still wins
    (tmp_path / "l.txt").write_text("rouge\nvert\nbleu\n")
    r = cli(["infer", yolo_models["v8_nhwc"], pictures["landscape"], "--labels", tmp_path / "l.txt", "--json"])
    assert [d["label"] for d in _lines(r.stdout)[0]["detections"]] == ["rouge", "vert"]


def test_hostile_metadata_is_never_run(cli, yolo_models, pictures, tmp_path):
    canary = tmp_path / "ran"
    code = f"{{'names': __import__('os').system('touch {canary}')}}"
    for file in ("metadata.json", "temp_meta.txt", "meta.txt"):
        model = tmp_path / f"evil_{file}.tflite"
        model.write_bytes(append_zip(yolo_models["v8_pixels_nometa"].read_bytes(), {file: code}))
        r = cli(["infer", model, pictures["landscape"], "--json"])
        assert r.exit_code == 0, r.stderr
        assert [d["label"] for d in _lines(r.stdout)[0]["detections"]] == ["0", "1"]
        assert f"{file} packed in the model is not a JSON object or dict literal: ignored" in r.stderr
    assert not canary.exists()


def test_inspect_family_and_quantization_scheme(cli, yolo_models, detector):
    schemes = {"v8_nhwc": "float32", "v8_float16": "float16 weights", "v8_dynamic": "dynamic range (int8 weights, float activations)",
               "v8_int8_float_io": "full integer with float I/O", "v8_int8": "full integer with integer I/O"}
    for name, scheme in schemes.items():
        r = cli(["inspect", yolo_models[name], "--json"])
        assert r.exit_code == 0, r.stderr
        assert r.json()["quantization_scheme"]["scheme"] == scheme
        assert f"quantization: {scheme} (" in r.stderr
    families = {"v5_nhwc": ("YOLOv5", "252 = 3 anchors x the grid cells"), "e2e_nchw_pixels": ("YOLO end-to-end", "the metadata says end2end"),
                "e2e_nhwc_legacy": ("YOLO end-to-end", "10 rows of 6 (x1, y1, x2, y2, score, class)"),
                "multi": ("raw", "not class scores, SSD or YOLO"), "regression": ("raw", "a regression value")}
    for name, (family, evidence) in families.items():
        fam = cli(["inspect", yolo_models[name], "--json"]).json()["family"]
        assert fam["family"] == family and evidence in fam["evidence"], fam
    fam = cli(["inspect", detector, "--json"]).json()["family"]
    assert fam["family"] == "SSD" and "boxes = output" in fam["evidence"]


def test_raw_outputs_json_save_and_tasks(cli, yolo_models, pictures, tmp_path):
    r = cli(["infer", yolo_models["regression"], pictures["landscape"].parent, "--mean", "0", "--std", "255", "--json",
             "--save", tmp_path / "out"])
    assert r.exit_code == 0, r.stderr
    recs = [x for x in _lines(r.stdout) if "outputs" in x]
    assert [(Path(x["name"]).name, x["value"]) for x in recs] == [("green.png", 1.0), ("red.png", 3.0), ("red_tall.png", 3.0)]
    assert recs[1]["outputs"] == {"output_0": [3.0]} and ": value 3  (" in r.stderr  # 2 x red mean + 1
    assert np.load(tmp_path / "out" / "red.npy").tolist() == [3.0] and np.load(tmp_path / "out" / "green.npy").tolist() == [1.0]

    r = cli(["infer", yolo_models["multi"], pictures["landscape"], "--mean", "0", "--std", "255", "--json", "--save", tmp_path / "m"])
    rec = _lines(r.stdout)[0]
    assert rec["outputs"] == {"grid": [[2.0, 2.0], [2.0, 2.0]], "means": [1.0, 0.0, 0.0]} and "value" not in rec
    assert np.load(tmp_path / "m" / "red.grid.npy").tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert np.load(tmp_path / "m" / "red.means.npy").tolist() == [1.0, 0.0, 0.0]

    r = cli(["infer", yolo_models["v8_nhwc"], pictures["landscape"], "--task", "raw", "--json"])
    out = _lines(r.stdout)[0]["outputs"]
    assert list(out) == ["output_0"] and np.asarray(out["output_0"]).shape == (7, 84)
    assert out["output_0"][4][0] == pytest.approx(RED_MEAN, abs=1e-5)  # anchor 0, class 0: A's score
    r = cli(["infer", yolo_models["multi"], pictures["landscape"], "--mean", "0", "--std", "255", "--task", "detect"])
    assert r.exit_code == 2 and "is not a detector mltool can decode: outputs" in r.stderr and "--task raw" in r.stderr
    r = cli(["infer", yolo_models["multi"], pictures["landscape"], "--task", "nope"])
    assert r.exit_code == 2 and "use auto, classify, detect or raw" in r.stderr


def test_serve_answers_yolo_boxes_on_every_protocol(serve, yolo_models, pictures):
    s = serve(yolo_models["v8_nchw"], "--name", "yolo")
    data = pictures["landscape"].read_bytes()
    up = requests.post(f"{s.url}/api/image", files={"file": ("red.png", data)}).json()
    assert up["task"] == "detection" and (up["width"], up["height"]) == (320, 240)
    assert [(d["label"], d["pixels"]) for d in up["detections"]] == [
        ("red", {"x": 40, "y": 40, "width": 160, "height": 120}), ("green", {"x": 45, "y": 45, "width": 160, "height": 120})]
    b64 = base64.b64encode(data).decode()
    oip = requests.post(f"{s.url}/v2/models/yolo/infer",
                        json={"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]}).json()
    by = {o["name"]: o for o in oip["outputs"]}
    assert by["label"]["data"] == ["red", "green"] and by["box"]["shape"] == [1, 2, 4]
    assert np.asarray(by["box"]["data"][:4]) * [240, 320, 240, 320] == pytest.approx([40, 40, 160, 200], abs=0.05)
    tfs = requests.post(f"{s.url}/v1/models/yolo:predict", json={"instances": [{"b64": b64}]}).json()
    assert tfs["predictions"][0]["labels"] == ["red", "green"] and tfs["predictions"][0]["scores"][0] == pytest.approx(RED_MEAN, abs=1e-3)
    flash = requests.post(f"{s.url}/predict", json={"payload": {"inputs": {"data": b64}}}).json()
    assert flash["result"]["outputs"] == "red"
    # a raw NCHW tensor (x / 255 already applied): boxes relative to the input
    x = np.full((1, 3, 64, 64), 114 / 255, np.float32)
    x[0, 0, 8:56] = 1.0
    x[0, 1:, 8:56] = 0.0
    oip = requests.post(f"{s.url}/v2/models/yolo/infer",
                        json={"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}).json()
    by = {o["name"]: o for o in oip["outputs"]}
    assert by["label"]["data"] == ["red", "green"] and np.asarray(by["box"]["data"][:4]) * 64 == pytest.approx([16, 8, 40, 40], abs=0.01)


def test_serve_raw_model_answers_tensors(serve, yolo_models, pictures):
    s = serve(yolo_models["multi"], "--name", "m", "--mean", "0", "--std", "255")
    data = pictures["landscape"].read_bytes()
    b64 = base64.b64encode(data).decode()
    up = requests.post(f"{s.url}/api/image", data=data, headers={"Content-Type": "image/png"}).json()
    assert up["task"] == "raw" and up["outputs"] == {"grid": [[2.0, 2.0], [2.0, 2.0]], "means": [1.0, 0.0, 0.0]}
    flash = requests.post(f"{s.url}/predict", json={"session": "s1", "payload": {"inputs": {"data": b64}}}).json()
    assert flash == {"session": "s1", "result": {"outputs": {"grid": [[2.0, 2.0], [2.0, 2.0]], "means": [1.0, 0.0, 0.0]}},
                     "release": flash["release"]}
    oip = requests.post(f"{s.url}/v2/models/m/infer",
                        json={"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": [b64, b64]}]}).json()
    assert {o["name"]: (o["shape"], o["data"][:3]) for o in oip["outputs"]} == {"grid": ([2, 2, 2], [2.0, 2.0, 2.0]),
                                                                            "means": ([2, 3], [1.0, 0.0, 0.0])}
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[..., 1] = 0.5
    oip = requests.post(f"{s.url}/v2/models/m/infer",
                        json={"inputs": [{"name": "images", "shape": [1, 8, 8, 3], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}).json()
    assert {o["name"]: o["data"] for o in oip["outputs"]} == {"grid": [1.0] * 4, "means": [0.0, 0.5, 0.0]}
    tfs = requests.post(f"{s.url}/v1/models/m:predict", json={"instances": x.tolist()}).json()
    assert tfs == {"predictions": [{"grid": [[1.0, 1.0], [1.0, 1.0]], "means": [0.0, 0.5, 0.0]}]}
    tfs = requests.post(f"{s.url}/v1/models/m:predict", json={"instances": [{"b64": b64}]}).json()
    assert tfs == {"predictions": [{"grid": [[2.0, 2.0], [2.0, 2.0]], "means": [1.0, 0.0, 0.0]}]}


def test_mqtt_state_carries_raw_outputs_and_yolo_objects(cli, mosquitto, yolo_models, pictures, tmp_path):
    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["r/#"])
    r = cli(["infer", yolo_models["regression"], pictures["landscape"], "--mean", "0", "--std", "255",
             "--mqtt", broker.url("r"), "--mqtt-device", "reg", "--mqtt-outbox", str(tmp_path / "o.sqlite")])
    assert r.exit_code == 0, r.stderr
    r = cli(["infer", yolo_models["v8_nhwc"], pictures["landscape"],
             "--mqtt", broker.url("r"), "--mqtt-device", "yolo", "--mqtt-outbox", str(tmp_path / "o2.sqlite")])
    assert r.exit_code == 0, r.stderr
    assert sub.wait_for(lambda ms: sum(m.topic.endswith("/available") and m.payload == b"stopped" for m in ms) == 2)
    state = sub.json("r/reg/state")[-1]
    assert state["value"] == 3.0 and state["outputs"] == {"output_0": [3.0]} and state["top"] is None
    state = sub.json("r/yolo/state")[-1]
    assert state["objects"] == {"red": 1, "green": 1} and state["top"] == {"label": "red", "score": round(RED_MEAN, 4)}
    new = [e for e in sub.json("r/yolo/events") if e["type"] == "new"]
    assert sorted(e["class"] for e in new) == ["green", "red"]
    red = next(e for e in new if e["class"] == "red")
    assert np.asarray(red["boxes"][0]) * [240, 320, 240, 320] == pytest.approx([40, 40, 160, 200], abs=0.05)


def test_a_channels_first_classifier_runs(cli, pictures, tmp_path):
    """NCHW is not only for YOLO: any image model that declares 3 channels first."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    inp = keras.Input((3, 16, 24))
    means = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(inp)
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(3, use_bias=False, kernel_initializer="identity")(means * 10)))
    path = tmp_path / "nchw_classifier.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    r = cli(["infer", path, pictures["green"], "--mean", "0", "--std", "255", "--json"])
    assert r.exit_code == 0, r.stderr
    assert _lines(r.stdout)[0]["predictions"][0]["index"] == 1 and "input [1, 3, 16, 24] float32" in r.stderr
