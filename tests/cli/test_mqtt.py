"""`mltool infer --mqtt` against a real Mosquitto on loopback, read back with a real subscriber
(mosquitto_sub): the event lifecycle on a known video, TLS and passwords, a broker that goes away,
kill -9, the outbox bound, Alibaba's Alink format and Home Assistant discovery."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.mosquitto import Broker, free_port, make_certs

CLEAR_FRAMES, DELTA = 3, 0.05  # the lifecycle's defaults (MqttConfig)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


def expected_events(results: list[dict]) -> list[tuple[str, int]]:
    """The documented lifecycle restated on `infer --json` records: new when the alert turns
    active, update when the score rises by DELTA over the last published one, end after
    CLEAR_FRAMES inactive results (or when the video ends)."""
    out, open_, published, clear, last = [], False, 0.0, 0, None
    for r in results:
        a = r["alert"]
        if a["active"]:
            if not open_:
                open_, published, clear = True, a["score"], 0
                out.append(("new", r["index"]))
            else:
                clear = 0
                if a["score"] >= published + DELTA:
                    published = a["score"]
                    out.append(("update", r["index"]))
            last = r["index"]
        elif open_:
            clear += 1
            if clear >= CLEAR_FRAMES:
                out.append(("end", r["index"]))
                open_ = False
    if open_:
        out.append(("end", last))
    return out


@pytest.fixture(scope="module")
def fire_threshold(fire_models, fire_video) -> float:
    """An alert threshold above every score of the video's second half (ordinary scenes), so the
    fire frames of the first half are what opens events."""
    from tests.conftest import invoke

    r = invoke(["infer", fire_models["int8"], fire_video, "--alert-threshold", "0.5", "--json"])
    scores = [x["alert"]["score"] for x in _lines(r.stdout) if "alert" in x]
    thr = round(max(scores[20:]) + 0.002, 4)
    assert sum(s >= thr for s in scores[:20]) >= 10, f"the fire model barely separates the video: {scores}"
    return thr


def mqtt_args(broker: Broker, tmp_path: Path, device: str = "cam", prefix: str = "t", *extra: str) -> list[str]:
    return ["--mqtt", broker.url(prefix), "--mqtt-device", device, "--mqtt-outbox", str(tmp_path / f"{device}.sqlite"), *extra]


def test_event_lifecycle_state_snapshot_discovery_on_a_video(cli, mosquitto, fire_models, fire_video, fire_threshold, tmp_path):
    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/cam/#", "homeassistant/#"])
    r = cli(["infer", fire_models["int8"], fire_video, "--alert-threshold", fire_threshold, "--json",
             *mqtt_args(broker, tmp_path), "--mqtt-snapshot", "--mqtt-snapshot-max-kb", "6",
             "--mqtt-discovery", "homeassistant"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    results, summary = [x for x in out if "alert" in x], out[-1]
    expected = expected_events(results)
    assert expected[0][0] == "new" and expected[0][1] < 20 and ("end", expected[-1][1]) == expected[-1]
    assert sub.wait_for(lambda ms: any(m.topic == "t/cam/available" and m.payload == b"stopped" for m in ms))

    events = sub.json("t/cam/events")
    assert [(e["type"], e["frame"]) for e in events] == expected
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    release = hashlib.sha256(Path(fire_models["int8"]).read_bytes()).hexdigest()[:16]
    number = 0
    for e in events:
        if e["type"] == "new":
            number += 1
            assert e["snapshot"] == "t/cam/snapshot" and e["end_time"] is None
        assert e["id"] == f"cam-{number}" and e["device"] == "cam" and e["class"] == "fire"
        assert e["threshold"] == fire_threshold and e["score"] >= fire_threshold and e["top_score"] >= e["score"]
        assert (e["model"], e["release"], e["source"]) == ("model_int8.tflite", release, str(fire_video))
        if e["type"] == "end":
            assert e["reason"] in ("cleared", "stopped") and e["end_time"] >= e["start_time"]
    assert len(events) + len(sub.on("t/cam/state")) < len(results)  # not one message per frame

    snaps = sub.on("t/cam/snapshot")
    assert len(snaps) == number
    for s in snaps:
        img = cv2.imdecode(np.frombuffer(s.payload, np.uint8), cv2.IMREAD_COLOR)
        assert len(s.payload) <= 6 * 1024 and img is not None and img.shape[1] in (320, 160, 80)

    assert [m.payload for m in sub.on("t/cam/available")] == [b"online", b"stopped"]
    states = sub.json("t/cam/state")
    # the state is a latest value: an unsent one is replaced by the next (so "start" may never leave)
    assert {s["reason"] for s in states} <= {"start", "change", "stop"} and states[-1]["reason"] == "stop"
    assert any(s["active"] and s["events"] == ["cam-1"] for s in states)
    assert states[-1]["frames"] == len(results) and states[-1]["outbox"]["dropped"] == 0
    assert summary["mqtt"] == {"broker": broker.url("t"), "format": "json", "published": summary["mqtt"]["published"],
                               "pending": 0, "dropped": 0, "events": number, "outbox": str(tmp_path / "cam.sqlite")}
    assert summary["mqtt"]["published"] >= len(events) + len(states) + len(snaps)
    assert f"mqtt {broker.url('t')}: " in r.stderr and f"{number} events, 0 pending in the outbox, 0 dropped" in r.stderr

    # what a client that connects later sees: retained state, availability, discovery configs
    late = mosquitto.subscriber(broker, ["t/cam/state", "t/cam/available", "homeassistant/#"])
    assert late.wait_for(lambda ms: len(ms) >= 6, 10)
    assert all(m.retain for m in late.messages)
    assert late.on("t/cam/available")[0].payload == b"stopped" and late.json("t/cam/state")[0]["reason"] == "stop"
    configs = {m.topic: m.json() for m in late.messages if m.topic.startswith("homeassistant/")}
    assert sorted(configs) == ["homeassistant/binary_sensor/mltool_cam/alert/config", "homeassistant/sensor/mltool_cam/class/config",
                               "homeassistant/sensor/mltool_cam/dropped/config", "homeassistant/sensor/mltool_cam/score/config"]
    for c in configs.values():
        assert c["state_topic"] == "t/cam/state" and c["availability"][0]["topic"] == "t/cam/available"
        assert c["device"]["identifiers"] == ["mltool_cam"] and c["device"]["model"] == "model_int8.tflite"


def test_tls_client_certificate_and_password_from_environment(cli, mosquitto, fire_models, fire_video, tmp_path):
    tls = make_certs(tmp_path / "certs")
    broker = mosquitto.broker(users={"pi": "s3cret-pw"}, tls=tls, require_client_cert=True).start()
    sub = mosquitto.subscriber(broker, ["sec/#"], user="pi", password="s3cret-pw")
    base = ["infer", fire_models["int8"], fire_video, "--max-frames", "3", "--json", "--mqtt", broker.url("sec", user="pi"),
            "--mqtt-device", "d", "--mqtt-outbox", tmp_path / "d.sqlite", "--mqtt-ca", tls.ca,
            "--mqtt-cert", tls.client_cert, "--mqtt-key", tls.client_key]
    r = cli(base, env={"MLTOOL_MQTT_PASSWORD": "s3cret-pw"})
    assert r.exit_code == 0, r.stderr
    assert sub.wait_for(lambda ms: [m.payload for m in ms if m.topic == "sec/d/available"] == [b"online", b"stopped"])
    assert sub.json("sec/d/state")[-1]["frames"] == 3
    assert "s3cret-pw" not in r.stdout + r.stderr

    bad = cli(base, env={"MLTOOL_MQTT_PASSWORD": "wrong-pw"})
    assert bad.exit_code == 1 and bad.stdout == ""
    # Mosquitto answers a wrong password with CONNACK 5, "not authorized"
    assert bad.stderr == (f"Error: MQTT broker {broker.url('sec', user='pi')} refused the connection: Not authorized. "
                          "Fix: check the user name and password (MLTOOL_MQTT_USERNAME/MLTOOL_MQTT_PASSWORD or "
                          "--mqtt-credentials) and the broker's ACL\n")

    other = make_certs(tmp_path / "other", name="someone else's CA")
    untrusted = cli([*base[:-6], "--mqtt-ca", other.ca, *base[-4:]], env={"MLTOOL_MQTT_PASSWORD": "s3cret-pw"})
    assert untrusted.exit_code == 1
    assert untrusted.stderr.startswith(f"Error: TLS handshake with MQTT broker {broker.url('sec', user='pi')} failed: "
                                       "certificate verify failed") and untrusted.stderr.count("\n") == 1

    no_cert = cli(base[:-4], env={"MLTOOL_MQTT_PASSWORD": "s3cret-pw"})  # the broker wants a client certificate
    assert no_cert.exit_code == 1 and no_cert.stderr.startswith(
        f"Error: MQTT broker {broker.url('sec', user='pi')} closed the connection before accepting it. Fix: ")
    wrong_key = cli([*base[:-1], tls.server_key], env={"MLTOOL_MQTT_PASSWORD": "s3cret-pw"})
    assert wrong_key.exit_code == 1 and wrong_key.stderr.startswith(
        f"Error: cannot use the TLS files for {broker.url('sec', user='pi')}: key values mismatch. Fix: ")

    # a password in the URL works, but is called out, and masked everywhere mltool prints the URL
    url = broker.url("sec").replace("mqtts://", "mqtts://pi:s3cret-pw@")
    shown = cli([*base[:7], url, *base[8:]])
    assert shown.exit_code == 0, shown.stderr
    assert "visible to every user in `ps`" in shown.stderr and "s3cret-pw" not in shown.stdout + shown.stderr
    assert _lines(shown.stdout)[-1]["mqtt"]["broker"] == url.replace(":s3cret-pw@", ":***@")


@pytest.mark.parametrize("args, message", [
    (["--mqtt", "mqtt://u:pw1@host:99999/x"], "Error: --mqtt 'mqtt://u:***@host:99999/x' is not a valid URL"),
    (["--mqtt", "tcp://host/x"], "Error: --mqtt 'tcp://host/x': unknown scheme 'tcp'. Fix: use mqtt://"),
    (["--mqtt-qos", "0"], "Error: MQTT options given without --mqtt. Fix: add --mqtt mqtt://host/prefix"),
    (["--mqtt", "mqtt://host/x", "--mqtt-format", "alink"], "Error: --mqtt-format alink needs MLTOOL_MQTT_PRODUCT_KEY"),
])
def test_bad_mqtt_options_are_usage_errors(cli, fire_models, fire_video, args, message):
    r = cli(["infer", fire_models["int8"], fire_video, *args])
    assert r.exit_code == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1
    assert "pw1" not in r.stderr


def test_unreachable_broker_buffers_and_the_next_run_sends_the_backlog_first(cli, mosquitto, fire_models, fire_video,
                                                                            fire_threshold, tmp_path):
    broker = mosquitto.broker(port=free_port())  # not started yet
    run = ["infer", fire_models["int8"], fire_video, "--alert-threshold", fire_threshold, "--json", *mqtt_args(broker, tmp_path)]
    first = cli(run)
    assert first.exit_code == 0, first.stderr
    assert first.stderr.count(f"MQTT broker {broker.url('t')} is unreachable") == 1
    m1 = _lines(first.stdout)[-1]["mqtt"]
    assert m1["published"] == 0 and m1["pending"] >= 3 and m1["events"] >= 1
    assert f"{m1['pending']} messages kept in {tmp_path / 'cam.sqlite'}" in first.stderr

    broker.start()
    sub = mosquitto.subscriber(broker, ["t/cam/events"])
    started = time.time()
    second = cli(run)
    assert second.exit_code == 0, second.stderr
    assert "messages from an earlier run are in the outbox: they go first" in second.stderr
    m2 = _lines(second.stdout)[-1]["mqtt"]
    total = 2 * len([e for e in expected_events([x for x in _lines(first.stdout) if "alert" in x])])
    assert sub.wait_for(lambda ms: len(ms) >= total)
    events = sub.json("t/cam/events")
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    backlog = m1["pending"] - 1  # the rest of the first run's rows is its (retained) state
    assert all(e["timestamp"] < started for e in events[:backlog]) and all(e["timestamp"] >= started for e in events[backlog:])
    assert [e["id"] for e in events if e["type"] == "new"] == [f"cam-{i}" for i in range(1, m1["events"] + m2["events"] + 1)]
    assert m2["pending"] == 0


def fire_stream_frames(synth_fire_dir: Path) -> list[bytes]:
    files = sorted((synth_fire_dir / "fire").glob("*"))[:20] + sorted((synth_fire_dir / "no_fire").glob("*"))[:20]
    return [cv2.imencode(".jpg", cv2.resize(cv2.imread(str(f)), (320, 240)))[1].tobytes() for f in files]


DEVICE_ONLY = """
import sys
for blocked in ("tensorflow", "keras"):
    sys.modules[blocked] = None     # the device path must not need them
from mltool.cli import main
main(sys.argv[1:])
"""


def test_stopped_heartbeat_last_will_and_backlog_after_kill_9(mosquitto, mjpeg, cli, fire_models, fire_video, fire_threshold,
                                                         synth_fire_dir, tmp_path):
    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/lw/available"])
    camera = mjpeg(fps=40, frames=fire_stream_frames(synth_fire_dir))

    def cmd(device: str) -> list[str]:
        return [sys.executable, "-c", DEVICE_ONLY, "infer", str(fire_models["int8"]), camera.url, "--alert-threshold",
                str(fire_threshold), *mqtt_args(broker, tmp_path, device)]

    # a service stopped cleanly (SIGTERM) says "stopped"; heartbeats come every --mqtt-interval
    states = mosquitto.subscriber(broker, ["t/lw/state"])
    proc = subprocess.Popen([*cmd("lw"), "--mqtt-interval", "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert states.wait_for(lambda ms: sum(m.json()["reason"] == "heartbeat" for m in ms) >= 2, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130, proc.stderr.read()  # stopped by a signal: 130, as every command
    assert sub.wait_for(lambda ms: [m.payload for m in ms] == [b"online", b"stopped"], 10)
    assert states.json("t/lw/state")[-1]["reason"] == "stop"

    # killed: the broker publishes the last will, retained
    proc = subprocess.Popen(cmd("lw"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for(lambda ms: [m.payload for m in ms][2:] == [b"online"], 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert sub.wait_for(lambda ms: [m.payload for m in ms][2:] == [b"online", b"offline"], 10)
    late = mosquitto.subscriber(broker, ["t/lw/available"])
    assert late.wait_for(lambda ms: len(ms) == 1, 5) and late.messages[0].payload == b"offline" and late.messages[0].retain

    # kill -9 while the broker is down: what was written survives, and goes out first next time
    broker.stop()
    proc = subprocess.Popen(cmd("cam"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    outbox = tmp_path / "cam.sqlite"
    deadline = time.monotonic() + 90
    written = 0
    try:
        while time.monotonic() < deadline and written < 6:
            time.sleep(0.2)
            written = _counter(outbox, "events")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert written >= 6, proc.stderr.read()
    written = _counter(outbox, "events")  # the last word before the kill
    broker.start()
    sub = mosquitto.subscriber(broker, ["t/cam/events"])
    r = cli(["infer", fire_models["int8"], fire_video, "--alert-threshold", fire_threshold, "--json", *mqtt_args(broker, tmp_path)])
    assert r.exit_code == 0, r.stderr
    total = _counter(outbox, "events")
    assert total > written and sub.wait_for(lambda ms: len(ms) >= total)
    events = sub.json("t/cam/events")
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    assert [e["source"] for e in events[:written]] == [camera.url] * written
    assert {e["source"] for e in events[written:]} == {str(fire_video)}


def _counter(outbox: Path, name: str) -> int:
    from mltool.report.outbox import read_counter

    return read_counter(outbox, name)


def test_broker_outage_mid_video_loses_nothing_and_keeps_order(mosquitto, fire_models, fire_video, fire_threshold, tmp_path):
    from mltool.report import MqttOptions, MqttReporter
    from mltool.runtime.infer import InferConfig, run_infer
    from mltool.runtime.options import PredictorOptions

    cap, frames = cv2.VideoCapture(str(fire_video)), []
    while (ok := cap.read())[0]:
        frames.append(ok[1])
    video = tmp_path / "three.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for f in frames * 3:  # fire, ordinary, fire, ordinary, fire, ordinary
        w.write(f)
    w.release()

    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/cam/events"], persistent=True)
    logs: list[str] = []
    reporter = MqttReporter(MqttOptions(url=broker.url("t"), device="cam", outbox=tmp_path / "o.sqlite").resolve(env={}),
                            log=logs.append)
    reporter.connect()

    def on_result(r):
        reporter.result(r)
        if r.index == 30:
            broker.stop()  # mid-event and through two more events
        elif r.index == 95:
            broker.start()
        time.sleep(0.02)

    summary = run_infer(InferConfig(fire_models["int8"], str(video), PredictorOptions(alert_threshold=fire_threshold)),
                        on_start=reporter.start, on_result=on_result, on_event=reporter.event)
    deadline = time.monotonic() + 30  # paho's backoff decides when it tries again
    while not reporter.publisher.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = reporter.close()
    assert summary.frames == 120 and stats["pending"] == 0 and stats["dropped"] == 0
    assert any("lost" in m for m in logs) and any("connected" in m and "buffered messages" in m for m in logs)
    total = reporter.outbox.counter("events")
    assert sub.wait_for(lambda ms: len({m.json()["seq"] for m in ms}) >= total)
    events = sub.json("t/cam/events")
    first_seen = list(dict.fromkeys(e["seq"] for e in events))  # duplicates (QoS 1) are allowed
    assert first_seen == list(range(1, total + 1))
    news = [e["id"] for e in events if e["type"] == "new"]
    assert list(dict.fromkeys(news)) == [f"cam-{i}" for i in range(1, stats["events"] + 1)] and stats["events"] >= 3


def test_outbox_bound_drops_oldest_and_reports_the_count(cli, mosquitto, fire_models, fire_video, fire_threshold, tmp_path):
    broker = mosquitto.broker(port=free_port())  # down for the first two runs
    run = ["infer", fire_models["int8"], fire_video, "--alert-threshold", fire_threshold, "--json",
           *mqtt_args(broker, tmp_path), "--mqtt-outbox-max", "3"]
    pending = [_lines(cli(run).stdout)[-1]["mqtt"] for _ in range(2)]
    assert pending[1]["pending"] == 3 and pending[1]["dropped"] > 0
    broker.start()
    sub = mosquitto.subscriber(broker, ["t/cam/events", "t/cam/state"])
    r = cli([*run[:-2], "--max-frames", "1"])  # the default bound again: nothing more is dropped
    last = _lines(r.stdout)[-1]["mqtt"]
    assert last["dropped"] == pending[1]["dropped"] and last["pending"] == 0
    assert sub.wait_for(lambda ms: any(m.topic == "t/cam/state" and m.json()["reason"] == "stop" for m in ms))
    seqs = [e["seq"] for e in sub.json("t/cam/events")]
    final = _counter(tmp_path / "cam.sqlite", "events")
    assert seqs[0] > 1 and seqs == list(range(seqs[0], final + 1))  # the oldest went, the rest in order
    assert sub.json("t/cam/state")[-1]["outbox"]["dropped"] == last["dropped"]


def test_alink_format_signed_connection_and_property_posts(cli, mosquitto, fire_models, fire_video, fire_threshold, tmp_path):
    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["#"])
    env = {"MLTOOL_MQTT_PRODUCT_KEY": "a1TestPK9x", "MLTOOL_MQTT_DEVICE_SECRET": "dev-secret-123"}
    t0 = int(time.time() * 1000)
    r = cli(["infer", fire_models["int8"], fire_video, "--alert-threshold", fire_threshold, "--json", "--mqtt",
             f"mqtt://127.0.0.1:{broker.port}", "--mqtt-format", "alink", "--mqtt-device", "cam01",
             "--mqtt-outbox", tmp_path / "a.sqlite"], env=env)
    assert r.exit_code == 0, r.stderr
    assert "dev-secret-123" not in r.stdout + r.stderr
    topic = "/sys/a1TestPK9x/cam01/thing/event/property/post"
    n = _lines(r.stdout)[-1]["mqtt"]["published"]
    assert sub.wait_for(lambda ms: len(ms) >= n)
    assert {m.topic for m in sub.messages} == {topic}  # nothing outside the thing model's topics
    posts = sub.json(topic)
    for p in posts:
        assert set(p) == {"id", "version", "sys", "params", "method"}
        assert p["version"] == "1.0" and p["method"] == "thing.event.property.post" and p["sys"] == {"ack": 0}
        assert set(p["params"]) <= {"Class", "Score", "Alert"} and p["id"].isdigit()
        for v in p["params"].values():
            assert set(v) == {"value", "time"} and t0 - 5000 <= v["time"] <= time.time() * 1000 + 5000
        assert isinstance(p["params"]["Score"]["value"], float) and p["params"]["Alert"]["value"] in (0, 1)
    assert [int(p["id"]) for p in posts] == sorted({int(p["id"]) for p in posts})
    alerts = [(p["params"]["Class"]["value"], p["params"]["Alert"]["value"]) for p in posts]
    assert ("fire", 1) in alerts and alerts[-1][1] == 0
    log = broker.log()
    assert "as a1TestPK9x.cam01|securemode=3,signmethod=hmacsha256,timestamp=" in log and "u'cam01&a1TestPK9x'" in log


def test_serve_live_view_publishes_over_mqtt(mosquitto, fire_models, fire_video, fire_threshold, tmp_path, cli):
    """`serve --source` with the same --mqtt options: the live view's results become events and
    state on the broker, naming the release that made them; the HTTP API keeps answering."""
    import requests

    from tests.serve_process import ServeProcess

    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/live/#"])
    release = hashlib.sha256(Path(fire_models["int8"]).read_bytes()).hexdigest()[:16]
    s = ServeProcess([fire_models["int8"], "--source", fire_video, "--alert-threshold", fire_threshold,
                      *mqtt_args(broker, tmp_path, "live")], log=tmp_path / "serve.log")
    try:
        assert sub.wait_for(lambda ms: any(m.topic == "t/live/events" for m in ms), 30)
        r = requests.get(f"{s.url}/v2/health/ready", timeout=10)
        assert r.status_code == 200 and r.json()["release"] == release
        assert sub.wait_for(lambda ms: any(m.topic == "t/live/events" and m.json().get("type") == "end" for m in ms), 60)
    finally:
        s.stop()
    stopped = s.lines[-1]
    assert stopped["event"] == "stopped" and stopped["mqtt"]["events"] >= 1 and stopped["mqtt"]["pending"] == 0
    events = sub.json("t/live/events")
    assert events[0]["type"] == "new" and all(e["release"] == release and e["source"] == str(fire_video) for e in events)
    assert sub.wait_for(lambda ms: any(m.topic == "t/live/available" and m.payload == b"stopped" for m in ms), 10)
    r = cli(["serve", fire_models["int8"], "--mqtt", broker.url("t")])
    assert r.exit_code == 2 and "--mqtt reports what the live view sees" in r.stderr
