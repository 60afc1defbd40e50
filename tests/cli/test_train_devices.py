"""`--devices`: one device by default (numbers unchanged for a seed); N replicas under
MirroredStrategy, here on N logical CPU devices (a fresh process: devices are fixed once
TensorFlow's runtime starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_default_is_one_device_and_cpu_is_the_same_here(cli, tmp_path):
    args = ["train", "digits", "--epochs", "2", "--max-samples", "400", "--project", tmp_path, "--json"]
    auto = cli(args)
    assert auto.exit_code == 0, auto.stderr
    cpu = cli([*args, "--devices", "cpu"]).json()
    assert auto.json()["training"]["distribution"] == {"strategy": "none", "replicas": 1, "per_replica_batch": 32,
                                                       "devices": ["/CPU:0"]}
    assert cpu["metrics"] == auto.json()["metrics"]  # no GPU here: cpu is the one device auto picks


def test_two_logical_cpu_devices_mirrored(tmp_path, cli):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    p = subprocess.run([sys.executable, "-m", "mltool", "train", "digits", "--epochs", "3", "--max-samples", "600",
                        "--devices", "2", "--batch-size", "32", "--project", str(tmp_path), "--json"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    run = Path(out["run_dir"])
    info = json.loads((run / "mltool.json").read_text())
    assert info["training"]["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "per_replica_batch": 16,
                                                "devices": ["/CPU:0", "/CPU:1"], "logical_devices": True}
    assert info["training"]["batch_size"] == 32
    assert "training on 2 replicas (/CPU:0, /CPU:1, logical devices): MirroredStrategy" in p.stderr
    assert out["metrics"]["accuracy"] >= 0.6  # it learns (3 short epochs on 400 training digits)
    config = json.loads(__import__("zipfile").ZipFile(run / "model.keras").read("config.json"))
    bns = [layer for layer in config["config"]["layers"] if layer["class_name"] == "BatchNormalization"]
    assert len(bns) == 2 and all(layer["config"]["synchronized"] for layer in bns)  # SyncBatchNorm over replicas
    ev = cli(["evaluate", run, "--json"])  # the saved model loads and runs without any strategy
    assert ev.exit_code == 0, ev.stderr
    assert ev.json()["accuracy"] == ev.json()["recorded_accuracy"]


def test_doctor_train_names_the_devices_tensorflow_sees(cli):
    r = cli(["doctor", "--no-camera-probe", "--train", "--json"])
    out = r.json()
    assert out["training"]["devices"] == ["/physical_device:CPU:0"] and out["training"]["gpus"] == []
    check = next(c for c in out["checks"] if c["name"] == "training devices")
    assert check["status"] == "info" and check["detail"].endswith("CPU only (1 device(s): CPU:0)")
    assert check["fix"] == "for NVIDIA GPUs on Linux x86_64: pip install 'mltool-edge[train-gpu]'"
    assert "'mltool-edge[train-gpu]'" in r.stderr  # the table shows brackets (not read as Rich markup)


def test_doctor_train_without_tensorflow_says_what_to_install():
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from mltool.cli import main\n"
            "sys.argv = ['mltool', 'doctor', '--no-camera-probe', '--train', '--json']\n"
            "main()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(p.stdout)
    check = next(c for c in out["checks"] if c["name"] == "training devices")
    assert p.returncode == 1 and check["status"] == "missing" and check["detail"] == "TensorFlow is not installed"
    assert check["fix"].startswith("pip install 'mltool-edge[train]'")
