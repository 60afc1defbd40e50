"""`mltool serve` on a device: hot reload when `mltool deploy` (to a real sshd on loopback) makes
a new release current, failing releases, SIGHUP, SIGTERM drain, `mltool tunnel`, the unit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

BODY = {"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.3] * 64}]}


@pytest.fixture(scope="session")
def digit_models(converted_digits) -> dict:
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    return {"a": modes["int8"], "b": modes["float32" if "float32" in modes else "none"]}


def _deploy(cli, server, model, deploy_args, *extra) -> dict:
    r = cli(["deploy", server.target, model, *deploy_args, "--trust-new-host", "--name", "digits", *extra, "--json"])
    assert r.exit_code == 0, r.stderr
    return r.json()["hosts"][0]


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_deploy_hot_reloads_a_server_under_load(cli, sshd, deploy_args, serve, digit_models, tmp_path):
    server = sshd()
    a = _deploy(cli, server, digit_models["a"], deploy_args)["release"]
    model_dir = tmp_path / "device" / "mltool" / "models" / "digits"
    s = serve(model_dir, "--poll", "0.1", "--workers", "2")
    assert s.ready["release"] == a and s.ready["follows"].endswith("models/digits/current/model.tflite")
    url = f"{s.url}/v2/models/digits/infer"
    stop = threading.Event()
    seen: list[list[str]] = [[], []]
    failures: list[str] = []

    def hammer(i: int) -> None:
        http = requests.Session()
        while not stop.is_set():
            try:
                r = http.post(url, json=BODY, timeout=10)
            except requests.RequestException as exc:
                failures.append(repr(exc))
                continue
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
                continue
            assert r.headers["X-Model-Release"] == r.json()["model_version"]
            seen[i].append(r.json()["model_version"])

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(map(len, seen)) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        b = _deploy(cli, server, digit_models["b"], deploy_args)
        assert b["status"] == "changed" and b["previous"] == a
        ev = s.wait_event("reload")
        assert (ev["release"], ev["previous"]) == (b["release"], a)
        n = [len(x) for x in seen]
        while any(len(x) < k + 30 for x, k in zip(seen, n)) and time.monotonic() < deadline + 30:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    for run in seen:  # each client saw the old release, then only the new one
        assert run[0] == a and run[-1] == b["release"]
        first_b = run.index(b["release"])
        assert set(run[:first_b]) == {a} and set(run[first_b:]) == {b["release"]}
    m = requests.get(f"{s.url}/metrics").text
    assert _metric(m, "mltool_reloads_total") == 1 and _metric(m, "mltool_reload_failures_total") == 0
    assert f'mltool_model_release_info{{model="digits",release="{b["release"]}"}} 1' in m
    assert s.stop() == 0


def test_a_release_failing_the_check_never_serves_and_sighup_reloads(cli, sshd, deploy_args, serve, digit_models,
                                                                      unrunnable_model, tmp_path):
    server = sshd()
    a = _deploy(cli, server, digit_models["a"], deploy_args)["release"]
    model_dir = tmp_path / "device" / "mltool" / "models" / "digits"
    s = serve(model_dir, "--poll", "0.1")
    url = f"{s.url}/v2/models/digits/infer"
    bad = _deploy(cli, server, unrunnable_model, deploy_args, "--no-probe")  # deploy's own probe skipped: current moves
    assert bad["status"] == "changed"
    ev = s.wait_event("reload_failed")
    assert ev["release"] == bad["release"] and ev["serving"] == a and "could not load" in ev["error"]
    ready = requests.get(f"{s.url}/v2/health/ready").json()
    assert ready["ready"] is True and ready["release"] == a
    assert ready["reload"]["failed_release"] == bad["release"] and ready["reload"]["failures"] == 1
    for _ in range(5):
        r = requests.post(url, json=BODY)
        assert r.status_code == 200 and r.json()["model_version"] == a
    m = requests.get(f"{s.url}/metrics").text
    assert _metric(m, "mltool_reload_failures_total") == 1 and _metric(m, "mltool_reloads_total") == 0

    good = _deploy(cli, server, digit_models["b"], deploy_args)
    assert s.wait_event("reload")["release"] == good["release"]
    assert "reload" not in requests.get(f"{s.url}/v2/health/ready").json()
    assert requests.post(url, json=BODY).json()["model_version"] == good["release"]

    # --poll 0: only SIGHUP looks at the current link
    s2 = serve(model_dir, "--poll", "0")
    conn = [x for x in deploy_args]
    r = cli(["rollback", server.target, "--name", "digits", "--to", a, *conn])
    assert r.exit_code == 0, r.stderr
    time.sleep(0.3)
    assert requests.post(f"{s2.url}/v2/models/digits/infer", json=BODY).json()["model_version"] == good["release"]
    s2.send(signal.SIGHUP)
    assert s2.wait_event("reload")["release"] == a
    assert requests.post(f"{s2.url}/v2/models/digits/infer", json=BODY).json()["model_version"] == a


def test_sigterm_answers_requests_in_flight_first(serve, digits_int8, slow_jpeg):
    s = serve(digits_int8, "--workers", "1", "--queue", "8")
    results: list[int] = []

    def post() -> None:
        r = requests.post(f"{s.url}/api/image", data=slow_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # all four received (the scrape itself is in flight too)
        if _metric(requests.get(f"{s.url}/metrics").text, "mltool_http_requests_in_flight") >= 5:
            break
        time.sleep(0.02)
    s.send(signal.SIGTERM)
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert s.proc.wait(30) == 0
    stopped = [e for e in s.lines if e["event"] == "stopped"][0]
    assert stopped["unfinished"] == 0 and stopped["inferences"] == 4
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{s.url}/v2/health/live", timeout=2)


def test_tunnel_reaches_a_loopback_server_over_verified_ssh(cli, sshd, deploy_args, serve, digits_int8, tmp_path):
    server = sshd()
    s = serve(digits_int8)
    conn = deploy_args[:4]  # --identity, --known-hosts
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "tunnel", server.target, f"{s.port}:0", *conn, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert not line, "an unknown host key must be refused"
        assert proc.wait(30) == 4 and "unknown host key" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "tunnel", server.target, f"{s.port}:0", *conn, "--trust-new-host", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert info["remote"] == f"127.0.0.1:{s.port}" and info["local_port"] != s.port
        via = requests.Session()
        for _ in range(3):  # keep-alive through one forwarded connection, then new ones
            r = via.post(f"{info['local']}/v2/models/digits/infer", json=BODY)
            assert r.status_code == 200
        direct = requests.post(f"{s.url}/v2/models/digits/infer", json=BODY).json()
        assert r.json()["outputs"] == direct["outputs"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0 and "tunnel closed after" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()


def test_serve_unit_follows_the_model_and_reloads_instead_of_restarting():
    from mltool.deploy.service import render_unit, service_action
    from mltool.layout import DeviceLayout

    unit = render_unit(DeviceLayout("~/mltool"), "fire", "serve --host 0.0.0.0 --port 8000", "/home/pi")
    assert "ExecStart=/home/pi/mltool/venv/bin/mltool serve /home/pi/mltool/models/fire --host 0.0.0.0 --port 8000\n" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "EnvironmentFile=-/home/pi/mltool/mltool.env" in unit
    infer = render_unit(DeviceLayout("~/mltool"), "fire", "infer --camera", "/home/pi")
    assert "current/model.tflite --camera" in infer and "ExecReload" not in infer
    cmd = "serve --host 0.0.0.0"
    assert service_action(cmd, unit, unit, active=True) == "reload"  # a new release: the server follows it
    assert service_action(cmd, None, unit, active=False) == "restart"  # first install
    assert service_action(cmd, unit, unit, active=False) == "restart"  # installed but not running
    assert service_action(cmd, unit.replace("8000", "9000"), unit, active=True) == "restart"  # options changed
    assert service_action("infer --camera", infer, infer, active=True) == "restart"  # infer loads the file once
