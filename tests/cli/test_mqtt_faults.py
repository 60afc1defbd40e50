"""MQTT reporting when the disk fills up or the source ends (issue 18, items 13 and 15), with a
real Mosquitto on loopback, a real subscriber and a small tmpfs as the disk."""

from __future__ import annotations

from tests.conftest import fill_disk
from tests.unit.test_report import alert_result


def test_disk_full_mid_run_counts_dropped_and_never_reuses_numbers(mosquitto, small_disk, tmp_path):
    disk = small_disk("2m")
    """Item 13: what cannot be written is counted as dropped, its sequence numbers stay used
    (receivers see the gap), and the summary says so."""
    from mltool.report import MqttOptions, MqttReporter

    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/cam/events"])
    logs: list[str] = []
    reporter = MqttReporter(MqttOptions(url=broker.url("t"), device="cam", outbox=disk / "o.sqlite").resolve(env={}),
                            log=logs.append)
    reporter.connect()
    reporter.start({"model": "m.tflite", "release": "r1", "source": "clip.mp4", "task": "fire"})
    frame = 0

    def run(n: int) -> None:  # one event per 4 results: new, then end after 3 clear results
        nonlocal frame
        for _ in range(n):
            reporter.result(alert_result(frame, 0.9 if frame % 4 == 0 else 0.1))
            frame += 1

    run(40)
    filler = fill_disk(disk)
    run(2000)
    assert reporter.write_errors > 0, "the disk never filled up"
    filler.unlink()
    run(40)
    stats = reporter.close()
    total = reporter.outbox.counter("events")
    assert stats["pending"] == 0 and stats["dropped"] > 0 and stats["not_written"] == stats["dropped"]
    assert any("dropped and counted" in m for m in logs)
    assert any(f"{stats['dropped']} messages could not be written" in m and "see the gap" in m for m in logs)
    assert sub.wait_for(lambda ms: any(m.json()["seq"] == total for m in ms), 30)
    seqs = [e["seq"] for e in sub.json("t/cam/events")]
    assert seqs == sorted(set(seqs)), "a sequence number was used twice"
    missing = total - len(seqs)
    assert 0 < missing <= stats["dropped"]  # the gap receivers see (dropped also counts state messages)
    assert seqs[-1] == total and total >= 2040 // 4 * 2 - 2


def test_serve_live_view_end_of_file_closes_events_and_says_ended(mosquitto, fire_models, fire_video, tmp_path):
    """Item 15: when `serve --source FILE` reaches the end of the file, the open event ends and
    the retained state says source_status: ended (the server keeps answering)."""
    from tests.serve_process import ServeProcess

    broker = mosquitto.broker().start()
    sub = mosquitto.subscriber(broker, ["t/live/#"])
    # a threshold every frame passes: an event is open when the file ends
    s = ServeProcess([fire_models["int8"], "--source", fire_video, "--alert-threshold", "0.0",
                      "--mqtt", broker.url("t"), "--mqtt-device", "live", "--mqtt-outbox", str(tmp_path / "o.sqlite")],
                     log=tmp_path / "serve.log")
    try:
        assert sub.wait_for(lambda ms: any(m.topic == "t/live/state" and m.json().get("source_status") == "ended"
                                           for m in ms), 60)
        states = sub.json("t/live/state")
        events = sub.json("t/live/events")
        assert s.proc.poll() is None  # still serving
    finally:
        s.stop()
    ended = next(st for st in states if st["source_status"] == "ended")
    assert ended["active"] is False and ended["events"] == []
    news = [e["id"] for e in events if e["type"] == "new"]
    ends = [e["id"] for e in events if e["type"] == "end"]
    assert news and set(news) <= set(ends)
