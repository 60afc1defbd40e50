"""``--setup``: prepare a fresh device — check Python and CPU, create ROOT/venv, build mltool's
wheel here, push it, and install it there with the ``device`` extra."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.deploy.ssh import Session, qpath
from mltool.errors import ConfigError
from mltool.layout import DeviceLayout

VERSIONS = """
import json
from importlib.metadata import PackageNotFoundError, version
out = {}
for dist in ("mltool-edge", "mltool", "numpy", "ai-edge-litert", "tflite-runtime", "opencv-python-headless", "pillow", "paho-mqtt", "smbus2"):
    try:
        out.setdefault("mltool" if dist.startswith("mltool") else dist, version(dist))
    except PackageNotFoundError:
        pass
print(json.dumps(out))
"""

# What tells Pi OS releases apart: the OS (os-release), the userland's architecture (dpkg: a 32-bit
# Pi OS on a Pi 4/5 runs a 64-bit kernel, so `uname -m` says aarch64), Python, and the system's
# own NumPy (Debian's python3-numpy, which picamera2 and python3-opencv are built against).
PROBE = r"""
import json, platform, struct, subprocess, sys
from importlib.metadata import version
from importlib.util import find_spec
osr = {}
try:
    for line in open("/etc/os-release"):
        k, _, v = line.rstrip("\n").partition("=")
        osr[k] = v.strip('"')
except OSError:
    pass
try:
    dpkg = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=30).stdout.strip()
except Exception:
    dpkg = ""
def v(dist):
    try:
        return version(dist)
    except Exception:
        return None
print(json.dumps({"python": platform.python_version(), "ok": sys.version_info >= (3, 10), "machine": platform.machine(),
                  "bits": struct.calcsize("P") * 8, "dpkg_arch": dpkg, "os_id": osr.get("ID", ""),
                  "codename": osr.get("VERSION_CODENAME", ""), "os": osr.get("PRETTY_NAME", ""),
                  "numpy": v("numpy"), "picamera2": find_spec("picamera2") is not None}))
"""
# 32-bit ARM: PyPI has no armv7 wheels of NumPy<2, OpenCV or Pillow; Raspberry Pi OS (and Debian) have them
ARM32_APT = ("python3-numpy", "python3-opencv", "python3-pil")
ARM32_RUNTIME = "tflite-runtime==2.14.0"  # the last release; armv7l wheels for Python 3.11 only

def build_wheel(out_dir: Path) -> Path:
    """Build mltool's wheel from the source tree this mltool runs from."""
    src = Path(__file__).resolve().parents[2]
    if not (src / "pyproject.toml").is_file():
        raise DeployError("mltool is not installed from a source tree, so --setup cannot build its wheel",
                          "install mltool with `pip install -e .` from a checkout")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(src)],
                          capture_output=True, text=True)
    wheels = sorted(out_dir.glob("mltool_edge-*.whl"))
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] or proc.stderr.strip().splitlines() or ["?"]
        raise DeployError(f"building mltool's wheel failed: {errors[-1].strip()[:300]}", "run `pip wheel --no-deps .` to see why")
    if not wheels:
        raise DeployError(f"pip wheel wrote no mltool_edge wheel to {out_dir}", "run `pip wheel --no-deps .` to see why")
    return wheels[-1]


RUNTIME_SPEC = re.compile(r"^(?P<name>ai[-_.]edge[-_.]litert|tflite[-_.]runtime)\s*(?P<version>(?:[<>=!~]=?|===)\s*[\w.*+!-]+"
                          r"(?:\s*,\s*(?:[<>=!~]=?|===)\s*[\w.*+!-]+)*)?$", re.IGNORECASE)
# what the device path needs (infer, bench, serve, I2C sensors, MQTT reporting); the runtime comes apart
EXTRAS = "device,mqtt"
ARM32_PIP_DEPS = ["flatbuffers", "smbus2", "paho-mqtt>=2.0,<3"]
DEVICE_DEPS = ["pillow", "opencv-python-headless", *ARM32_PIP_DEPS]


def check_runtime_spec(spec: str) -> str:
    """A pip requirement for a TFLite runtime, e.g. ``ai-edge-litert==2.1.6`` or
    ``tflite-runtime==2.14.0``; anything else is a usage error (it goes into a pip command)."""
    m = RUNTIME_SPEC.match(spec.strip())
    if m is None:
        raise ConfigError(f"--runtime '{spec}' is not a requirement for ai-edge-litert or tflite-runtime",
                          "e.g. --runtime 'ai-edge-litert==2.1.6' or --runtime 'tflite-runtime==2.14.0'")
    return spec.strip()


def _is_litert(spec: str) -> bool:
    return RUNTIME_SPEC.match(spec).group("name").lower().replace("_", "-").replace(".", "-") == "ai-edge-litert"  # type: ignore[union-attr]


def device_platform(info: dict[str, Any]) -> dict[str, Any]:
    """What the probe says about the device: its userland architecture and whether it is 32-bit ARM."""
    machine, dpkg = info["machine"], info.get("dpkg_arch") or ""
    arm32 = dpkg in ("armhf", "armel") or machine in ("armv7l", "armv6l") or (
        info["bits"] == 32 and (machine.startswith("arm") or machine == "aarch64"))
    arch = dpkg or ("armhf" if arm32 else {"aarch64": "arm64", "x86_64": "amd64"}.get(machine, machine))
    return {"arch": arch, "arm32": arm32, "armv6": machine == "armv6l"}


def check_supported(label: str, info: dict[str, Any], plat: dict[str, Any]) -> None:
    """Refuse, before anything is installed, a device no TFLite runtime exists for."""
    os_name = info.get("os") or "this OS"
    if plat["armv6"]:
        raise DeployError(f"{label} is an ARMv6 board (Pi Zero W / Pi 1): no TFLite runtime is built for ARMv6",
                          "use a Pi Zero 2 W, 3, 4 or 5 with 64-bit Raspberry Pi OS")
    if plat["arm32"] and tuple(int(x) for x in info["python"].split(".")[:2]) != (3, 11):
        raise DeployError(f"{label} runs 32-bit {os_name} with Python {info['python']}: no TFLite runtime exists for it "
                          "(ai-edge-litert has no 32-bit ARM wheels; tflite-runtime's last armv7 wheel is for Python 3.11)",
                          "flash 64-bit Raspberry Pi OS (Pi 3, 4, 5 and Zero 2 W run it), or use 32-bit Raspberry Pi OS "
                          "bookworm (Python 3.11)")


def _apt_install(session: Session, packages: tuple[str, ...]) -> list[str]:
    """Install missing Debian packages with `sudo -n apt-get` (Pi OS's default user may); a user
    who may not gets one line with the exact command to run. Returns what was installed."""
    listing = session.run("dpkg-query -W -f='${Package} ${Status}\\n' " + " ".join(packages) + " 2>/dev/null", check=False).out
    have = {ln.split()[0] for ln in listing.splitlines() if ln.endswith("install ok installed")}
    missing = [p for p in packages if p not in have]
    if not missing:
        return []
    command = f"sudo apt-get install -y {' '.join(missing)}"
    if session.run("sudo -n true", check=False).rc != 0:
        raise DeployError(f"{session.target.label} is 32-bit ARM and needs {', '.join(missing)} from its OS packages "
                          "(PyPI has no 32-bit ARM wheels of NumPy<2, OpenCV or Pillow, and building them on the device "
                          "takes hours), but this user may not run sudo without a password",
                          f"run on the device: {command}; then run --setup again")
    apt = "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get"
    r = session.run(f"{apt} install -y -q --no-install-recommends {' '.join(missing)} || "
                    f"({apt} update -q && {apt} install -y -q --no-install-recommends {' '.join(missing)})",
                    check=False, what="apt-get install", timeout=3600)
    if r.rc != 0:
        last = (r.err.strip().splitlines() or r.out.strip().splitlines() or ["no output"])[-1]
        raise DeployError(f"installing {', '.join(missing)} on {session.target.label} failed: {last[:200]}",
                          f"run on the device: {command}")
    return missing


def _venv(session: Session, layout: DeviceLayout) -> str:
    """ROOT/venv, seeing the system's packages (Pi OS's picamera2 and libcamera bindings; on 32-bit
    ARM Debian's NumPy and OpenCV); its own packages still come first. A venv an earlier setup
    made without them is switched over in place, keeping what is installed and the runtime pin."""
    cfg = f"{layout.venv}/pyvenv.cfg"
    state = session.run(
        f"if test -x {qpath(layout.python)}; then "
        f"  if grep -qi '^include-system-site-packages *= *true' {qpath(cfg)}; then echo kept; "
        f"  else sed -i 's/^include-system-site-packages *=.*/include-system-site-packages = true/I' {qpath(cfg)} && echo upgraded; fi; "
        f"else mkdir -p {qpath(layout.root)} && python3 -m venv --system-site-packages {qpath(layout.venv)} && echo created; fi",
        what="create venv", timeout=300).out.strip().splitlines()
    return state[-1] if state else "created"


def setup_device(session: Session, layout: DeviceLayout, runtime: str | None = None) -> dict[str, Any]:
    """Create the device's venv and install mltool there with a TFLite runtime: ``runtime`` (a pip
    requirement) pins it and is remembered on the device for later setups; without it, a pin
    remembered earlier is reused, else the default for the device (told apart by its OS,
    architecture and Python: arm64 gets ai-edge-litert; 32-bit Pi OS bookworm tflite-runtime 2.14
    with NumPy and OpenCV from Debian; 32-bit trixie is refused, as no runtime exists for it)."""
    if runtime is not None:
        runtime = check_runtime_spec(runtime)
    info = json.loads(session.python(PROBE, what="python check").out.strip().splitlines()[-1])
    if not info["ok"]:
        raise DeployError(f"{session.target.label} has Python {info['python']}; mltool needs 3.10+",
                          "upgrade the OS (Raspberry Pi OS bookworm has 3.11, trixie 3.13)")
    plat = device_platform(info)
    check_supported(session.target.label, info, plat)
    arm32 = plat["arm32"]
    remembered = session.run(f"cat {qpath(layout.runtime_pin)} 2>/dev/null", check=False).out.strip() or None
    if remembered is not None and RUNTIME_SPEC.match(remembered) is None:
        remembered = None  # an edited or damaged pin file is not fed to pip
    pin = runtime or remembered
    warnings = []
    apt_installed = _apt_install(session, ARM32_APT) if arm32 else []
    if apt_installed:
        info = json.loads(session.python(PROBE, what="python check").out.strip().splitlines()[-1])  # Debian's NumPy now
    if arm32 and (not pin or not _is_litert(pin)):
        warnings.append("32-bit ARM: no ai-edge-litert wheel exists; using tflite-runtime with NumPy and OpenCV from "
                        "Debian (64-bit Raspberry Pi OS is faster and recommended)")
    venv_state = _venv(session, layout)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        remote_wheel = f"{layout.root}/{wheel.name}"
        home = session.run("printf %s \"$HOME\"").out
        session.put(wheel, f"{layout.expanded(home).root}/{wheel.name}")
    # The system's NumPy (Debian's, which picamera2, simplejpeg and python3-opencv are built against)
    # is the one the venv uses: a second NumPy from PyPI would shadow it and break them.
    constraints = []
    if info.get("numpy"):
        constraints = [f"numpy=={info['numpy']}"]
        if int(info["numpy"].split(".")[0]) < 2:
            constraints.append("opencv-python-headless<4.12")  # 4.12 and later need NumPy 2
    pip = f"{qpath(layout.pip)} install -q --disable-pip-version-check"
    if constraints:
        session.run(f"printf '%s\\n' {' '.join(shlex.quote(c) for c in constraints)} > {qpath(layout.root + '/constraints.txt')}",
                    what="write pip constraints")
        pip += f" -c {qpath(layout.root + '/constraints.txt')}"
    if pin is not None and _is_litert(pin):
        packages = [f"{remote_wheel}[{EXTRAS}]", pin]
    elif arm32:  # NumPy, OpenCV and Pillow come from Debian (apt above)
        packages = [remote_wheel, pin or ARM32_RUNTIME, *ARM32_PIP_DEPS]
        session.run(f"{qpath(layout.pip)} uninstall -q -y ai-edge-litert", check=False, what="remove ai-edge-litert")
    elif pin is not None:  # tflite-runtime on 64-bit: the device extra would pull ai-edge-litert in beside it
        packages = [remote_wheel, pin, *([] if constraints else ["numpy<2"]), *DEVICE_DEPS]
        session.run(f"{qpath(layout.pip)} uninstall -q -y ai-edge-litert", check=False, what="remove ai-edge-litert")
    else:
        packages = [f"{remote_wheel}[{EXTRAS}]"]
    # an install from before the rename to mltool-edge shares its files: remove it first, not after
    session.run(f"{qpath(layout.pip)} uninstall -q -y mltool", check=False, what="remove the old mltool distribution")
    session.run(f"{pip} {' '.join(qpath(p) for p in packages)}", what="pip install", timeout=3600)
    # the wheel built here keeps its version while the code changes: pip would keep the old one
    session.run(f"{pip} --force-reinstall --no-deps {qpath(remote_wheel)}", what="pip install mltool", timeout=600)
    if runtime is not None:
        session.run(f"printf '%s\\n' {shlex.quote(runtime)} > {qpath(layout.runtime_pin)}", what="remember the runtime pin")
    versions = session.python(VERSIONS, interpreter=layout.python, what="report versions", check=False).out
    try:
        installed = json.loads(versions.strip().splitlines()[-1])
    except (ValueError, IndexError):
        installed = {}
    smoke = session.run(f"{qpath(layout.mltool)} doctor --json --no-camera-probe", check=False, what="runtime smoke test",
                        timeout=600)
    try:
        report = json.loads(smoke.out)
        smoke_test = report["smoke_test"]
    except (ValueError, KeyError, TypeError):
        report = {}
        smoke_test = {"status": "error", "detail": (smoke.err.strip().splitlines() or ["mltool doctor gave no answer"])[-1]}
    if smoke_test and smoke_test.get("status") != "ok":
        warnings.append(f"the runtime smoke test failed on the device: {smoke_test.get('detail')}; "
                        "pin another with --runtime, e.g. --runtime 'ai-edge-litert==2.1.6'")
    return {"python": info["python"], "machine": info["machine"], "bits": info["bits"], "arch": plat["arch"],
            "os": info.get("os") or None, "venv": layout.venv, "venv_state": venv_state, "system_numpy": info.get("numpy"),
            "apt_installed": apt_installed, "installed": installed, "runtime_pin": pin,
            "pin_remembered": runtime is None and remembered is not None, "smoke_test": smoke_test,
            "camera": report.get("camera"), "warnings": warnings}
