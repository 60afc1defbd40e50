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
from mltool.deploy.layout import DeviceLayout
from mltool.deploy.ssh import Session, qpath
from mltool.errors import ConfigError

VERSIONS = """
import json
from importlib.metadata import PackageNotFoundError, version
out = {}
for dist in ("mltool", "numpy", "ai-edge-litert", "tflite-runtime", "opencv-python-headless", "pillow", "paho-mqtt", "smbus2"):
    try:
        out[dist] = version(dist)
    except PackageNotFoundError:
        pass
print(json.dumps(out))
"""

PROBE = "import json,platform,struct,sys;print(json.dumps({'python':platform.python_version(),'ok':sys.version_info>=(3,10),'machine':platform.machine(),'bits':struct.calcsize('P')*8}))"


def build_wheel(out_dir: Path) -> Path:
    """Build mltool's wheel from the source tree this mltool runs from."""
    src = Path(__file__).resolve().parents[2]
    if not (src / "pyproject.toml").is_file():
        raise DeployError("mltool is not installed from a source tree, so --setup cannot build its wheel",
                          "install mltool with `pip install -e .` from a checkout")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(src)],
                          capture_output=True, text=True)
    wheels = sorted(out_dir.glob("mltool-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DeployError(f"building mltool's wheel failed: {proc.stderr.strip()[-300:]}", "run `pip wheel --no-deps .` to see why")
    return wheels[-1]


RUNTIME_SPEC = re.compile(r"^(?P<name>ai[-_.]edge[-_.]litert|tflite[-_.]runtime)\s*(?P<version>(?:[<>=!~]=?|===)\s*[\w.*+!-]+"
                          r"(?:\s*,\s*(?:[<>=!~]=?|===)\s*[\w.*+!-]+)*)?$", re.IGNORECASE)
# what the device path needs (infer, bench, serve, I2C sensors, MQTT reporting); the runtime comes apart
EXTRAS = "device,mqtt"
DEVICE_DEPS = ["pillow", "opencv-python-headless", "flatbuffers", "smbus2", "paho-mqtt>=2.0,<3"]


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


def setup_device(session: Session, layout: DeviceLayout, runtime: str | None = None) -> dict[str, Any]:
    """Create the device's venv and install mltool there with a TFLite runtime: ``runtime`` (a pip
    requirement) pins it and is remembered on the device for later setups; without it, a pin
    remembered earlier is reused, else the default for the architecture."""
    if runtime is not None:
        runtime = check_runtime_spec(runtime)
    info = json.loads(session.run(f"python3 -c {qpath(PROBE)}", what="python check").out)
    if not info["ok"]:
        raise DeployError(f"{session.target.label} has Python {info['python']}; mltool needs 3.10+",
                          "upgrade the OS (Raspberry Pi OS Bookworm has 3.11)")
    arm32 = info["machine"].startswith("arm") and info["bits"] == 32 or info["machine"] in ("armv7l", "armv6l")
    remembered = session.run(f"cat {qpath(layout.runtime_pin)} 2>/dev/null", check=False).out.strip() or None
    if remembered is not None and RUNTIME_SPEC.match(remembered) is None:
        remembered = None  # an edited or damaged pin file is not fed to pip
    pin = runtime or remembered
    warnings = []
    if arm32 and not pin:
        warnings.append("32-bit ARM: no ai-edge-litert wheel exists; installing tflite-runtime with numpy<2 instead "
                        "(64-bit Raspberry Pi OS is recommended)")
    venv = layout.venv
    session.run(f"mkdir -p {qpath(layout.root)} && (test -x {qpath(layout.python)} || python3 -m venv {qpath(venv)})",
                what="create venv", timeout=300)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        remote_wheel = f"{layout.root}/{wheel.name}"
        home = session.run("printf %s \"$HOME\"").out
        session.put(wheel, f"{layout.expanded(home).root}/{wheel.name}")
    pip = f"{qpath(layout.pip)} install -q --disable-pip-version-check"
    if pin is not None and _is_litert(pin):
        packages = [f"{remote_wheel}[{EXTRAS}]", pin]
    elif pin is not None or arm32:  # tflite-runtime: the device extra would pull ai-edge-litert in beside it
        packages = [remote_wheel, pin or "tflite-runtime", "numpy<2", *DEVICE_DEPS]
        session.run(f"{qpath(layout.pip)} uninstall -q -y ai-edge-litert", check=False, what="remove ai-edge-litert")
    else:
        packages = [f"{remote_wheel}[{EXTRAS}]"]
    session.run(f"{pip} {' '.join(qpath(p) for p in packages)}", what="pip install", timeout=1800)
    if runtime is not None:
        session.run(f"printf '%s\\n' {shlex.quote(runtime)} > {qpath(layout.runtime_pin)}", what="remember the runtime pin")
    versions = session.python(VERSIONS, interpreter=layout.python, what="report versions", check=False).out
    try:
        installed = json.loads(versions.strip().splitlines()[-1])
    except (ValueError, IndexError):
        installed = {}
    smoke = session.run(f"{qpath(layout.mltool)} doctor --json --no-camera-probe", check=False, what="runtime smoke test",
                        timeout=300)
    try:
        smoke_test = json.loads(smoke.out)["smoke_test"]
    except (ValueError, KeyError, TypeError):
        smoke_test = {"status": "error", "detail": (smoke.err.strip().splitlines() or ["mltool doctor gave no answer"])[-1]}
    if smoke_test and smoke_test.get("status") != "ok":
        warnings.append(f"the runtime smoke test failed on the device: {smoke_test.get('detail')}; "
                        "pin another with --runtime, e.g. --runtime 'ai-edge-litert==2.1.6'")
    return {"python": info["python"], "machine": info["machine"], "bits": info["bits"], "venv": venv,
            "installed": installed, "runtime_pin": pin, "pin_remembered": runtime is None and remembered is not None,
            "smoke_test": smoke_test, "warnings": warnings}
