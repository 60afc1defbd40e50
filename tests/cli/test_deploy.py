"""`mltool deploy` against real OpenSSH servers on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def two_models(converted_digits) -> dict:
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    return {"a": modes["int8"], "b": modes["float32" if "float32" in modes else "none"]}


def _device(tmp_path: Path, name: str = "digits") -> Path:
    return tmp_path / "device" / "mltool" / "models" / name


def _current(tmp_path: Path, name: str = "digits") -> str:
    return os.readlink(_device(tmp_path, name) / "current").split("/")[-1]


def test_first_contact_refused_then_trusted(cli, sshd, deploy_args, two_models, tmp_path):
    server = sshd()
    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--json"])
    assert r.exit_code == 4
    host = r.json()["hosts"][0]
    assert host["status"] == "unreachable" and host["bytes_sent"] == 0
    assert f"unknown host key for [127.0.0.1]:{server.port} (ssh-ed25519 {server.fingerprint})" in host["message"]
    assert "--trust-new-host" in host["message"]
    assert not (tmp_path / "known_hosts").exists() and not _device(tmp_path).exists()
    assert server.fingerprint.startswith("SHA256:")

    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host", "--json"])
    assert r.exit_code == 0, r.stderr
    host = r.json()["hosts"][0]
    assert host["status"] == "changed" and host["bytes_sent"] == two_models["a"].stat().st_size
    assert host["probe"]["runtime"] == "ai_edge_litert" and host["probe"]["inputs"] == [[1, 8, 8, 1]]
    assert f"[127.0.0.1]:{server.port} ssh-ed25519 " in (tmp_path / "known_hosts").read_text()
    rel = _device(tmp_path) / "releases" / host["release"]
    assert (rel / "model.tflite").read_bytes() == two_models["a"].read_bytes()
    assert _current(tmp_path) == host["release"]


def test_changed_host_key_always_refused(cli, sshd, deploy_args, two_models, tmp_path):
    server = sshd()
    assert cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host"]).exit_code == 0
    old = server.fingerprint
    server.stop()
    server.new_host_key()
    server.start()
    r = cli(["deploy", server.target, two_models["b"], *deploy_args, "--trust-new-host", "--json"])
    assert r.exit_code == 4
    msg = r.json()["hosts"][0]["message"]
    assert "HOST KEY CHANGED" in msg and old in msg and server.fingerprint in msg and "ssh-keygen -R" in msg


def test_deploy_unchanged_second_model_releases_and_rollback(cli, sshd, deploy_args, two_models, tmp_path):
    server = sshd()
    base = [*deploy_args, "--trust-new-host"]
    a = cli(["deploy", server.target, two_models["a"], *base, "--json"]).json()["hosts"][0]
    again = cli(["deploy", server.target, two_models["a"], *base, "--json"]).json()["hosts"][0]
    assert again["status"] == "unchanged" and again["bytes_sent"] == 0 and again["release"] == a["release"]
    b = cli(["deploy", server.target, two_models["b"], *base, "--json"]).json()["hosts"][0]
    assert b["status"] == "changed" and b["previous"] == a["release"] and _current(tmp_path) == b["release"]
    other = cli(["deploy", server.target, two_models["a"], *base, "--name", "second", "--json"]).json()["hosts"][0]
    assert other["status"] == "changed" and _current(tmp_path, "second") == a["release"]

    conn = [a_ for a_ in deploy_args if a_ != "--trust-new-host"]
    rel = cli(["releases", server.target, *conn, "--json"]).json()
    assert set(rel["models"]) == {"digits", "second"}
    digits = rel["models"]["digits"]
    assert [r["id"] for r in digits["releases"]] == [a["release"], b["release"]] and digits["current"] == b["release"]
    assert digits["releases"][0]["task"] == "classification" and digits["releases"][0]["trained_on"] == "digits"
    assert digits["releases"][0]["quantization"] == "int8"

    r = cli(["rollback", server.target, "--name", "digits", *conn, "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"host": f"127.0.0.1:{server.port}", "name": "digits", "current": a["release"], "previous": b["release"]}
    assert _current(tmp_path) == a["release"]
    r = cli(["rollback", server.target, "--name", "digits", "--to", b["release"][:6], *conn, "--json"])
    assert r.json()["current"] == b["release"] and _current(tmp_path) == b["release"]
    r = cli(["rollback", server.target, "--name", "digits", "--to", "ffff", *conn])
    assert r.exit_code == 2 and "release 'ffff' does not exist" in r.stderr
    r = cli(["rollback", server.target, *conn])
    assert r.exit_code == 2 and "has 2 models (digits, second)" in r.stderr


def test_keep_prunes_old_releases(cli, sshd, deploy_args, two_models, converted_digits, tmp_path):
    server = sshd()
    paths = [Path(m["path"]) for m in converted_digits["modes"]][:4]
    for p in paths:
        assert cli(["deploy", server.target, p, *deploy_args, "--trust-new-host", "--name", "m", "--keep", "2"]).exit_code == 0
    releases = sorted(p.name for p in (_device(tmp_path, "m") / "releases").iterdir())
    assert len(releases) == 2 and _current(tmp_path, "m") in releases


@pytest.fixture(scope="session")
def big_model(tmp_path_factory) -> Path:
    """A valid ~14 MB float32 .tflite (one big Dense layer)."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(3500), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path_factory.mktemp("big") / "big.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    assert path.stat().st_size > 13_000_000
    return path


def test_upload_killed_half_way_leaves_current_intact(cli, sshd, deploy_args, two_models, big_model, tmp_path):
    server = sshd()
    first = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host", "--name", "big", "--json"])
    assert first.exit_code == 0, first.stderr
    good = _current(tmp_path, "big")
    releases = _device(tmp_path, "big") / "releases"
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "deploy", server.target, str(big_model), *deploy_args, "--name", "big"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = big_model.stat().st_size
    seen = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(releases.glob(".tmp-*/model.tflite.part"))
        if parts:
            seen = parts[0].stat().st_size
            if 0 < seen < total:
                proc.kill()
                break
        time.sleep(0.002)
    proc.wait()
    assert 0 < seen < total, "did not catch the upload in flight"
    assert _current(tmp_path, "big") == good
    assert [p.name for p in releases.iterdir() if not p.name.startswith(".")] == [good]
    assert list(releases.glob(".tmp-*"))  # the stale upload is still there...
    r = cli(["deploy", server.target, big_model, *deploy_args, "--name", "big", "--json"])
    assert r.exit_code == 0, r.stderr
    assert not list(releases.glob(".tmp-*"))  # ...and the next deploy removed it
    assert _current(tmp_path, "big") == r.json()["hosts"][0]["release"]


def test_model_failing_probe_never_becomes_current(cli, sshd, deploy_args, two_models, unrunnable_model, tmp_path):
    server = sshd()
    assert cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host"]).exit_code == 0
    good = _current(tmp_path)
    r = cli(["deploy", server.target, unrunnable_model, *deploy_args, "--name", "digits", "--json"])
    assert r.exit_code == 3
    host = r.json()["hosts"][0]
    assert host["status"] == "failed"
    assert host["message"].startswith(f"probe failed on 127.0.0.1:{server.port}: ai_edge_litert could not run the model")
    assert "250" in host["message"]
    assert _current(tmp_path) == good
    assert [p.name for p in (_device(tmp_path) / "releases").iterdir()] == [good]


def test_unreachable_and_silent_hosts_fail_within_timeout(cli, deploy_args, two_models):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port_closed = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts, never speaks SSH
    t0 = time.monotonic()
    r = cli(["deploy", f"127.0.0.1:{port_closed}", f"127.0.0.1:{silent.getsockname()[1]}", two_models["a"],
             *deploy_args, "--connect-timeout", "1.5", "--json"])
    elapsed = time.monotonic() - t0
    silent.close()
    assert r.exit_code == 4
    hosts = r.json()["hosts"]
    assert [h["status"] for h in hosts] == ["unreachable", "unreachable"]
    assert all("cannot reach" in h["message"] for h in hosts)
    assert elapsed < 10


def test_fleet_inventory_limit_and_one_host_down(cli, sshd, deploy_args, two_models, tmp_path):
    servers = [sshd(f"pi{i}") for i in range(4)]
    servers[2].stop()
    inv = tmp_path / "inventory.yml"
    lines = ["hosts:"]
    for i, s in enumerate(servers):
        labels = "[camera, kitchen]" if i < 2 else "[camera]"
        lines.append(f"  pi{i}: {{address: 127.0.0.1, port: {s.port}, labels: {labels}}}")
    lines += ["groups:", "  indoor: [pi0, pi1]", "  outdoor: [pi2, pi3]"]
    inv.write_text("\n".join(lines) + "\n")
    # each server has its own device folder so results are per host
    r = cli(["deploy", "--inventory", inv, two_models["a"], *deploy_args, "--trust-new-host", "--parallel", "4", "--json"])
    assert r.exit_code == 4, r.stderr
    res = r.json()
    status = {h["host"].split(" ")[0]: h["status"] for h in res["hosts"]}
    # All four "devices" are this machine and share one folder: exactly one deploy switches it,
    # the concurrent others find it current (this also proves concurrent deploys do not collide).
    assert status["pi2"] == "unreachable"
    assert sorted(status[h] for h in ("pi0", "pi1", "pi3")) in (["changed", "unchanged", "unchanged"],
                                                               ["changed", "changed", "unchanged"],
                                                               ["changed", "changed", "changed"])
    assert res["counts"]["unreachable"] == 1
    assert "unreachable" in r.stderr and "pi2" in r.stderr

    r = cli(["deploy", "--inventory", inv, "--limit", "kitchen", two_models["b"], *deploy_args, "--json"])
    assert r.exit_code == 0 and sorted(h["host"].split(" ")[0] for h in r.json()["hosts"]) == ["pi0", "pi1"]
    r = cli(["deploy", "--inventory", inv, "--limit", "kitchn", two_models["b"], *deploy_args])
    assert r.exit_code == 2 and "did you mean 'kitchen'" in r.stderr


def test_canary_batch_stops_rollout(cli, sshd, deploy_args, two_models, tmp_path):
    servers = [sshd(f"c{i}") for i in range(4)]
    servers[0].stop()
    targets = [s.target for s in servers]
    r = cli(["deploy", *targets, two_models["a"], *deploy_args, "--trust-new-host", "--batch", "1,100%", "--json"])
    assert r.exit_code == 4
    res = r.json()
    assert res["batches"] == [1, 3] and res["stopped_early"] is True
    assert [h["status"] for h in res["hosts"]] == ["unreachable", "skipped", "skipped", "skipped"]
    assert "rollout stopped after batch 1" in res["hosts"][1]["message"]
    r = cli(["deploy", *targets, two_models["a"], *deploy_args, "--trust-new-host", "--batch", "1,100%", "--max-fail-pct", "30", "--json"])
    statuses = [h["status"] for h in r.json()["hosts"]]
    assert statuses[0] == "unreachable" and set(statuses[1:]) <= {"changed", "unchanged"} and "changed" in statuses


def test_ssh_config_alias(cli, sshd, ssh_keys, deploy_args, two_models, tmp_path, monkeypatch):
    server = sshd()
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host kitchen-pi\n  HostName 127.0.0.1\n  Port {server.port}\n  IdentityFile {ssh_keys['key']}\n")
    monkeypatch.setenv("MLTOOL_SSH_CONFIG", str(cfg))
    args = deploy_args[2:]  # no --identity: the key comes from the ssh config
    r = cli(["deploy", "kitchen-pi", two_models["a"], *args, "--trust-new-host", "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["hosts"][0]["host"] == "kitchen-pi:" + str(server.port)


def test_service_without_systemd_is_a_clear_failure(cli, sshd, deploy_args, two_models):
    server = sshd()
    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host",
             "--service", "infer --camera --alert-threshold 0.8", "--json"])
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd")
    assert r.exit_code == 3
    msg = r.json()["hosts"][0]["message"]
    assert "systemd is not running on 127.0.0.1" in msg and "--service cannot install a unit" in msg


def test_service_unit_rendering():
    from mltool.deploy.service import render_unit
    from mltool.layout import DeviceLayout

    unit = render_unit(DeviceLayout("~/mltool"), "fire", "infer --camera --alert-threshold 0.8", "/home/pi")
    assert "ExecStart=/home/pi/mltool/venv/bin/mltool infer /home/pi/mltool/models/fire/current/model.tflite --camera --alert-threshold 0.8" in unit
    assert "Restart=on-failure" in unit and "WantedBy=default.target" in unit
    assert "SuccessExitStatus=130" in unit  # stopped by systemd: 130 after the summary, not a failure
    assert "EnvironmentFile=-/home/pi/mltool/mltool.env" in unit  # secrets (e.g. MLTOOL_MQTT_PASSWORD) stay off the command line


def test_remote_bench_shows_device_numbers(cli, sshd, deploy_args, two_models, tmp_path):
    server = sshd()
    r = cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host", "--bench", "--json"])
    assert r.exit_code == 0, r.stderr
    bench = r.json()["hosts"][0]["bench"]["rows"][0]
    assert bench["model"].endswith("models/digits/current/model.tflite") and bench["latency_ms"]["median"] > 0
    assert "on-device bench (ai_edge_litert" in r.stderr


def test_bare_device_without_runtime_or_mltool(cli, sshd, deploy_args, two_models, tmp_path):
    server = sshd()
    bare = deploy_args[:-1] + [str(tmp_path / "bare-device" / "mltool")]  # no venv there
    r = cli(["deploy", server.target, two_models["a"], *bare, "--trust-new-host", "--json"])
    if r.exit_code == 0:
        pytest.skip("this machine's system python3 has a TFLite runtime")
    assert r.exit_code == 3
    msg = r.json()["hosts"][0]["message"]
    assert "probe failed on" in msg and "no TFLite runtime on the device" in msg and "--setup" in msg
    assert not (tmp_path / "bare-device" / "mltool" / "models" / "digits" / "current").exists()
    r = cli(["deploy", server.target, two_models["a"], *bare, "--no-probe", "--bench", "--json"])
    assert r.exit_code == 3
    assert "mltool is not installed on" in r.json()["hosts"][0]["message"]


def test_target_parsing(monkeypatch, tmp_path):
    from mltool.deploy.ssh import parse_target
    from mltool.errors import ConfigError

    monkeypatch.setenv("MLTOOL_SSH_CONFIG", str(tmp_path / "none"))
    t = parse_target("pi@raspberrypi.local:2222")
    assert (t.user, t.hostname, t.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_target("[::1]:22").hostname == "::1"
    with pytest.raises(ConfigError):
        parse_target("a b@c")


@pytest.mark.slow
def test_setup_prepares_a_fresh_device(cli, sshd, deploy_args, two_models, tmp_path):
    """Builds mltool's wheel here, pushes it, creates ROOT/venv there and installs mltool[device,mqtt]
    (so `infer --mqtt` and I2C sources work on the device with nothing more to install)."""
    server = sshd()
    fresh = deploy_args[:-1] + [str(tmp_path / "fresh-device" / "mltool")]
    r = cli(["deploy", server.target, two_models["a"], *fresh, "--trust-new-host", "--setup", "--bench", "--json"])
    assert r.exit_code == 0, r.stderr
    host = r.json()["hosts"][0]
    setup = host["setup"]
    assert setup["installed"]["mltool"] == "0.1.0" and "ai-edge-litert" in setup["installed"]
    assert setup["installed"]["paho-mqtt"].startswith("2.") and "smbus2" in setup["installed"]
    assert setup["venv"].endswith("fresh-device/mltool/venv")
    assert (tmp_path / "fresh-device" / "mltool" / "venv" / "bin" / "mltool").exists()
    assert host["probe"]["runtime"] == "ai_edge_litert" and host["bench"]["rows"][0]["latency_ms"]["median"] > 0
    assert setup["smoke_test"]["status"] == "ok" and setup["runtime_pin"] is None
    assert "set up Python" in r.stderr
    # the venv sees the system's packages (Pi OS's picamera2), its own still first
    assert setup["venv_state"] == "created" and setup["arch"] in ("amd64", "arm64")
    cfg = (tmp_path / "fresh-device" / "mltool" / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg


@pytest.mark.slow
def test_setup_pins_the_runtime_on_a_device_without_sftp(cli, sshd, deploy_args, two_models, tmp_path):
    """A device set up differently: no SFTP subsystem. --setup alone (no model) succeeds, the
    pinned runtime is installed, remembered and reported, and models deploy over exec."""
    server = sshd("nosftp", sftp=False)
    root = tmp_path / "pinned-device" / "mltool"
    args = deploy_args[:-1] + [str(root), "--trust-new-host"]
    r = cli(["deploy", server.target, *args, "--setup", "--runtime", "ai-edge-litert==2.1.6", "--json"])
    assert r.exit_code == 0, r.stderr
    host = r.json()["hosts"][0]
    assert host["status"] == "ready" and host["setup"]["installed"]["ai-edge-litert"] == "2.1.6"
    assert host["setup"]["runtime_pin"] == "ai-edge-litert==2.1.6" and host["setup"]["pin_remembered"] is False
    assert host["setup"]["smoke_test"]["status"] == "ok" and host["setup"]["smoke_test"]["version"] == "2.1.6"
    assert (root / "runtime.txt").read_text().strip() == "ai-edge-litert==2.1.6"
    assert "runtime pinned to ai-edge-litert==2.1.6" in r.stderr
    # the device's mltool is replaced by the one built here even though its version did not change
    installed = next((root / "venv" / "lib").glob("python3*/site-packages/mltool/__init__.py"))
    installed.write_text(installed.read_text() + "\nOLD_COPY = True\n")
    # a venv an earlier mltool made without the system's packages is switched over, keeping the pin
    cfg = root / "venv" / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("include-system-site-packages = true", "include-system-site-packages = false"))
    r = cli(["deploy", server.target, *args, "--setup", "--json"])  # later setups keep the pin
    host = r.json()["hosts"][0]
    assert r.exit_code == 0 and host["setup"]["pin_remembered"] is True and host["setup"]["installed"]["ai-edge-litert"] == "2.1.6"
    assert host["setup"]["venv_state"] == "upgraded" and "include-system-site-packages = true" in cfg.read_text()
    assert "venv now sees the system's packages" in r.stderr
    assert "OLD_COPY" not in installed.read_text()
    r = cli(["deploy", server.target, two_models["a"], *args, "--json"])
    host = r.json()["hosts"][0]
    assert r.exit_code == 0 and host["status"] == "changed" and host["upload"] == "exec"
    assert host["probe"]["version"] == "2.1.6"


def test_logs_without_systemd(cli, sshd, deploy_args, two_models):
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd")
    server = sshd()
    assert cli(["deploy", server.target, two_models["a"], *deploy_args, "--trust-new-host"]).exit_code == 0
    r = cli(["logs", server.target, "--name", "digits", *deploy_args[:4]])
    assert r.exit_code == 3 and "systemd is not running on 127.0.0.1" in r.stderr


def test_proxy_jump_through_a_bastion(cli, sshd, ssh_keys, deploy_args, two_models, tmp_path, monkeypatch):
    bastion, device = sshd("bastion"), sshd("behind")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  IdentityFile {ssh_keys['key']}\n"
        f"Host pi-behind\n  HostName 127.0.0.1\n  Port {device.port}\n  IdentityFile {ssh_keys['key']}\n  ProxyJump bastion\n"
    )
    monkeypatch.setenv("MLTOOL_SSH_CONFIG", str(cfg))
    args = deploy_args[2:]
    r = cli(["deploy", "pi-behind", two_models["a"], *args, "--trust-new-host", "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["hosts"][0]["status"] == "changed"
    known = (tmp_path / "known_hosts").read_text()
    assert f"[127.0.0.1]:{bastion.port}" in known and f"[127.0.0.1]:{device.port}" in known
    bastion.stop()  # the device is only reachable through the bastion
    r = cli(["deploy", "pi-behind", two_models["b"], *args, "--connect-timeout", "2", "--json"])
    assert r.exit_code == 4
    assert "cannot reach" in r.json()["hosts"][0]["message"] and str(bastion.port) in r.json()["hosts"][0]["message"]


def test_device_without_sftp_gets_the_upload_over_exec(cli, sshd, deploy_args, two_models, big_model, tmp_path):
    server = sshd("nosftp", sftp=False)
    r = cli(["deploy", server.target, big_model, *deploy_args, "--trust-new-host", "--name", "big", "--json"])
    assert r.exit_code == 0, r.stderr
    host = r.json()["hosts"][0]
    assert host["status"] == "changed" and host["upload"] == "exec" and host["bytes_sent"] == big_model.stat().st_size
    assert (_device(tmp_path, "big") / "current" / "model.tflite").read_bytes() == big_model.read_bytes()
    again = cli(["deploy", server.target, big_model, *deploy_args, "--name", "big", "--json"]).json()["hosts"][0]
    assert again["status"] == "unchanged" and again["bytes_sent"] == 0


def test_connection_lost_mid_upload_is_one_line_and_nothing_switched(sshd, deploy_args, two_models, big_model, tmp_path):
    server = sshd()
    first = subprocess.run([sys.executable, "-m", "mltool", "deploy", server.target, str(two_models["a"]), *deploy_args,
                            "--trust-new-host", "--name", "big"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    good = _current(tmp_path, "big")
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "deploy", server.target, str(big_model), *deploy_args,
                             "--name", "big", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    releases = _device(tmp_path, "big") / "releases"
    killed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        parts = list(releases.glob(".tmp-*/model.tflite.part"))
        if parts and 0 < parts[0].stat().st_size < big_model.stat().st_size:
            # the device side goes away: kill the sshd processes serving this connection
            children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
            for pid in children:
                os.kill(int(pid), 9)
            killed = bool(children)
        time.sleep(0.002)
    out, err = proc.communicate(timeout=60)
    assert killed, "did not catch the upload in flight"
    assert proc.returncode in (3, 4)
    host = json.loads(out)["hosts"][0]
    assert host["status"] in ("failed", "unreachable") and "Traceback" not in err
    assert "the SSH connection broke" in host["message"] or "cannot reach" in host["message"]
    assert _current(tmp_path, "big") == good


def test_library_calls_are_the_cli_calls(sshd, ssh_keys, two_models, digits_run, tmp_path):
    from mltool.convert import ConvertCheckError, ConvertConfig, convert
    from mltool.deploy import DeployConfig, SshOptions, deploy_host

    server = sshd()
    root = tmp_path / "lib-device" / "mltool"
    root.mkdir(parents=True)
    (root / "venv").symlink_to(Path(sys.prefix))  # as after --setup
    cfg = DeployConfig(model=two_models["a"], root=str(root),
                       ssh=SshOptions(identity=ssh_keys["key"], known_hosts=tmp_path / "kh", trust_new_host=True))
    res = deploy_host(server.target, cfg)
    assert res.status == "changed", res.message
    assert (root / "models" / "digits" / "current" / "model.tflite").read_bytes() == two_models["a"].read_bytes()
    with pytest.raises(ConvertCheckError) as e:
        convert(ConvertConfig(model=digits_run, quantize="dynamic", out=tmp_path / "conv", max_drop=-1.0))
    assert "more than --max-drop -1" in e.value.one_line() and e.value.result.modes[0].mode == "dynamic"
    assert (tmp_path / "conv" / "model_dynamic.tflite").is_file()


def test_runtime_pin_needs_setup_and_a_runtime_requirement(cli, deploy_args, two_models):
    r = cli(["deploy", "pi@127.0.0.1:9", two_models["a"], *deploy_args, "--runtime", "ai-edge-litert==2.1.6"])
    assert r.exit_code == 2 and "--runtime pins the runtime --setup installs" in r.stderr
    r = cli(["deploy", "pi@127.0.0.1:9", *deploy_args, "--setup", "--runtime", "numpy; rm -rf /"])
    assert r.exit_code == 2 and "is not a requirement for ai-edge-litert or tflite-runtime" in r.stderr


CRASHING_RUNTIME = """
import os, signal
__version__ = "9.9.9"
"""
CRASHING_INTERPRETER = """
import os, signal
class Interpreter:
    def __init__(self, *a, **k):
        os.kill(os.getpid(), signal.SIGSEGV)   # what ai-edge-litert 2.2/2.3 do under qemu-user arm64
def load_delegate(*a, **k):
    raise ValueError("no delegates")
"""


def test_doctor_reports_a_crashing_runtime_as_a_crash(tmp_path):
    pkg = tmp_path / "fake" / "ai_edge_litert"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(CRASHING_RUNTIME)
    (pkg / "interpreter.py").write_text(CRASHING_INTERPRETER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "mltool", "doctor", "--json", "--no-camera-probe"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    rep = json.loads(proc.stdout)
    assert rep["smoke_test"] == {"status": "crash", "signal": "SIGSEGV",
                                 "detail": "the runtime crashed (SIGSEGV) creating an interpreter"}
    check = next(c for c in rep["checks"] if c["name"] == "runtime smoke test")
    assert check["status"] == "missing" and "ai-edge-litert==2.1.6" in check["fix"]


@pytest.mark.parametrize("probe,arm32,arch", [
    ({"machine": "aarch64", "bits": 64, "dpkg_arch": "arm64"}, False, "arm64"),
    ({"machine": "aarch64", "bits": 32, "dpkg_arch": "armhf"}, True, "armhf"),  # 32-bit Pi OS on a Pi 4/5's 64-bit kernel
    ({"machine": "aarch64", "bits": 32, "dpkg_arch": ""}, True, "armhf"),
    ({"machine": "armv7l", "bits": 32, "dpkg_arch": "armhf"}, True, "armhf"),
    ({"machine": "x86_64", "bits": 64, "dpkg_arch": "amd64"}, False, "amd64"),
])
def test_device_platform_reads_the_userland_not_the_kernel(probe, arm32, arch):
    from mltool.deploy.setup import device_platform

    plat = device_platform(probe)
    assert (plat["arm32"], plat["arch"]) == (arm32, arch)


def test_32bit_trixie_and_armv6_are_refused_before_anything_is_installed():
    from mltool.deploy.errors import DeployError
    from mltool.deploy.setup import check_supported, device_platform

    trixie = {"machine": "armv7l", "bits": 32, "dpkg_arch": "armhf", "python": "3.13.5",
              "os": "Raspbian GNU/Linux 13 (trixie)"}
    with pytest.raises(DeployError) as e:
        check_supported("pi@zero2", trixie, device_platform(trixie))
    line = e.value.one_line()
    assert line.startswith("pi@zero2 runs 32-bit Raspbian GNU/Linux 13 (trixie) with Python 3.13.5: no TFLite runtime exists")
    assert "flash 64-bit Raspberry Pi OS" in line and "bookworm (Python 3.11)" in line
    bookworm = {**trixie, "python": "3.11.2", "os": "Raspbian GNU/Linux 12 (bookworm)"}
    check_supported("pi@pi3", bookworm, device_platform(bookworm))  # supported: tflite-runtime 2.14
    zero = {**bookworm, "machine": "armv6l"}
    with pytest.raises(DeployError, match="ARMv6 board"):
        check_supported("pi@zero", zero, device_platform(zero))
