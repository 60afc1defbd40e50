"""What this machine can run: runtime, Python, CPU, NumPy, cameras, I2C buses — and how to fix what is missing."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import struct
import sys
from typing import Any

from mltool import __version__


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import PackageNotFoundError, version

        dist = {"cv2": "opencv-python-headless", "PIL": "pillow", "ai_edge_litert": "ai-edge-litert",
                "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow", "numpy": "numpy",
                "picamera2": "picamera2", "paramiko": "paramiko"}.get(module, module)
        try:
            return version(dist)
        except PackageNotFoundError:
            if module == "cv2":
                return version("opencv-python")
            if module == "tensorflow":
                return version("tensorflow-cpu")
            raise
    except Exception:
        return "installed"


def _memory_mib() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _board() -> str | None:
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(p, "rb") as fh:
                return fh.read().rstrip(b"\0").decode(errors="replace")
        except OSError:
            continue
    return None


def _cameras(probe: bool) -> list[dict[str, Any]]:
    """V4L2 devices; with ``probe``, each webcam opened and read once through OpenCV."""
    from mltool.runtime.sources.camera import v4l2_devices

    cams = []
    for entry in v4l2_devices():
        entry["usable"] = None
        if probe and entry["webcam"] and importlib.util.find_spec("cv2") is not None:
            import cv2

            cap = cv2.VideoCapture(entry["device"])
            ok = cap.isOpened() and cap.read()[0]
            cap.release()
            entry["usable"] = bool(ok)
        cams.append(entry)
    return cams


def _camera_checks(check: Any, probe: bool, on_pi: bool) -> dict[str, Any]:
    """The cameras: libcamera's (through picamera2), V4L2's, and which one `--camera` takes."""
    from mltool.errors import MltoolError
    from mltool.runtime.sources.camera import (
        APT_PICAMERA2,
        choose_camera,
        libcamera_cameras,
        picamera2_hint,
    )

    libcams, why = libcamera_cameras()
    if libcams is None:
        check("cameras (libcamera)", False if on_pi else None, f"picamera2 cannot be imported: {why}",
              picamera2_hint() if on_pi else f"on a Raspberry Pi with a camera module: {APT_PICAMERA2}")
    else:
        where = {0: "front", 1: "back", 2: "external"}
        check("cameras (libcamera)", bool(libcams) if on_pi else None,
              ", ".join(f"picamera:{c['num']} {c['model']} ({where.get(c['location'], 'location ?')}"
                        f"{', rotation ' + str(c['rotation']) if c['rotation'] is not None else ''})" for c in libcams)
              or "picamera2 sees no camera", "check the ribbon cable, then `rpicam-hello --list-cameras`")
    cams = _cameras(probe)
    webcams = [c for c in cams if c["webcam"]]
    check("cameras (V4L2)", all(c["usable"] is not False for c in webcams) if webcams else None,
          ", ".join(f"{c['device']} {c['name']}" + (f" ({c['bus']}"
                    + ("" if c["usable"] is None else ", readable" if c["usable"] else ", NOT readable") + ")"
                    if c["webcam"] else " (not a camera: part of the Pi camera pipeline or a codec)") for c in cams)
          or "no /dev/video* devices",
          "check the cable, `ls -l /dev/video*`, and that your user is in the 'video' group")
    try:
        choice = choose_camera("camera").as_dict()
        check("--camera", True, f"{choice['camera']} ({choice['name']}, {choice['backend']}): {choice['reason']}")
    except MltoolError as exc:
        choice = {"error": exc.message}
        check("--camera", None, exc.message, exc.hint)
    return {"cameras": cams, "libcamera": libcams, "camera": choice}


SMOKE = r"""
import json, sys
from importlib.resources import files
from mltool.runtime.interpreter import find_runtime
import numpy as np
rt = find_runtime()
it = rt.interpreter(model_content=files("mltool.runtime").joinpath("data/smoke.tflite").read_bytes())
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.ones(d["shape"], np.float32))
it.invoke()
out = it.get_tensor(it.get_output_details()[0]["index"])
print(json.dumps({"runtime": rt.name, "version": rt.version, "sum": float(out.sum())}))
"""

PIN_HINT = ("pin a runtime that works on this board: pip install 'ai-edge-litert==2.1.6' in mltool's venv, "
            "or from your computer: mltool deploy HOST --setup --runtime 'ai-edge-litert==2.1.6'")


def smoke_test(timeout: float = 120.0) -> dict[str, Any]:
    """Create an interpreter and run one inference in a child process, so that a runtime that
    crashes on this machine (a segfault, as ai-edge-litert 2.2/2.3 do under qemu-user arm64)
    is reported as a crash instead of taking the caller down."""
    import signal
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "hang", "detail": f"no answer within {timeout:g} s"}
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return {"status": "crash", "signal": name, "detail": f"the runtime crashed ({name}) creating an interpreter"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"status": "error", "detail": last[:300]}
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"status": "error", "detail": f"unexpected output: {proc.stdout[:200]!r}"}
    if abs(out["sum"] - 1.0) > 1e-3:
        return {"status": "error", "detail": f"{out['runtime']} {out['version']} ran but computed a wrong softmax ({out['sum']:.4f})"}
    return {"status": "ok", "detail": f"{out['runtime']} {out['version']}: interpreter created, one inference correct", **out}


def run_doctor(probe_cameras: bool = True, smoke: bool = True) -> dict[str, Any]:
    arch = platform.machine()
    bits = struct.calcsize("P") * 8
    arm32 = arch.startswith("arm") and bits == 32 or arch in ("armv7l", "armv6l")
    numpy_v = _version("numpy")
    runtimes = {m: _version(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")}
    active = next((m for m, v in runtimes.items() if v), None)
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, detail: str, fix: str | None = None, required: bool = False) -> None:
        status = "ok" if ok else ("missing" if required else "warn") if ok is not None else "info"
        checks.append({"name": name, "status": status, "detail": detail, "fix": None if ok else fix})

    check("python", sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})",
          "install Python 3.10 or newer", required=True)
    check("cpu", True, f"{arch}, {bits}-bit, {os.cpu_count()} cores" + (f", {_memory_mib()} MiB RAM" if _memory_mib() else ""))
    board = _board()
    if board:
        check("board", True, board)
    check("numpy", numpy_v is not None, numpy_v or "not installed", "pip install numpy", required=True)
    if active is None:
        fix = ("pip install tflite-runtime 'numpy<2'  (32-bit ARM has no ai-edge-litert wheel)" if arm32
               else "pip install ai-edge-litert  (or: pip install 'mltool[device]')")
        check("tflite runtime", False, "none of ai_edge_litert, tflite_runtime, tensorflow", fix, required=True)
    else:
        detail = f"{active} {runtimes[active]}"
        ok = True
        fix = None
        if active == "tflite_runtime" and numpy_v and int(numpy_v.split(".")[0]) >= 2:
            ok, fix = False, "tflite-runtime breaks under NumPy 2: pip install 'numpy<2'"
        elif active == "tensorflow":
            detail += " (fallback; heavy and slow to start)"
            fix = "pip install ai-edge-litert"
        check("tflite runtime", ok if active != "tensorflow" else None, detail, fix, required=True)
    smoke_result = smoke_test() if smoke and active else None
    if smoke_result is not None:
        check("runtime smoke test", smoke_result["status"] == "ok", smoke_result["detail"], PIN_HINT, required=True)
    if arm32:
        check("32-bit ARM", None, "ai-edge-litert publishes no 32-bit ARM wheels; mltool falls back to tflite-runtime (needs numpy<2)",
              "use 64-bit Raspberry Pi OS for ai-edge-litert")
    cv = _version("cv2")
    check("opencv", cv is not None, cv or "not installed (needed for video, cameras, streams)", "pip install opencv-python-headless")
    check("pillow", _version("PIL") is not None, _version("PIL") or "not installed (needed for image files)", "pip install pillow")
    pc = _version("picamera2")
    on_pi = bool(board and "Raspberry Pi" in board)
    cameras = _camera_checks(check, probe_cameras, on_pi)
    buses = sorted(glob.glob("/dev/i2c-*"))
    sm = _version("smbus2")
    check("i2c (sensors)", bool(buses) and sm is not None if on_pi else None,
          f"{', '.join(buses) or 'no /dev/i2c-* buses'}; smbus2 {sm or 'not installed'}",
          None if not on_pi else "enable I2C with `sudo raspi-config nonint do_i2c 0` and reboot" if not buses else "pip install smbus2")
    tf = runtimes["tensorflow"]
    check("tensorflow (train/convert only)", None, tf or "not installed: fine on a device", None)
    required_missing = [c for c in checks if c["status"] == "missing"]
    return {
        "mltool": __version__, "python": platform.python_version(), "arch": arch, "bits": bits,
        "cores": os.cpu_count(), "memory_mib": _memory_mib(), "board": board,
        "numpy": numpy_v, "runtime": {"active": active, "versions": runtimes},
        "opencv": cv, **cameras, "picamera2": pc, "smoke_test": smoke_result, "i2c_buses": buses, "checks": checks,
        "ok": not required_missing,
    }
