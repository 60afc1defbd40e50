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
    from tests.sshd import stand_in_venv

    server = sshd("trainhost")
    root = tmp_path / "host" / "mltool"
    stand_in_venv(root / "train" / "venv", REPO)
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
    common = ["train", "digits", "--epochs", "2", "--max-samples", "400", "--seed", "3", "--json"]
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
    assert f"127.0.0.1:{train_host['server'].port}: mltool[train] ready in {train_host['root']}/train/venv" in r.stderr
    jobs = train_host["root"] / "train" / "jobs"
    assert list(jobs.iterdir()) == []  # the job folder is removed once the run is back
    _no_partials(tmp_path / "runs", train_host["root"])


def test_dataset_sent_once_then_unchanged_or_used_in_place(cli, train_host, synth_fire_dir, tmp_path):
    import shutil

    data = tmp_path / "fire"
    shutil.copytree(synth_fire_dir, data)
    base = ["train", "fire", "--epochs", "1", "--image-size", "16", "--max-samples", "40", "--project", tmp_path / "runs",
            *train_host["args"], "--json"]
    first = cli([*base, "--data", data])
    assert first.exit_code == 0, first.stderr
    sent = first.json()["ran_on"]["data"]
    tar_size = sent["bytes_sent"]
    assert sent["status"] == "sent" and tar_size > sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    info = json.loads((Path(first.json()["run_dir"]) / "mltool.json").read_text())
    assert info["dataset"]["source"] == str(data)  # where the data lives here, not the host's copy
    again = cli([*base, "--data", data]).json()["ran_on"]["data"]
    assert again == {**sent, "status": "unchanged", "bytes_sent": 0, "files_sent": 0}
    assert "dataset fire: unchanged (0 files, 0 bytes sent)" in cli([*base, "--data", data]).stderr

    remote_copy = sent["remote"]
    assert remote_copy.startswith(str(train_host["root"] / "train" / "data"))
    there = cli([*base, "--data", f"host:{remote_copy}"])
    assert there.exit_code == 0, there.stderr
    assert there.json()["ran_on"]["data"] == {"remote": remote_copy}
    assert there.json()["metrics"] == first.json()["metrics"]

    # a changed dataset: only what changed travels; the host's copy then equals the local folder
    (data / "fire" / "extra.txt").write_text("changed")
    gone = sorted((data / "no_fire").iterdir())[0]
    gone.unlink()
    changed = cli([*base, "--data", data])
    assert changed.exit_code == 0, changed.stderr
    upd = changed.json()["ran_on"]["data"]
    assert upd["status"] == "updated" and upd["hash"] != sent["hash"] and upd["files_sent"] == 1
    assert 0 < upd["bytes_sent"] < tar_size // 20
    copy = Path(upd["remote"])
    local_files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == local_files
    assert (copy / "fire" / "extra.txt").read_text() == "changed" and not (copy / "no_fire" / gone.name).exists()
    assert Path(remote_copy, "no_fire", gone.name).is_file()  # the earlier version is untouched
    assert len(list((train_host["root"] / "train" / "data").iterdir())) == 2


def _start(args: list[str], tmp_path: Path, pause: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "MLTOOL_TEST_PAUSE_AT": pause}
    return subprocess.Popen([sys.executable, "-m", "mltool", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {text!r}: {seen}")


def _eventually(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _job_pid(root: Path) -> int:
    jobs = list((root / "train" / "jobs").iterdir())
    assert len(jobs) == 1
    return int((jobs[0] / "pid").read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("how", ["killed connection", "ctrl-c"])
def test_stopping_mid_epoch_leaves_nothing_on_either_side(train_host, tmp_path, how):
    root = train_host["root"]
    project = tmp_path / "runs"
    proc = _start(["train", "digits", "--epochs", "3", "--max-samples", "400", "--project", project, *train_host["args"]],
                  tmp_path, pause="epoch")
    _wait_for(proc, "paused at epoch")  # the remote run holds after its first epoch, mid-run
    pid = _job_pid(root)
    partials = list((root / "train" / "jobs").rglob(".partial-*"))
    assert len(partials) == 1  # the run there is half-made right now
    if how == "killed connection":
        proc.kill()  # the client dies without a word: only the dropped connection tells the host
        proc.wait(timeout=30)
    else:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        err = proc.stderr.read()
        assert rc == 130 and "Error: interrupted" in err, err
        assert "stopping job digits-" in err
    _eventually(lambda: _gone(pid))
    _eventually(lambda: list((root / "train" / "jobs").iterdir()) == [])
    _no_partials(root)
    assert not project.exists() or list(project.iterdir()) == []


def test_detach_then_attach(cli, train_host, tmp_path):
    project = tmp_path / "runs"
    r = cli(["train", "digits", "--epochs", "2", "--max-samples", "400", "--project", project, *train_host["args"],
             "--detach", "--json"])
    assert r.exit_code == 0, r.stderr
    job = r.json()["job"]
    assert r.json()["status"] == "running" and f"mltool train --attach --job {job}" in r.stderr
    assert (train_host["root"] / "train" / "jobs" / job / "job.json").is_file()
    assert not project.exists() or not any(project.iterdir())
    a = cli(["train", "--attach", "--json"])  # the latest detached run; host and keys from its record
    assert a.exit_code == 0, a.stderr
    out = a.json()
    assert out["ran_on"]["job"] == job and Path(out["run_dir"]) == project / "digits-1"
    assert (project / "digits-1" / "mltool.json").is_file() and "epoch   2/2" in a.stderr
    assert list((train_host["root"] / "train" / "jobs").iterdir()) == []
    again = cli(["train", "--attach"])
    assert again.exit_code == 2 and "Error: no detached run to attach to" in again.stderr


def test_detached_run_stopped_with_attach_stop(cli, train_host, tmp_path):
    r = cli(["train", "digits", "--epochs", "30", "--patience", "0", "--project", tmp_path / "runs", *train_host["args"],
             "--detach", "--json"])
    assert r.exit_code == 0, r.stderr
    job = r.json()["job"]
    pid = _job_pid(train_host["root"])
    s = cli(["train", "--attach", "--stop", "--job", job[:12]])
    assert s.exit_code == 0, s.stderr
    assert f"stopped job {job} on 127.0.0.1:{train_host['server'].port}" in s.stderr
    assert _gone(pid) and list((train_host["root"] / "train" / "jobs").iterdir()) == []
    _no_partials(train_host["root"])
    assert cli(["train", "--attach"]).exit_code == 2  # its record is gone too


def test_usage_errors(cli, tmp_path):
    r = cli(["train", "digits", "--detach"])
    assert r.exit_code == 2 and "Error: --detach needs --on USER@HOST" in r.stderr
    r = cli(["train", "digits", "--stop"])
    assert r.exit_code == 2 and "Error: --stop goes with --attach" in r.stderr
    r = cli(["train", "fire", "--data", "host:/srv/fire"])
    assert r.exit_code == 2 and "names a folder on the training host, but there is no --on" in r.stderr
    r = cli(["train"])
    assert r.exit_code == 2 and "Missing argument 'TASK'" in r.stderr
    r = cli(["train", "digits", "--devices", "two"])
    assert r.exit_code == 2 and "Error: --devices 'two' is not auto, cpu or a number of devices" in r.stderr
    r = cli(["train", "digits", "--devices", "3", "--batch-size", "32", "--project", tmp_path])
    assert r.exit_code == 2 and "--batch-size 32 does not split evenly over 3 replicas" in r.stderr


@pytest.mark.slow
def test_first_use_sets_up_a_real_venv_then_reuses_it(cli, sshd, ssh_keys, tmp_path):
    """The real first-use path: python3 -m venv on the host, mltool's wheel built here and
    pip-installed there with the train extra (TensorFlow from PyPI: minutes), then reused."""
    from mltool.train.remote import source_hash

    server = sshd("fresh")
    root = tmp_path / "fresh" / "mltool"
    args = ["train", "digits", "--epochs", "1", "--max-samples", "300", "--project", tmp_path / "runs", "--on", server.target,
            "--identity", ssh_keys["key"], "--known-hosts", tmp_path / "known_hosts", "--trust-new-host",
            "--remote-dir", root, "--json"]
    first = cli(args)
    assert first.exit_code == 0, first.stderr
    assert f"setting up {root}/train/venv on" in first.stderr and "installs TensorFlow" in first.stderr
    env = json.loads((root / "train" / "env.json").read_text())
    assert env["source"] == source_hash() and env["extra"] == "train" and env["tensorflow"]
    assert (root / "train" / "venv" / "bin" / "mltool").is_file()
    assert first.json()["ran_on"]["environment"] == {"extra": "train", "gpu": False}
    again = cli(args)
    assert again.exit_code == 0, again.stderr
    assert "setting up" not in again.stderr and "mltool[train] ready in" in again.stderr
    assert again.json()["metrics"] == first.json()["metrics"]
