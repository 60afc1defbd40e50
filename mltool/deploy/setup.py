"""``--setup``: prepare a fresh device — check Python and CPU, create ROOT/venv, build mltool's
wheel here, push it, and install it there with the ``device`` extra."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.deploy.layout import DeviceLayout
from mltool.deploy.ssh import Session, qpath

VERSIONS = """
import json
from importlib.metadata import PackageNotFoundError, version
out = {}
for dist in ("mltool", "numpy", "ai-edge-litert", "tflite-runtime", "opencv-python-headless", "pillow"):
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


def setup_device(session: Session, layout: DeviceLayout) -> dict[str, Any]:
    info = json.loads(session.run(f"python3 -c {qpath(PROBE)}", what="python check").out)
    if not info["ok"]:
        raise DeployError(f"{session.target.label} has Python {info['python']}; mltool needs 3.10+",
                          "upgrade the OS (Raspberry Pi OS Bookworm has 3.11)")
    arm32 = info["machine"].startswith("arm") and info["bits"] == 32 or info["machine"] in ("armv7l", "armv6l")
    warnings = []
    if arm32:
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
    spec = f"{remote_wheel}[device]" if not arm32 else remote_wheel
    extra = "" if not arm32 else " 'tflite-runtime' 'numpy<2' pillow opencv-python-headless flatbuffers"
    session.run(f"{qpath(layout.pip)} install -q --disable-pip-version-check {qpath(spec)}{extra}",
                what="pip install", timeout=1800)
    versions = session.python(VERSIONS, interpreter=layout.python, what="report versions", check=False).out
    try:
        installed = json.loads(versions.strip().splitlines()[-1])
    except (ValueError, IndexError):
        installed = {}
    return {"python": info["python"], "machine": info["machine"], "bits": info["bits"], "venv": venv,
            "installed": installed, "warnings": warnings}
