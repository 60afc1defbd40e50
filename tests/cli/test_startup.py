"""The CLI starts fast and light: help and version never import TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ["tensorflow", "keras", "numpy", "sklearn", "matplotlib", "cv2", "paramiko", "ai_edge_litert", "PIL", "paho"]

PROBE = """
import json, sys
from mltool.cli import main
try:
    main({args!r})
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}), file=sys.stderr)
"""


def _probe(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100"},
    )
    return {"stdout": proc.stdout, **json.loads(proc.stderr.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--help"], "train"),
        (["--version"], "mltool 0.1.0"),
        (["train", "--help"], "--epochs"),
        (["datasets", "--help"], "synth"),
        (["evaluate", "--help"], "held-out"),
        (["agent", "--help"], "--label"),
    ],
)
def test_help_and_version_do_not_import_heavy_modules(args, expect):
    out = _probe(args)
    assert out["code"] in (0, None)
    assert expect in out["stdout"]
    assert out["heavy"] == []


def test_python_dash_m_and_console_script_agree():
    proc = subprocess.run([sys.executable, "-m", "mltool", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "mltool 0.1.0"


def test_unknown_task_is_usage_error_with_suggestion(cli):
    r = cli(["train", "fashon-mnist"])
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "Error: unknown task 'fashon-mnist'. Fix: did you mean 'fashion-mnist'? "
        "Valid choices: mnist, fashion-mnist, digits, fire, ecg, images"
    )
    assert r.stdout == ""


def test_missing_argument_is_usage_error(cli):
    r = cli(["train"])
    assert r.exit_code == 2
    assert "Missing argument 'TASK'" in r.stderr or "Missing argument 'task'" in r.stderr


def test_unknown_arch_is_rejected_before_loading_data(cli, tmp_path):
    r = cli(["train", "digits", "--arch", "cnn2", "--project", tmp_path])
    assert r.exit_code == 2
    assert "unknown architecture 'cnn2'" in r.stderr and "did you mean 'cnn'" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_domain_error_is_one_line_exit_1(cli, tmp_path):
    missing = tmp_path / "nowhere"
    r = cli(["train", "fashion-mnist", "--data", missing])
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert errors == [f"Error: data directory {missing} does not exist. Fix: pass --data DIR holding the fashion-mnist IDX files"]
    assert r.stderr.rstrip().endswith(errors[0]) and "Traceback" not in r.stderr


def test_debug_env_shows_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    env = {**os.environ, "MLTOOL_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mltool", "train", "fire", "--data", str(missing)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "DataError" in proc.stderr


def test_import_mltool_is_cheap_and_predictor_needs_no_tensorflow():
    code = ("import sys, json; import mltool\n"
            "light = [m for m in ('numpy', 'tensorflow', 'keras', 'cv2') if m in sys.modules]\n"
            "from mltool import Predictor, Result, Classification, Detection\n"
            "from mltool.train import TrainConfig, train\nfrom mltool.convert import ConvertConfig, convert\n"
            "from mltool.deploy import DeployConfig, deploy\n"
            "print(json.dumps({'light': light, 'heavy': [m for m in ('tensorflow', 'keras') if m in sys.modules]}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"light": [], "heavy": []}
