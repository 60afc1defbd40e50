"""`--camera` means the device's camera: a libcamera camera through picamera2 when one is attached,
else the first V4L2 webcam. Pi OS's camera stack cannot run here: tests/fake_picamera2 stands in
for it (documented API and byte orders, a real photo as frames); everything else is real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mltool.runtime.sources.camera import choose_camera, picamera_rgb
from tests.conftest import REPO

FAKE = REPO / "tests" / "fake_picamera2"


def fake_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKE), str(REPO)]), "COLUMNS": "100",
            "FAKE_PICAMERA2_LOG": str(tmp_path / "camera.log"), **extra}


def run(args: list, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltool", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def red_square(path: Path) -> Path:
    img = np.full((240, 320, 3), 128, np.uint8)
    img[20:100, 20:100] = (255, 0, 0)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def fake_picamera2(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    for mod in ("picamera2", "libcamera"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield
    for mod in ("picamera2", "libcamera"):
        sys.modules.pop(mod, None)


# --------------------------------------------------------------------------- formats and colours


@pytest.mark.parametrize("fmt,memory", [("RGB888", [0, 0, 255]), ("BGR888", [255, 0, 0]),
                                        ("XBGR8888", [255, 0, 0, 255]), ("XRGB8888", [0, 0, 255, 255])])
def test_every_picamera2_format_reads_as_rgb(fmt, memory):
    # picamera2 manual, "Image formats": a pure red pixel in each format, as capture_array() returns it
    arr = np.zeros((2, 3, len(memory)), np.uint8)
    arr[:] = memory
    rgb = picamera_rgb(arr, fmt)
    assert rgb.shape == (2, 3, 3) and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [255, 0, 0]


def test_yuv420_and_unknown_formats():
    import cv2

    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[:] = (0, 0, 255)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    r, g, b = picamera_rgb(yuv, "YUV420")[0, 0].tolist()
    assert r > 200 and g < 60 and b < 60
    from mltool.errors import DataError

    with pytest.raises(DataError, match="format SRGGB10"):
        picamera_rgb(np.zeros((2, 2, 3), np.uint8), "SRGGB10")


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XBGR8888", "XRGB8888"])
def test_red_stays_red_in_what_the_model_is_fed_and_in_the_annotated_picture(fake_picamera2, fire_models, tmp_path,
                                                                              monkeypatch, fmt):
    from mltool.runtime.predictor import Predictor
    from mltool.runtime.sources.camera import PiCameraReader
    from mltool.runtime.sources.frames import Frame

    monkeypatch.setenv("FAKE_PICAMERA2_IMAGE", str(red_square(tmp_path / "red.png")))
    cam = PiCameraReader(0, fmt=fmt)
    try:
        ok, rgb = cam.read()
    finally:
        cam.release()
    assert ok and rgb.shape == (480, 640, 3)
    assert rgb[80, 80].tolist() == [255, 0, 0] and rgb[400, 600].tolist() == [128, 128, 128]
    p = Predictor(fire_models["int8"])
    x = p.prepare(Frame(0, "cam", 0.0, image=rgb))[0]  # the int8 tensor, 64x64x3
    red = x[5:15, 5:15].reshape(-1, 3).astype(int).mean(axis=0)
    assert red[0] > red[1] + 50 and red[0] > red[2] + 50, red
    bgr = p.predict_frame(Frame(0, "cam", 0.0, image=rgb)).annotated()
    assert bgr[80, 80].tolist() == [0, 0, 255]  # annotated pictures are BGR for OpenCV: red is (0, 0, 255)


# --------------------------------------------------------------------------- which camera


def _sysfs(tmp_path: Path, nodes: dict[str, tuple[str, str, str]]) -> Path:
    """A /sys/class/video4linux tree: name -> (card name, index, device path)."""
    root = tmp_path / "video4linux"
    for node, (name, index, device) in nodes.items():
        d = root / node
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "index").write_text(index + "\n")
        target = tmp_path / "devices" / device
        target.mkdir(parents=True, exist_ok=True)
        (d / "device").symlink_to(target)
    return root


PI5_WITH_WEBCAM = {  # a Pi 5's SoC nodes, then a USB webcam's capture and metadata nodes
    "video0": ("rp1-cfe", "0", "platform/1f00110000.csi"),
    "video19": ("pispbe", "0", "platform/1000880000.pisp_be"),
    "video20": ("rpi-hevc-dec", "0", "platform/rpi-hevc-dec"),
    "video21": ("HD Pro Webcam C920", "0", "platform/xhci/usb1/1-1"),
    "video22": ("HD Pro Webcam C920", "1", "platform/xhci/usb1/1-1"),
}


def test_camera_prefers_the_libcamera_camera(fake_picamera2, tmp_path):
    c = choose_camera("camera", sysfs=_sysfs(tmp_path, PI5_WITH_WEBCAM))
    assert (c.spec, c.backend, c.name) == ("picamera:0", "libcamera", "imx708")
    assert "libcamera camera 0 attached (imx708)" in c.reason


def test_camera_without_libcamera_takes_the_first_webcam_not_a_soc_node(fake_picamera2, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_CAMERAS", "[]")
    c = choose_camera("camera", sysfs=_sysfs(tmp_path, PI5_WITH_WEBCAM))
    assert (c.spec, c.backend, c.name) == ("/dev/video21", "v4l2", "HD Pro Webcam C920")
    assert c.reason.startswith("no libcamera camera attached; first V4L2 capture device /dev/video21") and "4 other" in c.reason


def test_camera_module_without_picamera2_says_how_to_get_it(tmp_path, monkeypatch):
    from mltool.errors import DataError

    monkeypatch.setitem(sys.modules, "picamera2", None)  # not importable, as in a venv without system packages
    soc_only = {k: v for k, v in PI5_WITH_WEBCAM.items() if "Webcam" not in v[0]}
    with pytest.raises(DataError) as e:
        choose_camera("camera", sysfs=_sysfs(tmp_path, soc_only))
    line = e.value.one_line()
    assert "/dev/video0, /dev/video19, /dev/video20 belong to a Pi camera module" in line
    assert "sudo apt install -y python3-picamera2" in line
    assert choose_camera("2", sysfs=_sysfs(tmp_path / "x", PI5_WITH_WEBCAM)).spec == "2"  # explicit V4L2 still works


def test_explicit_picamera_number_is_checked(fake_picamera2):
    from mltool.errors import ConfigError, DataError

    assert choose_camera("picamera:0").spec == "picamera:0"
    with pytest.raises(DataError, match=r"no libcamera camera 1 \(attached: picamera:0 \(imx708\)\)"):
        choose_camera("picamera:1")
    with pytest.raises(ConfigError, match="is not picamera or picamera:N"):
        choose_camera("picamera:x")


# --------------------------------------------------------------------------- the commands


def test_infer_camera_runs_the_libcamera_camera_and_says_why(fire_models, synth_fire_dir, tmp_path):
    photo = sorted((Path(synth_fire_dir) / "fire").iterdir())[0]
    env = fake_env(tmp_path, FAKE_PICAMERA2_IMAGE=str(photo))
    r = run(["infer", fire_models["int8"], "--camera", "--camera-size", "256x256", "--camera-fps", "20",
             "-n", "3", "--json"], env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    cam = lines[0]
    assert cam["event"] == "camera" and cam["camera"] == "picamera:0" and cam["backend"] == "libcamera"
    assert cam["name"] == "imx708" and cam["size"] == [256, 256] and cam["fps"] == 20
    assert "camera picamera:0 (imx708, libcamera; 256x256, 20.0 fps): libcamera camera 0 attached" in r.stderr
    results = [ln for ln in lines if "predictions" in ln]
    assert len(results) == 3
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["camera"]["backend"] == "libcamera"
    asked = json.loads((tmp_path / "camera.log").read_text().splitlines()[0])
    assert asked["size"] == [256, 256] and asked["controls"]["FrameDurationLimits"] == [50000, 50000]
    # the camera gives the answer the photo gives as a file
    f = run(["infer", fire_models["int8"], photo, "--json"], env)
    from_file = json.loads(f.stdout.splitlines()[0])["predictions"][0]["label"]
    assert {r["predictions"][0]["label"] for r in results} == {from_file}


def test_camera_transform_turns_the_picture(fire_models, tmp_path):
    import cv2

    env = fake_env(tmp_path, FAKE_PICAMERA2_IMAGE=str(red_square(tmp_path / "red.png")))
    r = run(["infer", fire_models["int8"], "--camera", "--camera-transform", "rot180", "-n", "2", "--save", tmp_path / "out"], env)
    assert r.returncode == 0, r.stderr
    asked = json.loads((tmp_path / "camera.log").read_text().splitlines()[0])
    assert (asked["hflip"], asked["vflip"], asked["format"]) == (1, 1, "RGB888")
    video = next((tmp_path / "out").glob("*_annotated.mp4"))
    ok, bgr = cv2.VideoCapture(str(video)).read()
    assert ok
    h, w = 480, 640
    top_left, bottom_right = bgr[80, 80].astype(int), bgr[h - 81, w - 81].astype(int)
    assert abs(top_left - 128).max() < 30  # grey now
    assert bottom_right[2] > 200 and bottom_right[0] < 60 and bottom_right[1] < 60  # red (BGR) moved there


def test_serve_camera_live_view_names_the_camera_and_keeps_red(serve, fire_models, tmp_path):
    env = fake_env(tmp_path, FAKE_PICAMERA2_IMAGE=str(red_square(tmp_path / "red.png")))
    s = serve(fire_models["int8"], "--camera", "--camera-size", "320x240", env=env)
    assert s.ready["camera"]["camera"] == "picamera:0" and s.ready["live_kind"] == "picamera"
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{s.url}/snapshot.jpg", timeout=10) as resp:
                jpeg = resp.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    import cv2

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape[1] == 320
    b, g, r = bgr[60, 60].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert "camera picamera:0 (imx708, libcamera)" in s.stderr


def test_doctor_lists_the_cameras(tmp_path):
    r = run(["doctor", "--json", "--no-camera-probe"], fake_env(tmp_path))
    rep = json.loads(r.stdout)
    assert rep["libcamera"] == [{"num": 0, "model": "imx708", "id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
                                 "location": 2, "rotation": 180}]
    assert rep["camera"]["camera"] == "picamera:0" and rep["picamera2"] is not None
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["cameras (libcamera)"]["detail"] == "picamera:0 imx708 (external, rotation 180)"
    assert checks["--camera"]["detail"].startswith("picamera:0 (imx708, libcamera)")


def test_a_bad_transform_is_refused_before_the_model_loads(cli):
    r = cli(["infer", "nonexistent.tflite", "--camera", "--camera-transform", "upside-down"])
    assert r.exit_code == 2 and "--camera-transform 'upside-down' is not a transform" in r.stderr


def test_camera_errors(cli, fire_models, tmp_path):
    r = cli(["infer", fire_models["int8"], "--camera", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "no camera found" in r.stderr and "python3-picamera2" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli(["infer", fire_models["int8"], "--camera", "--camera-size", "640by480"])
    assert r.exit_code == 2 and "--camera-size '640by480' is not WIDTHxHEIGHT" in r.stderr
    r = cli(["infer", fire_models["int8"], "--camera", "--camera-fps", "0"])
    assert r.exit_code == 2 and "--camera-fps 0 is out of range" in r.stderr
    img = red_square(tmp_path / "a.png")
    r = cli(["infer", fire_models["int8"], img, "--camera-size", "640x480"])
    assert r.exit_code == 2 and "apply to cameras" in r.stderr
