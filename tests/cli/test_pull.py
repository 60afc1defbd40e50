"""Pull deploys: `mltool agent` processes with their own device roots, a real Mosquitto, a real
HTTP server on loopback that serves (and accepts PUT of) the artifacts, and the controller
(`mltool deploy/releases/rollback mqtt://...`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.artifact_server import ArtifactServer
from tests.conftest import REPO


@pytest.fixture(scope="session")
def two_models(converted_digits) -> dict:
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    return {"a": modes["int8"], "b": modes["float32" if "float32" in modes else "none"]}


def _rid(path: Path) -> str:
    from mltool.layout import release_id

    return release_id(path)


@pytest.fixture
def files(tmp_path):
    s = ArtifactServer(tmp_path / "files").start()
    yield s
    s.stop()


class Fleet:
    """Agents as real processes (`python -m mltool agent`), each with its own device root."""

    def __init__(self, tmp_path: Path, broker, mosquitto) -> None:
        self.tmp = tmp_path
        self.broker = broker
        self.procs: dict[str, subprocess.Popen] = {}
        self.args: dict[str, list[str]] = {}
        self.sub = mosquitto.subscriber(broker, ["fleet/agents/+/state", "fleet/agents/+/availability"])

    def root(self, name: str) -> Path:
        return self.tmp / "devices" / name

    def current(self, name: str, model: str = "digits") -> str | None:
        try:
            return os.readlink(self.root(name) / "models" / model / "current").split("/")[-1]
        except OSError:
            return None

    def start(self, name: str, *extra: str, url: str | None = None, env: dict | None = None) -> None:
        if name not in self.args:
            self.args[name] = [url or self.broker.url("fleet"), "--device", name, "--remote-dir", str(self.root(name)), *extra]
        before = len(self.sub.on(f"fleet/agents/{name}/state"))
        log = open(self.tmp / f"agent-{name}.log", "a")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "mltool", "agent", *self.args[name]], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO,
                                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        assert self.sub.wait_for(lambda ms: len([m for m in ms if m.topic == f"fleet/agents/{name}/state"]) > before, 30), \
            self.log(name)

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.terminate()
        p.wait(15)

    def log(self, name: str) -> str:
        return (self.tmp / f"agent-{name}.log").read_text()

    def state(self, name: str) -> dict:
        return self.sub.json(f"fleet/agents/{name}/state")[-1]

    def wait_current(self, name: str, rid: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.current(name) == rid and self.state(name)["models"].get("digits", {}).get("state") == "ok":
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@pytest.fixture
def fleet(tmp_path, mosquitto):
    broker = mosquitto.broker().start()
    f = Fleet(tmp_path, broker, mosquitto)
    yield f
    f.close()


def _deploy(cli, fleet, model, *extra):
    return cli(["deploy", fleet.broker.url("fleet"), model, "--name", "digits", "--wait", "60", "--json", *extra])


def test_first_unchanged_second_releases_and_rollback(cli, fleet, files, two_models):
    fleet.start("pi1", "--label", "type=camera")
    a, b = two_models["a"], two_models["b"]

    r = _deploy(cli, fleet, a, "--upload", files.url)
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["counts"] == {"changed": 1} and d["hosts"][0]["host"] == "pi1"
    assert d["hosts"][0]["probe"]["runtime"] in ("ai_edge_litert", "tflite_runtime")
    assert fleet.current("pi1") == _rid(a)
    assert (files.root / "digits" / _rid(a) / "model.tflite").read_bytes() == a.read_bytes()  # PUT there
    rel = fleet.root("pi1") / "models" / "digits" / "releases" / _rid(a) / "release.json"
    assert json.loads(rel.read_text())["sha256"] == d["hosts"][0]["release"] + json.loads(rel.read_text())["sha256"][16:]

    # Unchanged: the same release again is just reported ok, nothing downloaded, no second PUT.
    puts = [q for q in files.requests if q[0] == "PUT"]
    r = _deploy(cli, fleet, a, "--upload", files.url)
    assert r.exit_code == 0, r.stderr
    assert r.json()["counts"] == {"unchanged": 1} and r.json()["hosts"][0]["bytes_sent"] == 0
    assert [q for q in files.requests if q[0] == "PUT"] == puts

    r = _deploy(cli, fleet, b, "--upload", files.url)
    assert r.exit_code == 0, r.stderr
    assert r.json()["hosts"][0]["previous"] == _rid(a) and fleet.current("pi1") == _rid(b)
    st = fleet.state("pi1")
    assert st["labels"] == {"type": "camera"} and st["arch"] and st["models"]["digits"]["previous"] == _rid(a)

    r = cli(["releases", fleet.broker.url("fleet"), "--json"])
    assert r.exit_code == 0, r.stderr
    rel = r.json()
    assert [h["release"] for h in rel["models"]["digits"]["history"]] == [_rid(a), _rid(b)]
    assert rel["models"]["digits"]["current"] == _rid(b)
    assert rel["agents"][0]["device"] == "pi1" and rel["agents"][0]["online"] is True

    r = cli(["rollback", fleet.broker.url("fleet"), "--wait", "60", "--json"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["counts"] == {"changed": 1}
    assert fleet.current("pi1") == _rid(a)
    r = cli(["releases", fleet.broker.url("fleet"), "--json"])
    assert r.json()["models"]["digits"]["current"] == _rid(a)


def test_offline_device_and_broker_killed_mid_rollout_converge(fleet, files, two_models, tmp_path):
    a = two_models["a"]
    fleet.start("pi1")
    fleet.start("pi2")
    fleet.stop("pi2")  # it reported once (the controller knows it), then went offline
    # Pending: pi2 does not answer within --wait; exit 5 says so, and its desired state stays.
    r = subprocess.run([sys.executable, "-m", "mltool", "deploy", fleet.broker.url("fleet"), str(a), "--name", "digits",
                        "--upload", files.url, "--wait", "3", "--json"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 5, r.stderr
    by = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    assert by["pi1"]["status"] == "changed" and by["pi2"]["status"] == "pending"
    assert by["pi2"]["message"].startswith("offline")
    assert "pending 1" in r.stderr

    # A second rollout, with the broker restarted while the controller waits for pi2.
    b = two_models["b"]
    ctl = subprocess.Popen([sys.executable, "-m", "mltool", "deploy", fleet.broker.url("fleet"), str(b), "--name", "digits",
                            "--upload", files.url, "--wait", "90", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert fleet.wait_current("pi1", _rid(b), 60), fleet.log("pi1")
    fleet.sub.stop()
    fleet.broker.proc.kill()  # killed: it loses the retained messages it had not saved
    fleet.broker.proc.wait()
    time.sleep(1)
    fleet.broker.start()  # same port; the controller publishes its desired states again on reconnect
    fleet.sub.start()
    fleet.start("pi2")  # back online: the retained desired state reaches it
    assert fleet.wait_current("pi2", _rid(b), 60), fleet.log("pi2")
    out, err = ctl.communicate(timeout=120)
    assert ctl.returncode == 0, err
    assert json.loads(out)["counts"] == {"changed": 2}


def test_sha_mismatch_and_plain_http_refused(cli, fleet, files, two_models):
    a, b = two_models["a"], two_models["b"]
    fleet.start("pi1")
    assert _deploy(cli, fleet, a, "--upload", files.url).exit_code == 0
    # The file at the URL is not the release the message names.
    bad = files.root / "digits" / _rid(b) / "model.tflite"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(a.read_bytes()[:100] + b"x" * (b.stat().st_size - 100))
    r = _deploy(cli, fleet, b, "--artifacts", files.url)
    assert r.exit_code == 3, r.stderr
    h = r.json()["hosts"][0]
    assert h["status"] == "failed" and "SHA-256 mismatch" in h["message"] and "refused" in h["message"]
    assert fleet.current("pi1") == _rid(a)
    assert not list((fleet.root("pi1") / "models" / "digits" / "releases").glob(".tmp-*"))
    # Plain http:// to a non-loopback host: refused before any connection is made.
    r = _deploy(cli, fleet, b, "--artifacts", "http://artifacts.invalid/models")
    assert r.exit_code == 3
    assert "plain http:// artifact URL refused" in r.json()["hosts"][0]["message"]
    assert "--allow-http" in r.json()["hosts"][0]["message"]


def test_probe_failure_is_rolled_back(cli, fleet, files, two_models, unrunnable_model):
    a = two_models["a"]
    fleet.start("pi1")
    assert _deploy(cli, fleet, a, "--upload", files.url).exit_code == 0
    r = _deploy(cli, fleet, unrunnable_model, "--upload", files.url)
    assert r.exit_code == 3, r.stderr
    h = r.json()["hosts"][0]
    assert h["status"] == "rolled_back" and h["message"].startswith("probe failed:")
    assert fleet.current("pi1") == _rid(a)
    st = fleet.state("pi1")["models"]["digits"]
    assert st["state"] == "rolled_back" and st["release"] == _rid(a)


def test_failed_health_check_switches_back(cli, fleet, files, two_models):
    a, b = two_models["a"], two_models["b"]
    fleet.start("pi1", "--health-url", f"{files.url}/health", "--grace", "1")
    (files.root / "health").write_text("ok")
    assert _deploy(cli, fleet, a, "--upload", files.url).exit_code == 0
    files.status_for["/health"] = 503
    r = _deploy(cli, fleet, b, "--upload", files.url)
    assert r.exit_code == 3, r.stderr
    h = r.json()["hosts"][0]
    assert h["status"] == "rolled_back" and "answered 503 after the switch" in h["message"]
    assert fleet.current("pi1") == _rid(a)


def test_failing_canary_batch_stops_the_rollout(cli, fleet, files, two_models, unrunnable_model):
    fleet.start("a-canary")
    fleet.start("b-rest")
    r = _deploy(cli, fleet, unrunnable_model, "--upload", files.url, "--batch", "1,100%")
    assert r.exit_code == 3, r.stderr
    d = r.json()
    by = {h["host"]: h for h in d["hosts"]}
    assert d["stopped_early"] is True and d["batches"] == [1, 1]
    assert by["a-canary"]["status"] == "rolled_back" and by["b-rest"]["status"] == "skipped"
    time.sleep(1)
    assert "digits" not in fleet.state("b-rest")["models"]  # its desired state was never published


def test_labels_and_limit(cli, fleet, files, two_models):
    fleet.start("cam1", "--label", "type=camera", "--label", "site=b")
    fleet.start("sen1", "--label", "type=sensor", "--label", "site=b")
    r = _deploy(cli, fleet, two_models["a"], "--upload", files.url, "--limit", "type=camera,site=b")
    assert r.exit_code == 0, r.stderr
    assert [h["host"] for h in r.json()["hosts"]] == ["cam1"]
    assert fleet.current("cam1") == _rid(two_models["a"]) and fleet.current("sen1") is None
    r = _deploy(cli, fleet, two_models["a"], "--upload", files.url, "--limit", "type=drone")
    assert r.exit_code == 2
    assert "--limit type=drone matches none of the 2 agents" in r.stderr and "type=camera" in r.stderr


ACL = """user controller
topic readwrite fleet/#

# every device: only its own topics (the user name is the device name)
pattern read fleet/agents/%u/desired/#
pattern write fleet/agents/%u/state
pattern write fleet/agents/%u/availability
"""


def test_tls_and_per_device_acl(cli, mosquitto, files, two_models, tmp_path, monkeypatch):
    from tests.mosquitto import make_certs

    tls = make_certs(tmp_path / "certs")
    users = {"controller": "ctl-s3cret", "pi1": "pi1-s3cret", "pi2": "pi2-s3cret"}
    broker = mosquitto.broker(users=users, tls=tls, acl=ACL).start()
    base = f"mqtts://{{}}@127.0.0.1:{broker.port}/fleet"
    procs = []

    def agent(user: str, device: str, *extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"agent-{user}-{device}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "mltool", "agent", base.format(user), "--device", device, "--remote-dir",
                              str(tmp_path / user), "--mqtt-ca", str(tls.ca), *extra], stdout=log, stderr=subprocess.STDOUT,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "MLTOOL_MQTT_PASSWORD": users[user]})
        procs.append(p)
        return p

    try:
        agent("pi1", "pi1", "--label", "type=camera")
        # pi2's credentials claiming to be pi1: the ACL drops its state and its subscription.
        agent("pi2", "pi1", "--label", "evil=yes")
        monkeypatch.setenv("MLTOOL_MQTT_PASSWORD", users["controller"])
        url = base.format("controller")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = cli(["releases", url, "--mqtt-ca", tls.ca, "--json"])
            if r.exit_code == 0 and r.json()["agents"]:
                break
            time.sleep(0.3)
        time.sleep(1)  # give the impersonator its chance
        r = cli(["releases", url, "--mqtt-ca", tls.ca, "--json"])
        assert [(a["device"], a["labels"]) for a in r.json()["agents"]] == [("pi1", {"type": "camera"})]
        r = cli(["deploy", url, two_models["a"], "--name", "digits", "--upload", files.url, "--wait", "60",
                 "--mqtt-ca", tls.ca, "--json"])
        assert r.exit_code == 0, r.stderr
        assert r.json()["counts"] == {"changed": 1}
        assert os.readlink(tmp_path / "pi1" / "models" / "digits" / "current").endswith(_rid(two_models["a"]))
        assert not (tmp_path / "pi2" / "models").exists()  # the impersonator never saw pi1's desired state
        # Wrong password: refused in one line, the secret never printed.
        monkeypatch.setenv("MLTOOL_MQTT_PASSWORD", "wrong")
        r = cli(["releases", url, "--mqtt-ca", tls.ca])
        assert r.exit_code == 1 and "refused the connection" in r.stderr
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
    logs = "".join(f.read_text() for f in tmp_path.glob("agent-*.log"))
    assert "s3cret" not in logs + r.stderr + r.stdout


def test_agent_unit_and_its_secrets_stay_off_the_command_line(sshd, ssh_keys, tmp_path, cli):
    """`deploy HOST --setup --agent URL`: the password and the credentials file's lines go to
    ROOT/mltool.env (0600, other keys kept), TLS files to ROOT/agent/, and the unit's command line
    has neither (the systemd part itself needs a systemd device)."""
    from mltool.deploy.service import render_agent_unit, stage_agent
    from mltool.deploy.ssh import SshOptions
    from mltool.layout import DeviceLayout

    server = sshd()
    root = tmp_path / "dev" / "mltool"
    root.mkdir(parents=True)
    (root / "mltool.env").write_text("MLTOOL_API_KEY=keep-me\nMLTOOL_MQTT_PASSWORD=old\n")
    creds = tmp_path / "mqtt.env"
    creds.write_text("MLTOOL_MQTT_USERNAME=pi1\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    opts = SshOptions(identity=ssh_keys["key"], known_hosts=tmp_path / "kh", trust_new_host=True)
    with opts.session(server.target) as s:
        clean, files, env = stage_agent(s, DeviceLayout(str(root)), "mqtts://pi1:t0p%2Fsecret@broker.lan/fleet",
                                        {"ca": ca, "credentials": creds})
    assert clean == "mqtts://pi1@broker.lan/fleet"
    assert env == f"{root}/mltool.env" and (root / "mltool.env").stat().st_mode & 0o777 == 0o600
    lines = sorted((root / "mltool.env").read_text().splitlines())
    assert lines == ["MLTOOL_API_KEY=keep-me", "MLTOOL_MQTT_PASSWORD=t0p/secret", "MLTOOL_MQTT_USERNAME=pi1"]
    assert files == {"ca": f"{root}/agent/ca.pem"} and (root / "agent" / "ca.pem").read_text() == ca.read_text()
    unit = render_agent_unit(DeviceLayout(str(root)), clean, ["type=camera"], "/home/pi", files)
    assert (f"ExecStart={root}/venv/bin/mltool agent mqtts://pi1@broker.lan/fleet --remote-dir {root} "
            f"--label type=camera --mqtt-ca {root}/agent/ca.pem") in unit
    assert "t0p" not in unit and f"EnvironmentFile=-{root}/mltool.env" in unit and "Restart=always" in unit
    # --label without --agent, --agent without --setup: usage errors before any host is touched
    r = cli(["deploy", "pi@127.0.0.1:9", "--label", "type=camera"])
    assert r.exit_code == 2 and "--label goes with --setup --agent URL" in r.stderr
    r = cli(["deploy", "pi@127.0.0.1:9", "--agent", "mqtt://b/fleet"])
    assert r.exit_code == 2 and "--agent installs the pull agent during --setup" in r.stderr


def test_download_resumes_with_range_and_is_bounded(files, tmp_path):
    import hashlib

    from mltool.deploy.agent import AgentError, download

    data = os.urandom(300_000)
    (files.root / "m.tflite").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    part = tmp_path / "m.part"
    files.fail_after = 100_000  # the first transfer breaks after 100 kB
    assert download(f"{files.url}/m.tflite", part, sha, len(data), timeout=5) == len(data)
    assert part.read_bytes() == data
    assert [q[2] for q in files.requests] == [None, "bytes=100000-"]  # the rest only, not all again
    # More bytes than the desired state says: refused, whatever the server claims.
    with pytest.raises(AgentError) as e:
        download(f"{files.url}/m.tflite", tmp_path / "small.part", sha, len(data) - 1, timeout=5)
    assert f"is {len(data)} bytes, the desired state says {len(data) - 1}: refused" in e.value.message
    # A missing file: no endless retries, one line with the status.
    with pytest.raises(AgentError) as e:
        download(f"{files.url}/nope.tflite", tmp_path / "n.part", sha, 10, timeout=5)
    assert "404" in e.value.message and "0 of 10 bytes" in e.value.message


def test_pull_usage_errors(cli, two_models):
    r = cli(["deploy", "mqtt://127.0.0.1:9/fleet", two_models["a"]])
    assert r.exit_code == 2 and "a pull deploy needs --upload URL or --artifacts URL" in r.stderr
    r = cli(["deploy", "pi@127.0.0.1:9", two_models["a"], "--upload", "http://127.0.0.1:9/m"])
    assert r.exit_code == 2 and "--upload and --artifacts are for pull deploys" in r.stderr
    r = cli(["deploy", "mqtt://127.0.0.1:9/fleet", two_models["a"], "--artifacts", "http://x/m", "--wait", "0"])
    assert r.exit_code == 2 and "--wait 0 must be positive" in r.stderr
    r = cli(["agent", "mqtt://127.0.0.1:9/fleet", "--label", "type"])
    assert r.exit_code == 2 and "--label 'type' is not KEY=VALUE" in r.stderr
    r = cli(["agent", "mqtt://u:hunter2@127.0.0.1:9/fleet?x"])
    assert r.exit_code == 2 and "hunter2" not in r.stderr and "***" in r.stderr
