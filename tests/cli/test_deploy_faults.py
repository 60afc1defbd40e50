"""`mltool deploy` when the device misbehaves (issue 18, items 10-12), against a real sshd on
loopback: a full SD card (a small tmpfs), a damaged current release, a probe that ends just
inside --command-timeout, a broken venv Python, a probe that prints something else, `current`
as a directory, and concurrent deploys with --keep 1. After each, `current` points at a whole,
probed model and the report says what happened on the device."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import fill_disk


@pytest.fixture(scope="session")
def two_models(converted_digits) -> dict:
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    return {"a": modes["int8"], "b": modes["float32" if "float32" in modes else "none"]}


class SmallDevice:
    """A device folder on its own small file system (a tmpfs), which tests can fill up."""

    def __init__(self, mount: Path, args: list[str]) -> None:
        self.mount = mount
        self.root = mount / "mltool"
        self.args = args

    def fill(self, leave: int) -> None:
        """Take all free space but ``leave`` bytes."""
        self.filler = fill_disk(self.mount, leave)

    def unfill(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_device(tmp_path, ssh_keys, small_disk):
    mount = small_disk("4m")
    root = mount / "mltool"
    root.mkdir()
    (root / "venv").symlink_to(Path(sys.prefix))  # as after --setup
    return SmallDevice(mount, ["--identity", str(ssh_keys["key"]), "--known-hosts", str(tmp_path / "known_hosts"),
                               "--remote-dir", str(root), "--trust-new-host"])


def _model_dir(root: Path, name: str = "digits") -> Path:
    return root / "models" / name


def _current(root: Path, name: str = "digits") -> str:
    return os.readlink(_model_dir(root, name) / "current").split("/")[-1]


def _releases(root: Path, name: str = "digits") -> list[str]:
    return sorted(p.name for p in (_model_dir(root, name) / "releases").iterdir())


def _fake_venv(root: Path, body: str) -> Path:
    """Replace the device venv's python with a shell script (``$REAL`` is the real interpreter)."""
    (root / "venv").unlink()
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    py = bin_dir / "python"
    py.write_text(f"#!/bin/sh\nREAL={sys.executable}\n{body}\n")
    py.chmod(0o755)
    return py


def _device_root(deploy_args: list[str]) -> Path:
    return Path(deploy_args[deploy_args.index("--remote-dir") + 1])


def test_damaged_current_release_is_kept_until_its_replacement_is_committed(cli, sshd, small_device, two_models):
    """Item 10: space is checked before anything is deleted; a damaged current release is
    replaced file by file once the new copy is verified and probed, so `current` never dangles."""
    server = sshd()
    root = small_device.root
    r = cli(["deploy", server.target, two_models["a"], *small_device.args, "--json"])
    assert r.exit_code == 0, r.stderr
    rid = r.json()["hosts"][0]["release"]
    release = _model_dir(root) / "releases" / rid
    good = two_models["a"].read_bytes()
    release.chmod(0o700)  # as deployed by an earlier version: the next deploy makes it readable
    model = release / "model.tflite"
    model.write_bytes(bytes(b ^ 0xFF for b in good[:4096]) + good[4096:])  # damaged in place (SD card rot)

    small_device.fill(leave=len(good))  # room for one copy, not two
    r = cli(["deploy", server.target, two_models["a"], *small_device.args, "--json"])
    assert r.exit_code == 3, r.stderr
    assert _current(root) == rid and (_model_dir(root) / "current" / "model.tflite").is_file()  # not dangling
    assert _releases(root) == [rid]  # neither deleted nor an upload left behind
    msg = r.json()["hosts"][0]["message"]
    assert f"deploying this {len(good)}-byte model needs {2 * len(good)} (twice the model" in msg
    assert "nothing was changed" in msg

    small_device.unfill()
    r = cli(["deploy", server.target, two_models["a"], *small_device.args, "--json"])
    assert r.exit_code == 0, r.stderr
    host = r.json()["hosts"][0]
    assert host["status"] == "changed" and "repaired" in host["message"] and host["probe"]["runtime"] == "ai_edge_litert"
    assert (_model_dir(root) / "current" / "model.tflite").read_bytes() == good
    assert _releases(root) == [rid]
    assert stat.S_IMODE(release.stat().st_mode) & 0o055 == 0o055  # a service user can read it (item 12)


@pytest.mark.parametrize("finish_s, probe_s, abandon_s, expected", [
    (3.0, 1.5, 0.0, "failed"),  # the probe ends just inside --command-timeout 4, after the client gave up
    (4.5, 0.0, 3.0, "changed"),  # the device switches after the timeout, before the client's check arrives
])
def test_probe_ending_just_inside_the_command_timeout_is_reported_as_it_happened(cli, sshd, deploy_args, two_models,
                                                                                finish_s, probe_s, abandon_s, expected):
    """Item 11: the device is slow to start the finish step (and the probe, and the client's
    check after its timeout). The report and the device agree afterwards: no 'failed' for a
    host that switched."""
    server = sshd()
    root = _device_root(deploy_args)
    slow = root / "slow"
    _fake_venv(root, f'if [ -e {slow} ]; then\n  [ "$3" = finish ] && sleep {finish_s}\n'
                     f'  [ "$3" = abandon ] && sleep {abandon_s}\n'
                     f'  case "$3" in *.tflite) sleep {probe_s};; esac\nfi\nexec "$REAL" "$@"')
    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host", "--json"])
    assert r.exit_code == 0, r.stderr
    good = _current(root)
    slow.touch()
    r = cli(["deploy", server.target, two_models["b"], *deploy_args, "--command-timeout", "4", "--json"])
    host = r.json()["hosts"][0]
    time.sleep(5)  # whatever the device was still doing has ended
    if host["status"] == "changed":
        assert _current(root) == host["release"] and r.exit_code == 0
    else:
        assert _current(root) == good, "the device switched after the client reported failure"
        assert _releases(root) == [good]
    assert host["status"] == expected, host["message"]
    if expected == "failed":
        assert r.exit_code == 3 and "timed out after 4s: nothing was switched" in host["message"], host["message"]
    else:
        assert host["message"].endswith(" (the device finished after --command-timeout)"), host["message"]
    slow.unlink()
    listed = cli(["releases", server.target, *deploy_args, "--json"]).json()["models"]["digits"]
    assert listed["current"] == _current(root)


def test_broken_venv_python_is_named_and_other_operations_still_work(cli, sshd, deploy_args, two_models):
    """Item 12: a venv python that exits 1 without a word."""
    server = sshd()
    root = _device_root(deploy_args)
    assert cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host"]).exit_code == 0
    good = _current(root)
    py = _fake_venv(root, "exit 1")
    r = cli(["releases", server.target, *deploy_args, "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["models"]["digits"]["current"] == good
    r = cli(["deploy", server.target, two_models["b"], *deploy_args, "--json"])
    assert r.exit_code == 3
    msg = r.json()["hosts"][0]["message"]
    assert f"the device's Python {py} exited 1 without a message" in msg and "mltool deploy HOST --setup" in msg, msg
    assert _current(root) == good and _releases(root) == [good]


def test_probe_printing_something_else_is_a_probe_failure(cli, sshd, deploy_args, two_models):
    server = sshd()
    root = _device_root(deploy_args)
    assert cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host"]).exit_code == 0
    good = _current(root)
    _fake_venv(root, 'case "$3" in *.tflite) echo "hello from sitecustomize"; exit 0;; esac\nexec "$REAL" "$@"')
    r = cli(["deploy", server.target, two_models["b"], *deploy_args, "--json"])
    assert r.exit_code == 3
    msg = r.json()["hosts"][0]["message"]
    assert "the probe printed 'hello from sitecustomize' instead of its JSON result" in msg, msg
    assert "JSONDecodeError" not in msg
    assert _current(root) == good and _releases(root) == [good]  # the upload did not stay in releases/


def test_current_as_a_directory_is_refused_before_the_upload(cli, sshd, deploy_args, two_models):
    server = sshd()
    root = _device_root(deploy_args)
    cur = _model_dir(root) / "current"
    cur.mkdir(parents=True)
    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host", "--json"])
    assert r.exit_code == 3
    host = r.json()["hosts"][0]
    assert f"{cur} is a directory, not the link mltool switches: move it away" in host["message"], host["message"]
    assert "IsADirectoryError" not in host["message"] and host["bytes_sent"] == 0
    assert sorted(p.name for p in _model_dir(root).iterdir()) == ["current"]  # nothing uploaded, no .current-* link


def test_concurrent_deploys_of_different_models_with_keep_1(sshd, ssh_keys, converted_digits, tmp_path):
    """Item 12: two deploys of different models to one name with --keep 1: one's prune must not
    delete the other's committed, not yet switched release (it gave FileNotFoundError)."""
    from mltool.deploy import DeployConfig, SshOptions, deploy_host

    models = [Path(m["path"]) for m in converted_digits["modes"]][:3]
    assert len({m.read_bytes() for m in models}) == 3
    server = sshd()
    root = tmp_path / "dev" / "mltool"
    root.mkdir(parents=True)
    (root / "venv").symlink_to(Path(sys.prefix))
    ssh = SshOptions(identity=ssh_keys["key"], known_hosts=tmp_path / "kh", trust_new_host=True)

    def deploy(model: Path):
        return deploy_host(server.target, DeployConfig(model=model, root=str(root), ssh=ssh, keep=1))

    assert deploy(models[0]).status == "changed"
    # probes that take a while, so both deploys are between commit and switch at once
    _fake_venv(root, 'case "$3" in *.tflite) sleep 1;; esac\nexec "$REAL" "$@"')
    for _ in range(2):
        assert deploy(models[0]).status in ("changed", "unchanged")  # neither of the two is on the device
        results: list = []
        barrier = threading.Barrier(2)

        def run(model: Path) -> None:
            barrier.wait()
            results.append(deploy(model))

        threads = [threading.Thread(target=run, args=(m,)) for m in models[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for res in results:
            assert res.status == "changed" or (
                res.status == "failed" and "another deploy pruned release" in res.message), res.message
            assert "Error" not in res.message, res.message
        assert any(r.status == "changed" for r in results)
        assert _releases(root) == [_current(root)]  # --keep 1, and current is whole
        assert (_model_dir(root) / "current" / "model.tflite").read_bytes() in {m.read_bytes() for m in models[1:]}
