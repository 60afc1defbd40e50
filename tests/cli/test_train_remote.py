"""`mltool train --on` against a real OpenSSH server on loopback: the "remote" machine is this one,
with its own remote dir. Its training venv is this test environment (a wrapper that runs this
interpreter on this checkout, recorded as set up), as `deploy_args` does for devices; the real
first-use setup (venv + pip install from a wheel built here) is the slow test at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _strip(history: str) -> list[str]:
    return [",".join(r.split(",")[:-1]) for r in history.splitlines()]  # drop the seconds column


@pytest.fixture
def train_host(tmp_path, ssh_keys, sshd):
    """(options for --on, the remote dir): a loopback host whose training venv is ready."""
    from mltool.deploy.ssh import SshOptions
    from mltool.train.remote import TrainLayout, mark_ready

    server = sshd("trainhost")
    root = tmp_path / "host" / "mltool"
    bindir = root / "train" / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} "$@"\n')
    os.chmod(bindir / "python", 0o755)
    kh = tmp_path / "known_hosts"
    args = ["--on", server.target, "--identity", str(ssh_keys["key"]), "--known-hosts", str(kh),
            "--trust-new-host", "--remote-dir", str(root)]
    opts = SshOptions(identity=ssh_keys["key"], known_hosts=kh, trust_new_host=True)
    with opts.session(server.target) as s:
        mark_ready(s, TrainLayout(str(root)), "train")
    return {"args": args, "root": root, "server": server}


def _no_partials(*dirs: Path) -> None:
    for d in dirs:
        assert [p for p in d.rglob(".partial-*")] == [], d


def test_digits_on_host_matches_local_run(cli, train_host, tmp_path):
    common = ["train", "digits", "--epochs", "2", "--limit", "400", "--seed", "3", "--json"]
    local = cli([*common, "--project", tmp_path / "local"])
    assert local.exit_code == 0, local.stderr
    r = cli([*common, "--project", tmp_path / "runs", *train_host["args"]])
    assert r.exit_code == 0, r.stderr
    remote = r.json()
    run = Path(remote["run_dir"])
    assert run == tmp_path / "runs" / "digits-1"
    lrun = Path(local.json()["run_dir"])
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in lrun.iterdir())
    assert remote["metrics"] == local.json()["metrics"] and remote["per_class"] == local.json()["per_class"]
    assert _strip((run / "history.csv").read_text()) == _strip((lrun / "history.csv").read_text())
    a, b = (json.loads((d / "mltool.json").read_text()) for d in (run, lrun))
    for key in ("created", "ran_on"):
        a.pop(key), b.pop(key)
    for d in (a, b):
        d["training"].pop("duration_s")
    assert a == b
    ran_on = json.loads((run / "mltool.json").read_text())["ran_on"]
    assert ran_on["via"] == "ssh" and ran_on["target"] == train_host["server"].target
    assert ran_on["remote_dir"] == str(train_host["root"]) and ran_on["job"].startswith("digits-")
    assert "epoch   1/2" in r.stderr and "epoch   2/2" in r.stderr  # streamed progress
    assert "trained on" in r.stderr and "over SSH" in r.stderr
    jobs = train_host["root"] / "train" / "jobs"
    assert list(jobs.iterdir()) == []  # the job folder is removed once the run is back
    _no_partials(tmp_path / "runs", train_host["root"])
