"""`mltool export mender` with Debian's mender-artifact, installed, committed and rolled back by
Debian's mender-client in standalone mode through the `mltool` update module (needs root: the
module path is compiled into the client)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path("/usr/share/mender/modules/v3/mltool")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")


@pytest.fixture(scope="session")
def two_models(converted_digits) -> dict:
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    return {"a": modes["int8"], "b": modes["float32" if "float32" in modes else "none"]}


@pytest.fixture
def mender(tmp_path):
    missing = [t for t in ("mender", "mender-artifact") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"Mender tests need root and {', '.join(missing) or 'nothing missing'} (scripts/setup.sh --test)")
        pytest.skip("needs root and Debian's mender-client and mender-artifact")
    data = tmp_path / "mender-data"
    data.mkdir()
    (data / "device_type").write_text("device_type=raspberrypi4\n")
    conf = tmp_path / "mender.conf"
    conf.write_text("{}")
    made_info = not ARTIFACT_INFO.exists()
    if made_info:
        ARTIFACT_INFO.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT_INFO.write_text("artifact_name=factory\n")
    saved = MODULE.read_bytes() if MODULE.exists() else None

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mender", "-c", str(conf), "-d", str(data), *args], capture_output=True, text=True, timeout=120)

    yield run
    if saved is not None:
        MODULE.write_bytes(saved)
    else:
        MODULE.unlink(missing_ok=True)
    if made_info:
        ARTIFACT_INFO.unlink(missing_ok=True)


def _rid(p: Path) -> str:
    from mltool.layout import release_id

    return release_id(p)


def test_mender_install_commit_rollback(cli, mender, two_models, unrunnable_model, tmp_path):
    root = tmp_path / "device" / "mltool"
    root.mkdir(parents=True)
    (root / "venv").symlink_to(Path(sys.prefix))  # the device's venv, as after --setup (it probes with it)
    current = root / "models" / "digits" / "current"
    arts = {}
    for key, model in (("a", two_models["a"]), ("b", two_models["b"]), ("bad", unrunnable_model)):
        out = tmp_path / f"{key}.mender"
        r = cli(["export", "mender", model, "--device-type", "raspberrypi4", "-o", out, "--name", "digits",
                 "--remote-dir", root, "--module-out", tmp_path / "mltool", "--json"])
        assert r.exit_code == 0, r.stderr
        assert r.json()["release"] == _rid(model) and out.is_file()
        arts[key] = out
    shutil.copy(tmp_path / "mltool", MODULE)
    MODULE.chmod(0o755)

    r = mender("install", str(arts["a"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(current).endswith(_rid(two_models["a"]))
    assert mender("commit").returncode == 0

    r = mender("install", str(arts["b"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(current).endswith(_rid(two_models["b"]))
    r = mender("rollback")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(current).endswith(_rid(two_models["a"]))

    # A model the device's runtime cannot run: the probe fails, Mender reports the failure,
    # and current never moves.
    r = mender("install", str(arts["bad"]))
    assert r.returncode != 0
    assert "probe failed" in r.stdout + r.stderr
    assert os.readlink(current).endswith(_rid(two_models["a"]))
    releases = sorted(p.name for p in (root / "models" / "digits" / "releases").iterdir())
    assert releases == sorted([_rid(two_models["a"]), _rid(two_models["b"])])


def test_export_mender_needs_an_absolute_root(cli, two_models, tmp_path):
    r = cli(["export", "mender", two_models["a"], "--device-type", "raspberrypi4", "-o", tmp_path / "x.mender",
             "--remote-dir", "~/mltool"])
    assert r.exit_code == 2 and "--remote-dir ~/mltool must be an absolute path" in r.stderr
