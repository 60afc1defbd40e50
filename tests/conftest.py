"""Shared fixtures. Training fixtures are session-scoped so each tiny model is trained once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Emulated-Pi tests are opt-in (`pytest -m pi`): each builds a Pi OS rootfs (~10 minutes)."""
    if "pi" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="emulated Raspberry Pi OS: opt-in with `pytest -m pi` (builds rootfs, ~10 min each)")
    for item in items:
        if "pi" in item.keywords:
            item.add_marker(skip)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self):
        return json.loads(self.stdout)


def invoke(args: list[str], env: dict[str, str] | None = None) -> CliResult:
    """Run mltool in-process through Typer's CliRunner with stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from mltool.cli import app

    runner = CliRunner(env={"COLUMNS": "100", **(env or {})})
    r = runner.invoke(app, [str(a) for a in args])
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return CliResult(r.exit_code, r.stdout, r.stderr, exc)


@pytest.fixture
def cli():
    return invoke


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION_DIR} is missing in CI: scripts/setup.sh should install dataset-fashion-mnist")
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never read or write the developer's ~/.mltool or ~/.keras from tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MLTOOL_HOME", str(home / ".mltool"))
    monkeypatch.setenv("KERAS_HOME", str(home / ".keras"))
    monkeypatch.delenv("MLTOOL_DATA", raising=False)
    monkeypatch.delenv("MLTOOL_DEBUG", raising=False)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A digits model trained once through the CLI (real data, ~10 s)."""
    project = tmp_path_factory.mktemp("runs")
    r = invoke(["train", "digits", "--epochs", "12", "--project", project, "--json"])
    assert r.exit_code == 0, r.stderr
    return Path(r.json()["run_dir"])


@pytest.fixture(scope="session")
def synth_fire_dir(tmp_path_factory) -> Path:
    from mltool.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "fire"
    synthesize("fire", out, per_class=40, seed=3)
    return out


@pytest.fixture(scope="session")
def synth_ecg_dir(tmp_path_factory) -> Path:
    from mltool.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "ecg"
    synthesize("ecg", out, per_class=100, seed=4)
    return out


@pytest.fixture(scope="session")
def converted_digits(digits_run, tmp_path_factory) -> dict:
    """The digits run converted in every mode once (--json output of `mltool convert`)."""
    out = tmp_path_factory.mktemp("converted")
    r = invoke(["convert", digits_run, "--quantize", "all", "--out", out, "--json"])
    assert r.exit_code == 0, r.stderr
    return r.json()


@pytest.fixture(scope="session")
def foreign_models(tmp_path_factory) -> dict:
    """Models converted with plain tf.lite.TFLiteConverter (no mltool metadata): uint8 I/O,
    and two inputs."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras
    import numpy as np

    out = tmp_path_factory.mktemp("foreign")
    keras.utils.set_random_seed(1)
    single = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                               keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    conv = tf.lite.TFLiteConverter.from_keras_model(single)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 6, 6, 1), dtype=np.float32)] for _ in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    (out / "uint8_io.tflite").write_bytes(conv.convert())

    a, b = keras.Input((4,), name="left"), keras.Input((3,), name="right")
    merged = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    two = keras.Model([a, b], merged)
    (out / "two_inputs.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(two).convert())
    return {"uint8": out / "uint8_io.tflite", "two": out / "two_inputs.tflite", "dir": out}


@pytest.fixture(scope="session")
def fire_models(synth_fire_dir, tmp_path_factory) -> dict:
    """A fire model trained on the synthetic set, converted to int8 (int8 I/O) and uint8 I/O."""
    project = tmp_path_factory.mktemp("fire_runs")
    r = invoke(["train", "fire", "--data", synth_fire_dir, "--epochs", "6", "--project", project, "--json"])
    assert r.exit_code == 0, r.stderr
    run = Path(r.json()["run_dir"])
    models: dict = {"run": run}
    for io in ("int8", "uint8"):
        out = tmp_path_factory.mktemp(f"fire_{io}")
        c = invoke(["convert", run, "-q", "int8", "--io", io, "--out", out, "--json"])
        assert c.exit_code == 0, c.stderr
        models[io] = out / "model_int8.tflite"
    return models


@pytest.fixture(scope="session")
def ecg_model(synth_ecg_dir, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("ecg_runs")
    r = invoke(["train", "ecg", "--data", synth_ecg_dir, "--epochs", "15", "--project", project, "--json"])
    assert r.exit_code == 0, r.stderr
    run = Path(r.json()["run_dir"])
    c = invoke(["convert", run, "-q", "int8", "--json"])
    assert c.exit_code == 0, c.stderr
    return run / "model_int8.tflite"


@pytest.fixture(scope="session")
def fire_video(synth_fire_dir, tmp_path_factory) -> Path:
    """A real MP4 written with OpenCV: 20 fire frames, then 20 ordinary scenes, 320x240 @ 10 fps."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "fire.mp4"
    files = sorted((synth_fire_dir / "fire").glob("*"))[:20] + sorted((synth_fire_dir / "no_fire").glob("*"))[:20]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for f in files:
        w.write(cv2.resize(cv2.imread(str(f)), (320, 240)))
    w.release()
    return path


@pytest.fixture(scope="session")
def detector(tmp_path_factory) -> Path:
    """A small model with the standard SSD-style outputs (boxes, classes, scores, count)."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    inp = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)  # mean colour drives the fake detections

    class Heads(keras.layers.Layer):
        def call(self, p):
            b = tf.shape(p)[0]
            boxes = tf.tile(tf.constant([[[0.1, 0.1, 0.5, 0.6], [0.5, 0.4, 0.9, 0.9], [0, 0, 0.2, 0.2]]]), [b, 1, 1])
            scores = tf.stack([p[:, 0], p[:, 1], p[:, 2] * 0.1], axis=1)
            classes = tf.tile(tf.constant([[0.0, 1.0, 2.0]]), [b, 1])
            count = tf.fill([b], 3.0)
            return boxes, classes, scores, count

    model = keras.Model(inp, Heads()(pooled))
    path = tmp_path_factory.mktemp("det") / "ssd_like.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="session")
def unrunnable_model(converted_digits, tmp_path_factory) -> Path:
    """Parses as TFLite, but names an operator no runtime has: only the device can tell."""
    from mltool._tf import import_tensorflow

    import_tensorflow()
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    src = next(Path(m["path"]) for m in converted_digits["modes"] if m["mode"] == "int8")
    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    model.operatorCodes[0].builtinCode = 250
    model.operatorCodes[0].deprecatedBuiltinCode = 127
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path = tmp_path_factory.mktemp("bad") / "unrunnable.tflite"
    path.write_bytes(bytes(b.Output()))
    return path


@pytest.fixture
def mjpeg():
    from tests.mjpeg_server import MjpegServer

    servers = []

    def make(**kw):
        s = MjpegServer(**kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


# --------------------------------------------------------------------------- serve


@pytest.fixture
def serve(tmp_path):
    """Factory for real `mltool serve` processes on loopback (``--port 0``); all stopped at the end."""
    from tests.serve_process import ServeProcess

    procs = []

    def start(*args, env=None, prefix=None) -> ServeProcess:
        p = ServeProcess(list(args), log=tmp_path / f"serve-{len(procs)}.log", env=env, prefix=prefix)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def digits_int8(converted_digits) -> Path:
    return next(Path(m["path"]) for m in converted_digits["modes"] if m["mode"] == "int8")


@pytest.fixture(scope="session")
def slow_jpeg() -> bytes:
    """A 4000x3000 JPEG: small to send, about 0.3 s to decode, so a request keeps a worker busy."""
    import io

    import numpy as np
    from PIL import Image

    x = np.linspace(0, 255, 4000, dtype=np.float32)[None, :, None] * np.ones((3000, 1, 3), np.float32)
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --------------------------------------------------------------------------- deploy: real sshd


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> dict:
    from tests.sshd import SSHD, keygen

    if not Path(SSHD).exists():
        if os.environ.get("CI"):
            pytest.fail("sshd is missing in CI: scripts/setup.sh should install openssh-server")
        pytest.skip("openssh-server not installed")
    d = tmp_path_factory.mktemp("keys")
    key = keygen(d / "client_ed25519")
    return {"key": key, "pub": d / "client_ed25519.pub"}


@pytest.fixture
def sshd(tmp_path, ssh_keys):
    """Factory for real OpenSSH servers on loopback; all stopped at the end of the test."""
    from tests.sshd import SshServer

    servers = []

    def make(name: str = "dev", sftp: bool = True) -> SshServer:
        s = SshServer(tmp_path / f"sshd-{name}", ssh_keys["pub"], sftp=sftp).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def deploy_args(tmp_path, ssh_keys) -> list[str]:
    """Options every deploy test passes: throwaway key, known_hosts and device folder. The
    device folder's venv is this test environment, as after `deploy --setup` (same machine)."""
    import sys

    root = tmp_path / "device" / "mltool"
    root.mkdir(parents=True)
    (root / "venv").symlink_to(Path(sys.prefix))
    return ["--identity", str(ssh_keys["key"]), "--known-hosts", str(tmp_path / "known_hosts"), "--remote-dir", str(root)]


# --------------------------------------------------------------------------- MQTT: real Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    """Factories for real Mosquitto brokers on loopback and real `mosquitto_sub` subscribers;
    everything started is stopped at the end of the test."""
    from tests.mosquitto import MOSQUITTO, Broker, Subscriber

    if not Path(MOSQUITTO).exists():
        if os.environ.get("CI"):
            pytest.fail("mosquitto is missing in CI: scripts/setup.sh should install mosquitto and mosquitto-clients")
        pytest.skip("mosquitto not installed")
    started: list = []

    class Factory:
        @staticmethod
        def broker(name: str = "broker", **kw) -> Broker:
            b = Broker(tmp_path / f"mosquitto-{name}", **kw)
            started.append(b)
            return b

        @staticmethod
        def subscriber(broker: Broker, topics: list[str], **kw) -> Subscriber:
            s = Subscriber(broker, topics, **kw)
            started.insert(0, s)  # subscribers stop before brokers
            return s.start()

    yield Factory
    for thing in started:
        thing.stop()


@pytest.fixture(scope="session")
def yolo_models(tmp_path_factory) -> dict:
    """Tiny YOLO-convention models (every output layout, NHWC/NCHW, int8, each metadata style) and
    two non-detectors, built once (see tests/yolo_models.py)."""
    from tests.yolo_models import build_all

    return build_all(tmp_path_factory.mktemp("yolo"))


# --------------------------------------------------------------------------- a full disk: a small tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """Factory: ``small_disk("2m")`` mounts a tmpfs of that size under tmp_path (a full SD card or
    disk for the tests that need one; CI runs as root) and returns its folder; all unmounted at the end."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a full disk) needs root")
    mounts: list[Path] = []

    def make(size: str = "2m") -> Path:
        mount = tmp_path / f"disk{len(mounts)}"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
        mounts.append(mount)
        return mount

    yield make
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount: Path, leave: int = 0) -> Path:
    """Take all of ``mount``'s free space but ``leave`` bytes (tmpfs allocates whole pages); the
    file that holds it, to delete when the disk should have room again."""
    filler = mount / "filler"
    st = os.statvfs(mount)
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - leave)
    finally:
        os.close(fd)
    return filler
