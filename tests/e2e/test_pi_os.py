"""The whole path a Pi user takes, on emulated Raspberry Pi OS userlands (opt-in: ``pytest -m pi``).

For each OS a user may have, ``../shared/tools/pi-sim.sh`` starts a debootstrapped Debian userland
of that Pi OS's base (qemu-user, sshd on loopback; ~10 minutes to build the first time): then
``mltool deploy --setup --bench`` from here, ``mltool infer`` there on files and on ``--camera``.
Pi OS's camera stack is not in Debian: tests/fake_picamera2 is installed where
``apt install python3-picamera2`` puts the real one (the system ``dist-packages``), so the device's
venv must see the system's packages for ``--camera`` to find it, exactly as on a Pi.

Under qemu-user, ai-edge-litert >= 2.2 segfaults when the interpreter is created (real Pis are
not known to), so arm64 pins ``--runtime 'ai-edge-litert==2.1.6'``; and XNNPACK's int8 kernels
compute wrong answers there (measured: a float32 model and the built-in int8 kernels give this
machine's answers, XNNPACK's int8 path calls most digits a 4), so the answers are checked with
``--delegate none`` (the built-in kernels). Emulated timings are not Pi timings: the figures
printed here say what ran, not how fast a Pi is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = [pytest.mark.pi, pytest.mark.timeout(7200)]  # pip and apt under qemu-user take many minutes

PI_SIM = REPO.parent / "shared" / "tools" / "pi-sim.sh"
FAKE = REPO / "tests" / "fake_picamera2"
OSES = {  # id: (suite, arch, port)
    "trixie-arm64": ("trixie", "arm64", 2231),
    "bookworm-arm64": ("bookworm", "arm64", 2233),
    "bookworm-armhf": ("bookworm", "armhf", 2232),
    "trixie-armhf": ("trixie", "armhf", 2234),
}


class Pi:
    def __init__(self, os_id: str, tmp: Path) -> None:
        self.suite, self.arch, self.port = OSES[os_id]
        self.root = Path(f"/tmp/pi-{self.suite}-{self.arch}")  # kept between runs: building one takes ~10 minutes
        self.key = Path(f"{self.root}.key")
        self.known_hosts = tmp / "known_hosts"
        self.env = {**os.environ, "SUITE": self.suite, "ARCH": self.arch, "ROOT": str(self.root), "PORT": str(self.port)}

    def start(self) -> float:
        t0 = time.monotonic()
        r = subprocess.run(["bash", str(PI_SIM), "start"], env=self.env, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stderr[-2000:]
        return time.monotonic() - t0

    def stop(self) -> None:
        subprocess.run(["bash", str(PI_SIM), "stop"], env=self.env, capture_output=True, timeout=120)

    def chroot(self, command: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(self.root), "/bin/bash", "-c", command], capture_output=True, text=True,
                              timeout=timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"})

    def ssh(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                               "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
                               "pi@127.0.0.1", command], capture_output=True, text=True, timeout=timeout)

    def home(self) -> Path:
        return self.root / "home" / "pi"

    def give_pi(self, path: Path) -> None:
        uid = (self.root / "home" / "pi").stat().st_uid
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, uid, uid)

    def install_fake_picamera2(self) -> None:
        """Where `apt install python3-picamera2` puts the real one: the system dist-packages."""
        dist = self.root / "usr" / "lib" / "python3" / "dist-packages"
        for pkg in ("picamera2", "libcamera"):
            shutil.rmtree(dist / pkg, ignore_errors=True)
            shutil.copytree(FAKE / pkg, dist / pkg, ignore=shutil.ignore_patterns("__pycache__"))

    def deploy(self, *args: str, timeout: float = 5400) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mltool", "deploy", "pi@127.0.0.1", *args, "-p", str(self.port),
                               "-i", str(self.key), "--known-hosts", str(self.known_hosts), "--trust-new-host",
                               "--command-timeout", "3600", "--json"],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _infer_here(model: Path, source: Path) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-m", "mltool", "infer", str(model), str(source), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {Path(x["name"]).name: x["predictions"][0]["label"] for x in map(json.loads, r.stdout.splitlines())
            if "predictions" in x}


@pytest.fixture(scope="module")
def photos(digits_int8, tmp_path_factory) -> dict:
    """Six real digits (scikit-learn's 8x8 set, the model's own size) named by label, each with
    the class the model gives it on this machine, and one digit at 16x16 as the camera's picture."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = tmp_path_factory.mktemp("pi-photos")
    files = out / "files"
    files.mkdir()
    for i in range(len(d.images) - 6, len(d.images)):
        Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).save(files / f"digit{i}_{d.target[i]}.png")
    here = _infer_here(digits_int8, files)
    assert sum(here[n] == n.rsplit("_", 1)[1][0] for n in here) >= 5, here  # a model that works, before it goes anywhere
    i = 1791  # a 4 this model reads at 16x16 too (an 8x upscale is blurred by the Gaussian pyramid: not a camera's picture)
    camera = out / f"camera_{d.target[i]}.png"
    Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).resize((16, 16), Image.NEAREST).save(camera)
    camera_label = _infer_here(digits_int8, camera)[camera.name]
    assert camera_label == str(d.target[i])
    return {"files": files, "labels": here, "camera": camera, "camera_label": camera_label}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("os_id", ["trixie-arm64", "bookworm-arm64", "bookworm-armhf"])
def test_setup_bench_infer_and_camera_on_emulated_pi_os(os_id, digits_int8, photos, tmp_path):
    pi = Pi(os_id, tmp_path)
    start_s = pi.start()
    try:
        pi.install_fake_picamera2()
        args = [str(digits_int8), "--name", "digits", "--setup", "--bench"]
        if pi.arch == "armhf":
            # Pi OS lets its default user sudo without a password; this userland does not yet:
            # --setup must stop with the exact command, before installing anything
            pi.chroot("rm -f /etc/sudoers.d/010_pi-nopasswd")
            r = pi.deploy(*args)
            assert r.returncode != 0
            err = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
            assert "run on the device: sudo apt-get install -y python3-numpy python3-opencv python3-pil" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and not (pi.home() / "mltool" / "venv").exists(), err
            # setuid binaries do not work under qemu-user, so sudo cannot be shown to work here: run the
            # command the message gave, as root, as the user would, and --setup goes on with Debian's packages
            r = pi.chroot("apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "
                          "python3-numpy python3-opencv python3-pil >/dev/null")
            assert r.returncode == 0, r.stderr[-2000:]
        else:
            args += ["--runtime", "ai-edge-litert==2.1.6"]  # >= 2.2 segfaults under qemu-user (see the module doc)
        t0 = time.monotonic()
        r = pi.deploy(*args)
        setup_s = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-3000:]
        host = json.loads(r.stdout)["hosts"][0]
        setup = host["setup"]
        assert setup["smoke_test"]["status"] == "ok", setup
        assert host["probe"] is not None and host["status"] in ("changed", "ready")
        assert setup["camera"]["backend"] == "libcamera"  # the venv sees the system's picamera2
        if pi.arch == "armhf":
            assert setup["arch"] == "armhf" and setup["installed"]["tflite-runtime"] == "2.14.0"
            assert setup["apt_installed"] == []  # already there: nothing for sudo to do
            assert setup["installed"]["numpy"].startswith("1.")  # Debian's
        else:
            assert setup["arch"] == "arm64" and setup["installed"]["ai-edge-litert"] == "2.1.6"
        bench = host["bench"]["rows"][0]

        # files on the device
        folder = pi.home() / "photos"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(photos["files"], folder)
        shutil.copy(photos["camera"], pi.home() / photos["camera"].name)
        pi.give_pi(folder)
        pi.give_pi(pi.home() / photos["camera"].name)
        model = "~/mltool/models/digits/current/model.tflite"
        r = pi.ssh(f"~/mltool/venv/bin/mltool infer {model} ~/photos --json --delegate none")  # see the module doc
        assert r.returncode == 0, r.stderr[-2000:]
        results = {Path(x["name"]).name: x["predictions"][0]["label"] for x in map(json.loads, r.stdout.splitlines())
                   if "predictions" in x}
        assert results == photos["labels"]  # the device's answers are this machine's
        right = sum(label == name.rsplit("_", 1)[1][0] for name, label in results.items())

        # --camera: the libcamera camera, through the system's picamera2, shows a real digit
        label = photos["camera_label"]
        t0 = time.monotonic()
        r = pi.ssh(f"FAKE_PICAMERA2_IMAGE=~/{photos['camera'].name} ~/mltool/venv/bin/mltool infer {model} --camera "
                   "--camera-size 16x16 -n 2 --json --delegate none")
        camera_s = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-2000:]
        lines = [json.loads(ln) for ln in r.stdout.splitlines()]
        assert lines[0]["event"] == "camera" and lines[0]["backend"] == "libcamera" and lines[0]["camera"] == "picamera:0"
        first = next(ln for ln in lines if "predictions" in ln)
        assert first["predictions"][0]["label"] == label
        print(f"\n[pi] {os_id}: pi-sim start {start_s:.0f} s; --setup+deploy+bench {setup_s:.0f} s; "
              f"runtime {setup['installed'].get('ai-edge-litert') and 'ai-edge-litert ' + setup['installed']['ai-edge-litert'] or 'tflite-runtime ' + setup['installed'].get('tflite-runtime', '?')}, "
              f"numpy {setup['installed'].get('numpy')}; Python {setup['python']}; probe {host['probe']['runtime']} "
              f"invoke {host['probe']['invoke_ms']:.2f} ms; on-device bench median {bench['latency_ms']['median']:.3f} ms (emulated); "
              f"files {right}/{len(results)} right; --camera first result {first['predictions'][0]['label']} "
              f"({first['predictions'][0]['score']:.3f}) for a {label}, run {camera_s:.1f} s")
    finally:
        pi.stop()


def test_32bit_trixie_is_refused_in_one_line(digits_int8, tmp_path):
    pi = Pi("trixie-armhf", tmp_path)
    pi.start()
    try:
        r = pi.deploy(str(digits_int8), "--name", "digits", "--setup")
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if "no TFLite runtime exists" in ln and "64-bit Raspberry Pi OS" in ln]
        assert lines and "with Python 3.13" in lines[0], r.stderr  # the host's line: the whole error on one line
        assert "Traceback" not in r.stderr and not (pi.home() / "mltool" / "venv").exists()
        print(f"\n[pi] trixie-armhf: {lines[0].strip()}")
    finally:
        pi.stop()
