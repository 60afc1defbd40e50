"""docs/python-api.md's example runs as written: train, convert, predict, stream and deploy.

The only change made to it points the device folder at a temporary directory; the device
itself ("raspberrypi.local") is a real sshd on loopback, reached through an ssh config alias.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO


def readme_snippet() -> str:
    text = (REPO / "docs" / "python-api.md").read_text()
    section = text.split("# Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_runs(tmp_path, sshd, ssh_keys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    work = tmp_path / "work"
    (work / "digits").mkdir(parents=True)
    for i in range(3):
        img = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(img).resize((32, 32)).convert("RGB").save(work / "digits" / f"{digits.target[i]}.png")
    Image.open(work / "digits" / "0.png").save(work / "digit.png")

    server = sshd()
    (tmp_path / "ssh_config").write_text(
        f"Host raspberrypi.local\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.target.split('@')[0]}\n"
        f"  IdentityFile {ssh_keys['key']}\n")
    host_key = (server.dir / "host_ed25519.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {host_key[0]} {host_key[1]}\n")
    device = tmp_path / "device" / "mltool"
    device.mkdir(parents=True)
    (device / "venv").symlink_to(Path(sys.prefix))

    code = readme_snippet()
    assert "DeployConfig(model=model)" in code
    code = code.replace("DeployConfig(model=model)", f"DeployConfig(model=model, root={str(device)!r})")
    env = {**os.environ, "MLTOOL_SSH_CONFIG": str(tmp_path / "ssh_config"),
           "MLTOOL_KNOWN_HOSTS": str(tmp_path / "known_hosts"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    run_dir, accuracy = lines[0].rsplit(" ", 1)
    assert Path(work, run_dir).name == "digits-1" and float(accuracy) > 0.8
    label, score, ms, unit = lines[1].split()
    assert label in [str(i) for i in range(10)] and 0 < float(score) <= 1 and float(ms) > 0 and unit == "ms"
    assert [ln.split()[0] for ln in lines[2:5]] == [f"digits/{d}.png" for d in sorted(digits.target[:3])]
    assert lines[5] == "{'changed': 1} 0"
    current = device / "models" / "digits" / "current" / "model.tflite"
    assert current.read_bytes() == (work / run_dir / "model_int8.tflite").read_bytes()


def test_predictor_options_are_declared_once_and_checked_by_name(digits_int8):
    """infer, serve and Python share one PredictorOptions: a misspelt option is a one-line error
    naming it (it was a TypeError deep inside serve), and both spellings build the same Predictor."""
    from mltool.errors import ConfigError
    from mltool.runtime.options import PredictorOptions
    from mltool.runtime.predictor import Predictor
    from mltool.serve.config import ServeConfig

    with pytest.raises(ConfigError, match="'thread' is not a Predictor option") as e:
        ServeConfig(model=str(digits_int8), predictor={"thread": 2})
    assert "did you mean 'threads'" in e.value.one_line()
    with pytest.raises(ConfigError, match="'topk' is not a Predictor option"):
        Predictor(digits_int8, topk=5)
    a = Predictor(digits_int8, top_k=5, threads=1)
    b = Predictor(digits_int8, PredictorOptions(top_k=5, threads=1))
    assert a.options == b.options and a.top_k == b.top_k == 5
    with pytest.raises(ConfigError, match="--iou 1.5 is not between 0 and 1"):
        PredictorOptions(iou=1.5).validate()
