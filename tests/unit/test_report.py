"""mltool.report without a broker: URL/credential parsing, the outbox, the event lifecycle, the
Alink signature against the IoT Platform's documented example, and payload shapes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest

from mltool.errors import ConfigError
from mltool.report.config import MqttOptions, mask_url, parse_url
from mltool.report.formats import (
    Context,
    alink_post,
    alink_sign,
    alink_topic,
    ha_discovery,
    state_payload,
)
from mltool.report.lifecycle import Lifecycle, State
from mltool.report.outbox import Outbox
from mltool.runtime.classify import Classification
from mltool.runtime.detect import Detection
from mltool.runtime.predictor import Alert, Result, Timings
from tests.conftest import fill_disk


def alert_result(i: int, score: float, threshold: float = 0.6) -> Result:
    label = "fire" if score >= 0.5 else "no_fire"
    cls = [Classification(label, max(score, 1 - score), 0), Classification("other", min(score, 1 - score), 1)]
    return Result("classification", cls, [], Alert("fire", score, threshold, score >= threshold), Timings(),
                  "clip.mp4", i, f"clip.mp4#{i}", 1000.0 + i)


def det_result(i: int, dets: list[tuple[str, float]]) -> Result:
    ds = [Detection(lbl, s, 0, (0.1 * k, 0.1, 0.2 + 0.1 * k, 0.3)) for k, (lbl, s) in enumerate(dets)]
    return Result("detection", [], sorted(ds, key=lambda d: -d.score), None, Timings(), "cam", i, f"cam#{i}", 2000.0 + i)


# --------------------------------------------------------------------------- URLs and credentials
@pytest.mark.parametrize("url, expect", [
    ("mqtt://broker.local/home/cams", ("mqtt", "broker.local", 1883, None, None, "home/cams")),
    ("mqtts://u:p%40ss@10.0.0.2:8884/", ("mqtts", "10.0.0.2", 8884, "u", "p@ss", "mltool")),
    ("mqtt://[::1]:1884/x", ("mqtt", "::1", 1884, None, None, "x")),
])
def test_parse_url(url, expect):
    assert parse_url(url) == expect


@pytest.mark.parametrize("url, message", [
    ("http://broker/x", "unknown scheme 'http'"),
    ("broker.local", "unknown scheme '(none)'"),
    ("mqtt:///prefix", "has no host"),
    ("mqtt://u:s3cret@broker:99999/x", "is not a valid URL (the port must be a number from 1 to 65535)"),
    ("mqtt://u:s3cret@broker:12ab/x", "is not a valid URL"),
    ("mqtt://broker/a/+/b", "has a wildcard or an empty level"),
    ("mqtt://broker/x?retain=1", "has a query or fragment"),
    # issue 18 item 14: unencoded / @ ? # in the password; never the parser's reason (it quotes it)
    ("mqtt://pi:s3cret/x@broker/home", "'mqtt://pi:***@broker/home': the user name or password has a character that must be percent-encoded"),
    ("mqtt://pi:s3cret@x@broker/home", "'mqtt://pi:***@broker/home': the user name or password has a character"),
    ("mqtt://pi:s3cret?x@broker/home", "'mqtt://pi:***@broker/home': the user name or password has a character"),
    ("mqtt://pi:s3cret#x@broker/home", "'mqtt://pi:***@broker/home': the user name or password has a character"),
    # item 15: a prefix ending in /# is not silently cut; $SYS is the broker's
    ("mqtt://broker/home/#", "has a query or fragment ('?' or '#')"),
    ("mqtt://broker/$SYS/x", "topic prefix '$SYS/x' starts with '$', which brokers reserve"),
])
def test_malformed_urls_are_usage_errors_without_the_password(url, message):
    with pytest.raises(ConfigError) as e:
        MqttOptions(url=url).resolve(env={})
    assert message in e.value.one_line() and e.value.exit_code == 2
    assert "s3cret" not in e.value.one_line()


def test_mask_url():
    assert mask_url("mqtts://pi:hunter2@host:8883/p") == "mqtts://pi:***@host:8883/p"
    assert mask_url("mqtt://pi@host/p") == "mqtt://pi@host/p"
    assert mask_url("mqtt://pi:S3/cr@t?#@host:1883/p") == "mqtt://pi:***@host:1883/p"  # up to the LAST @


def test_credentials_from_environment_and_file(tmp_path):
    creds = tmp_path / "mqtt.env"
    creds.write_text("# broker\nexport MLTOOL_MQTT_USERNAME=pi\nMLTOOL_MQTT_PASSWORD='from file'\n")
    os.chmod(creds, 0o600)
    cfg = MqttOptions(url="mqtt://host/p", credentials=creds, device="cam1").resolve(env={})
    assert (cfg.username, cfg.password, cfg.credentials_warning) == ("pi", "from file", None)
    assert "from file" not in repr(cfg)
    cfg = MqttOptions(url="mqtt://host/p", credentials=creds, device="cam1").resolve(env={"MLTOOL_MQTT_PASSWORD": "env"})
    assert cfg.password == "env" and not cfg.password_on_command_line
    cfg = MqttOptions(url="mqtt://me:url@host/p", credentials=creds, device="cam1").resolve(env={})
    assert (cfg.username, cfg.password, cfg.password_on_command_line) == ("me", "url", True)
    os.chmod(creds, 0o644)
    cfg = MqttOptions(url="mqtt://host/p", credentials=creds, device="cam1").resolve(env={})
    assert cfg.credentials_warning == f"{creds} can be read by other users: chmod 600 {creds}"
    creds.write_text("MLTOOL_MQTT_PASWORD=typo\n")
    with pytest.raises(ConfigError, match="line 1: expected KEY=VALUE"):
        MqttOptions(url="mqtt://host/p", credentials=creds).resolve(env={})


@pytest.mark.parametrize("opts, message", [
    ({"qos": 2}, "--mqtt-qos 2 is not supported"),
    ({"format": "alnk"}, "did you mean 'alink'"),
    ({"discovery": "hass"}, "unknown --mqtt-discovery 'hass'"),
    ({"outbox_max": "lots"}, "--mqtt-outbox-max 'lots' is not a row count or a size"),
    ({"ca": "ca.pem"}, "need a TLS broker URL"),
    ({"device": "a/b"}, "cannot be a topic level"),
    ({"format": "alink"}, "needs MLTOOL_MQTT_PRODUCT_KEY and MLTOOL_MQTT_DEVICE_SECRET"),
])
def test_option_errors(opts, message):
    with pytest.raises(ConfigError) as e:
        MqttOptions(url="mqtt://host/p", **opts).resolve(env={})
    assert message in e.value.one_line()


def test_outbox_max_spec():
    cfg = MqttOptions(url="mqtt://host/p", outbox_max="500, 2MB", device="d").resolve(env={})
    assert (cfg.max_rows, cfg.max_bytes) == (500, 2 * 1024 * 1024)
    # the same size forms as --max-body (one parser): 10M, 10MiB, 512k
    cfg = MqttOptions(url="mqtt://host/p", outbox_max="100000,10M", device="d").resolve(env={})
    assert (cfg.max_rows, cfg.max_bytes) == (100_000, 10 * 1024 * 1024)
    assert MqttOptions(url="mqtt://host/p", outbox_max="512k", device="d").resolve(env={}).max_bytes == 512 * 1024
    from mltool.units import parse_size

    assert parse_size("10MiB", "--max-body") == parse_size("10M", "--max-body") == parse_size("10MB", "--max-body")
    with pytest.raises(ConfigError, match="--max-body '10 parsecs' is not a size"):
        parse_size("10 parsecs", "--max-body")


# --------------------------------------------------------------------------- outbox
def test_outbox_order_ack_keys_and_counters_survive_reopen(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        box.put("t/events", lambda c, i=i: json.dumps({"seq": c["events"], "i": i}).encode(), counters=("events",))
    box.put("t/state", b"s1", retain=True, key="state")
    box.put("t/state", b"s2", retain=True, key="state")  # replaces the unsent s1
    rows = box.fetch(0, 100)
    assert [r.topic for r in rows] == ["t/events"] * 5 + ["t/state"]
    assert [json.loads(r.payload)["seq"] for r in rows[:5]] == [1, 2, 3, 4, 5] and rows[-1].payload == b"s2"
    assert rows[-1].retain and box.rows == 6
    box.ack([rows[0].id, rows[1].id, 999999])
    assert box.rows == 4 and box.fetch(0, 1)[0].id == rows[2].id
    with pytest.raises(ConfigError, match="in use by another mltool process"):
        Outbox(tmp_path / "o.sqlite")
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.rows == 4 and again.counter("events") == 5
    v = again.put("t/events", lambda c: str(c["events"]).encode(), counters=("events",))
    assert v == {"events": 6} and again.fetch(rows[-1].id, 10)[0].payload == b"6"
    again.close()


def test_outbox_bound_drops_oldest_unsent_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_rows=10)
    for i in range(25):
        box.put("t", str(i).encode())
    assert box.rows == 10 and box.dropped == 15
    assert [r.payload for r in box.fetch(0, 100)] == [str(i).encode() for i in range(15, 25)]
    box.handed = box.fetch(0, 3)[-1].id  # three rows are with the client: they are never dropped
    box.put("t", b"25")
    assert [r.payload for r in box.fetch(0, 100)][:4] == [b"15", b"16", b"17", b"19"]
    box.close()
    assert Outbox(tmp_path / "o.sqlite").dropped == 16  # persisted

    sized = Outbox(tmp_path / "s.sqlite", max_bytes=1000)
    for _ in range(30):
        sized.put("t", b"x" * 99)  # 100 bytes with the topic
    assert sized.rows == 10 and sized.bytes == 1000 and sized.dropped == 20
    sized.put("t", b"y" * 5000, counters=("events",))  # larger than the whole bound: dropped, counted
    assert sized.rows == 10 and sized.dropped == 21
    sized.close()
    sized = Outbox(tmp_path / "s.sqlite", max_bytes=1000)
    assert sized.counter("events") == 1 and sized.dropped == 21  # its number stays used: receivers see the gap
    with sized.batch():  # one statement: the state replaces its unsent predecessor, the event is added
        sized.put("t/state", b"s", key="state")
        sized.put("t/events", lambda c: str(c["events"]).encode(), counters=("events", "event"))
        sized.put("t/state", b"s2", key="state")
    assert [r.payload for r in sized.fetch(0, 100)][-2:] == [b"2", b"s2"]
    db = sqlite3.connect(tmp_path / "s.sqlite")  # the in-memory mirror matches the file
    assert (sized.rows, sized.bytes) == db.execute("SELECT COUNT(*), SUM(size) FROM outbox").fetchone() == (11, 918)
    assert sized.dropped == 22  # one 100-byte row made room under the 1000-byte bound
    sized.close()
    assert Outbox(tmp_path / "s.sqlite").counter("event") == 1


def test_outbox_rows_and_numbers_survive_a_crash(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(3):
        box.put("t", str(i).encode(), counters=("events",))
    box._unlock()  # the process dies here: no close(), no checkpoint
    again = Outbox(tmp_path / "o.sqlite")
    assert again.rows == 3 and again.counter("events") == 3
    again.ack([r.id for r in again.fetch(0, 10)])  # acknowledged: the rows go, their numbers stay
    again._unlock()
    third = Outbox(tmp_path / "o.sqlite")
    assert third.rows == 0 and third.counter("events") == 3
    assert third.put("t", b"x", counters=("events",)) == {"events": 4}
    third.close()


def test_corrupt_outbox_is_a_clear_error(tmp_path):
    from mltool.errors import DataError

    (tmp_path / "o.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="cannot be used: file is not a database"):
        Outbox(tmp_path / "o.sqlite")


# --------------------------------------------------------------------------- lifecycle
def test_alert_lifecycle_with_hysteresis_and_material_updates():
    lc = Lifecycle(update_delta=0.05, clear_frames=3)
    scores = [0.4, 0.7, 0.72, 0.5, 0.8, 0.82, 0.9, 0.5, 0.5, 0.5, 0.5, 0.65]
    out = [(i, kind, round(ev.score, 2)) for i, s in enumerate(scores) for kind, ev in lc.update(alert_result(i, s))]
    # one dip (frame 3) does not end the event; 0.72 is not a material rise over 0.70; three clears end it
    assert out == [(1, "new", 0.7), (4, "update", 0.8), (6, "update", 0.9), (9, "end", 0.9), (11, "new", 0.65)]
    ended = lc.finish(5000.0)
    assert [(k, e.reason, e.end) for k, e in ended] == [("end", "stopped", 5000.0)]


def test_detection_lifecycle_per_class_and_object_count():
    lc = Lifecycle(update_delta=0.1, clear_frames=2, confirm=2)
    frames = [[("person", 0.6)], [("person", 0.62), ("person", 0.55)], [("person", 0.6), ("person", 0.55)],
              [("person", 0.6), ("car", 0.7)], [("person", 0.61), ("car", 0.7)], [("car", 0.9)], [("car", 0.9)], []]
    out = [(i, kind, ev.cls, ev.count) for i, f in enumerate(frames) for kind, ev in lc.update(det_result(i, f))]
    assert out == [(0, "new", "person", 1), (2, "update", "person", 2), (3, "new", "car", 1),
                   (4, "update", "person", 1), (5, "update", "car", 1), (6, "end", "person", 1)]


def test_state_publishes_changes_at_once_and_score_moves_at_most_each_second():
    st = State(update_delta=0.05, min_interval_s=1.0)
    assert st.update(alert_result(0, 0.4), active=False)
    st.published()
    assert not st.update(alert_result(1, 0.45), active=False)  # label flips within the second: wait
    assert st.update(alert_result(2, 0.7), active=True)  # an event opened: now
    st.published()
    st._published_at -= 2
    assert st.update(alert_result(3, 0.8), active=True)
    assert st.source_event("lost") and not st.source_event("lost") and st.key()[2] == "lost"


# --------------------------------------------------------------------------- Alibaba Cloud IoT Platform
def test_alink_signature_matches_the_documented_example():
    # The IoT Platform's worked example for a self-built MQTT client (productKey a14Xib5kdYd,
    # deviceName light1983432, clientId SN1928339, timestamp 1539421321846, hmacsha1).
    client_id, user, password = alink_sign("a14Xib5kdYd", "light1983432", "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq",
                                           client_id="SN1928339", timestamp=1539421321846, method="hmacsha1", tls=False)
    assert client_id == "SN1928339|securemode=3,signmethod=hmacsha1,timestamp=1539421321846|"
    assert user == "light1983432&a14Xib5kdYd"
    assert password == "b2488041f64f425016b467ee1c94959ebd592ad1"
    cid, _, pw256 = alink_sign("a14Xib5kdYd", "light1983432", "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq", timestamp=1)
    assert cid == "a14Xib5kdYd.light1983432|securemode=2,signmethod=hmacsha256,timestamp=1|" and len(pw256) == 64


def test_alink_property_post_shape():
    assert alink_topic("a1B2", "cam") == "/sys/a1B2/cam/thing/event/property/post"
    body = alink_post(4294967297, {"class": "fire", "score": 1.0, "alert": True, "count": 2},
                      {"class": "DetectClass", "score": "Score", "alert": "Alert", "count": "Count"}, time_ms=1524448722000)
    assert body == {"id": "1", "version": "1.0", "sys": {"ack": 0}, "method": "thing.event.property.post",
                    "params": {"DetectClass": {"value": "fire", "time": 1524448722000},
                               "Score": {"value": 1.0, "time": 1524448722000},
                               "Alert": {"value": 1, "time": 1524448722000},
                               "Count": {"value": 2, "time": 1524448722000}}}
    assert '"value":1.0' in json.dumps(body, separators=(",", ":"))  # a float keeps its decimal point


# --------------------------------------------------------------------------- Home Assistant
def test_home_assistant_templates_render_on_real_state_payloads():
    jinja2 = pytest.importorskip("jinja2")
    ctx = Context("cam 1", "home", model="fire", release="abcd", task="classification", version="0.1.0")
    configs = dict(ha_discovery(ctx, qos=1))
    assert set(configs) == {f"homeassistant/{c}/mltool_cam_1/{o}/config"
                            for c, o in [("sensor", "class"), ("sensor", "score"), ("binary_sensor", "alert"), ("sensor", "dropped")]}
    st = State()
    st.update(alert_result(0, 0.83), active=True)
    payload = json.loads(json.dumps(state_payload(st, [], ctx, {"pending": 0, "dropped": 7}, "change")))
    env = jinja2.Environment()
    rendered = {t.split("/")[3]: env.from_string(c["value_template"]).render(value_json=payload)
                for t, c in configs.items()}
    assert rendered == {"class": "fire", "score": "0.83", "alert": "ON", "dropped": "7"}
    for c in configs.values():
        assert c["state_topic"] == "home/cam 1/state" and c["unique_id"].startswith("mltool_cam_1_")
        assert c["device"]["identifiers"] == ["mltool_cam_1"]
        avail = env.from_string(c["availability"][0]["value_template"])
        assert [avail.render(value=v) for v in ("online", "offline", "stopped")] == ["online", "offline", "offline"]
    empty = State()
    empty.update(Result("detection", [], [], None, Timings(), "cam", 0, "cam#0", time.time()), active=False)
    payload = json.loads(json.dumps(state_payload(empty, [], ctx, {"pending": 0, "dropped": 0}, "change")))
    assert env.from_string(configs["homeassistant/sensor/mltool_cam_1/class/config"]["value_template"]).render(value_json=payload) == "none"


# --------------------------------------------------------------------------- issue 18, item 15
def test_credentials_file_not_utf8_and_topics_too_long_are_usage_errors(tmp_path):
    creds = tmp_path / "mqtt.env"
    creds.write_bytes(b"MLTOOL_MQTT_USERNAME=pi\nMLTOOL_MQTT_PASSWORD=caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        MqttOptions(url="mqtt://broker/x", credentials=creds).resolve(env={})
    assert e.value.one_line().startswith(f"MQTT credentials file {creds} is not UTF-8 text (line 2)")
    with pytest.raises(ConfigError) as e:
        MqttOptions(url="mqtt://broker/" + "a" * 65_500).resolve(env={})
    assert "make topics of over" in e.value.one_line() and "MQTT allows 65,535" in e.value.one_line()


@pytest.mark.parametrize("spec, message", [
    ("0.5", "0.5 rows is not a whole number"),
    ("1.5,10MB", "1.5 rows is not a whole number"),
    ("0.001KB", "is less than 4 KB"),
])
def test_outbox_max_fractions_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        MqttOptions(url="mqtt://broker/x", outbox_max=spec).resolve(env={})


def test_outbox_with_a_damaged_page_is_refused_at_open(tmp_path):
    from mltool.errors import DataError

    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    for i in range(400):
        box.put("t/x", b"payload %d " % i * 20)
    box.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page: 5 * page + 64] = b"\xa5" * 64  # a table page's header: the file's header is intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        Outbox(path)
    assert "cannot be used: damaged" in e.value.one_line() or "malformed" in e.value.one_line()
    assert "move the file away (its unsent messages are lost)" in e.value.one_line()


def test_one_outbox_through_a_hard_link_is_refused(tmp_path):
    a = Outbox(tmp_path / "a.sqlite")
    os.link(tmp_path / "a.sqlite", tmp_path / "b.sqlite")
    try:
        with pytest.raises(ConfigError, match="is in use by another mltool process"):
            Outbox(tmp_path / "b.sqlite")
    finally:
        a.close()
    Outbox(tmp_path / "b.sqlite").close()  # free once the first is closed


@pytest.fixture
def tmpfs(small_disk):
    return small_disk("1m")


def test_open_failures_advise_by_cause(tmpfs):
    from mltool.errors import DataError

    filler = fill_disk(tmpfs)
    with pytest.raises(DataError) as e:
        Outbox(tmpfs / "full.sqlite")
    assert "free space on that file system" in e.value.one_line() and "are lost" not in e.value.one_line()
    filler.unlink()
    box = Outbox(tmpfs / "ro.sqlite")
    box.put("t/x", b"kept")
    box.close()
    ro = tmpfs.parent / "ro"  # the same files through a read-only bind mount
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(tmpfs), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        with pytest.raises(DataError) as e:
            Outbox(ro / "ro.sqlite")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert f"MQTT outbox {ro / 'ro.sqlite'}" in e.value.one_line()
    assert "writable file system" in e.value.one_line() and "are lost" not in e.value.one_line()


def test_mqtt_reporter_is_a_reporter():
    """infer and serve talk to a Reporter: the MQTT one must keep its shape (names and signatures)."""
    import inspect

    from mltool.report.reporter import MqttReporter, Reporter

    for name in ("start", "result", "event", "close"):
        proto = inspect.signature(getattr(Reporter, name))
        real = inspect.signature(getattr(MqttReporter, name))
        assert list(proto.parameters) == list(real.parameters), name
    assert issubclass(MqttReporter, Reporter)
