#!/usr/bin/env python
"""Issue #12 measurements against a real Mosquitto on loopback, read back by a real subscriber
(mosquitto_sub with a persistent session, so the broker keeps its messages across restarts):

1. Messages lost across (a) a 30 s broker outage and (b) kill -9 of the publishing process and a
   restart, each out of >= 10,000 event messages (target 0), and duplicates delivered (QoS 1 is
   at-least-once: allowed, counted). Event messages carry a per-device sequence number; lost =
   numbers never received, duplicates = deliveries beyond the first.
2. Overhead on the inference path per frame, MQTT on vs off: the same model on the same decoded
   video frames, in pairs of passes (off then on, on then off, ...): the median of the pairs'
   differences in wall time per frame, and the time inside ``reporter.result``. Target <= 0.2 ms.
   Then the frame rate with the broker down vs up, in pairs the same way (target: the same
   within noise).
3. Outbox drain throughput: a 10,000-message backlog to a local broker, messages/s.

Needs mosquitto and mosquitto-clients (scripts/setup.sh installs them) and, unless --model and
--video are given, TensorFlow to train the tiny fire model the tests use.
Usage: .venv/bin/python scripts/bench/mqtt_report.py [--outage 30] [--messages 10000]
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.mosquitto import Broker, Subscriber  # noqa: E402  (the broker and subscriber the tests use)


def fake_result(i: int, active: bool):
    """A classification result whose alert flips every frame: with clear_frames=1 each result
    opens or closes an event, i.e. one event message per result (the most a reporter writes)."""
    from mltool.runtime.classify import Classification
    from mltool.runtime.predictor import Alert, Result, Timings

    score = 0.9 if active else 0.1
    return Result("classification", [Classification("fire" if active else "no_fire", 0.9, 0)], [],
                  Alert("fire", score, 0.5, active), Timings(), "bench", i, f"bench#{i}", time.time())


def reporter(url: str, device: str, outbox: Path, clear_frames: int = 1, **kw):
    from mltool.report import MqttOptions, MqttReporter

    cfg = MqttOptions(url=url, device=device, outbox=outbox).resolve(env={})
    cfg.clear_frames = clear_frames
    r = MqttReporter(cfg, log=lambda m: print(f"      [{device}] {m}", flush=True), **kw)
    r.connect()
    r.start({"model": "", "source": "bench", "task": "classification"})
    return r


def feed(rep, n: int, rate: float, start: int = 0, on_tick=None) -> list[float]:
    """``n`` results at ``rate``/s; returns the time spent in ``reporter.result`` per call (ms)."""
    spent = []
    t0 = time.perf_counter()
    for k in range(n):
        i = start + k
        a = time.perf_counter()
        rep.result(fake_result(i, i % 2 == 0))
        spent.append((time.perf_counter() - a) * 1000)
        if on_tick:
            on_tick(k)
        delay = t0 + (k + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return spent


def counted(sub: Subscriber, topic: str, published: int, timeout: float) -> tuple[int, int]:
    """(lost, duplicates) once every number arrived or ``timeout`` passed."""
    def seqs() -> list[int]:
        return [json.loads(m.payload)["seq"] for m in sub.on(topic)]
    sub.wait_for(lambda ms: len({json.loads(m.payload)["seq"] for m in ms if m.topic == topic}) >= published, timeout)
    got = seqs()
    return published - len(set(got) & set(range(1, published + 1))), len(got) - len(set(got))


def outage(tmp: Path, n: int, outage_s: float) -> dict:
    broker = Broker(tmp / "broker-a").start()
    sub = Subscriber(broker, ["bench/a/events"], persistent=True).start()
    rep = reporter(broker.url("bench"), "a", tmp / "a.sqlite")
    rate = n / (outage_s + 15)
    stop_at, start_at = int(rate * 5), int(rate * (5 + outage_s))
    marks = {}

    def tick(k: int) -> None:
        if k == stop_at:
            broker.stop()
            marks["down"] = time.perf_counter()
        elif k == start_at:
            broker.start()
            marks["up"] = time.perf_counter()

    print(f"   (a) {n} results at {rate:.0f}/s, broker down from result {stop_at} for {outage_s:.0f} s", flush=True)
    spent = np.asarray(feed(rep, n, rate, on_tick=tick))
    deadline = time.monotonic() + 60
    while not rep.publisher.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    rep.close()
    published = rep.outbox.counter("events")
    lost, dup = counted(sub, "bench/a/events", published, 120)
    sub.stop()
    broker.stop()
    up = np.r_[spent[:stop_at], spent[start_at:]]
    down = spent[stop_at:start_at]
    return {"published": published, "lost": lost, "duplicates": dup,
            "result_ms_up": (float(np.mean(up)), float(np.percentile(up, 99))),
            "result_ms_down": (float(np.mean(down)), float(np.percentile(down, 99)))}


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
sys.argv = ["x"]
from scripts.bench.mqtt_report import reporter, feed
rep = reporter({url!r}, "b", __import__("pathlib").Path({outbox!r}))
start = rep.outbox.counter("events")
feed(rep, {n}, {rate}, start=start)
rep.close()
"""


def kill9(tmp: Path, n: int) -> dict:
    broker = Broker(tmp / "broker-b").start()
    sub = Subscriber(broker, ["bench/b/events"], persistent=True).start()
    outbox = tmp / "b.sqlite"
    half = n // 2 + 1000

    def child(count: int) -> subprocess.Popen:
        code = CHILD.format(root=str(ROOT), url=broker.url("bench"), outbox=str(outbox), n=count, rate=1500)
        return subprocess.Popen([sys.executable, "-c", code])

    proc = child(2 * half)
    while _counter(outbox, "events") < half:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _counter(outbox, "events")
    unsent = _rows(outbox)
    print(f"   (b) killed -9 after {at_kill} event messages ({unsent} rows not yet acknowledged); restarting", flush=True)
    proc = child(n - at_kill + 500)
    proc.wait()
    published = _counter(outbox, "events")
    lost, dup = counted(sub, "bench/b/events", published, 120)
    sub.stop()
    broker.stop()
    return {"published": published, "lost": lost, "duplicates": dup, "at_kill": at_kill, "unsent_at_kill": unsent}


def _counter(outbox: Path, name: str) -> int:
    from mltool.report.outbox import read_counter

    return read_counter(outbox, name)


def _rows(outbox: Path) -> int:
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    n = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    db.close()
    return n


def fire_model_and_video(tmp: Path) -> tuple[Path, Path]:
    """The tests' fire model (trained on the synthetic set) and a 400-frame video of 10 cycles of
    20 fire frames then 20 ordinary scenes."""
    import cv2

    from mltool.data.synth import synthesize
    from tests.conftest import invoke

    data = tmp / "fire"
    synthesize("fire", data, per_class=40, seed=3)
    r = invoke(["train", "fire", "--data", data, "--epochs", "6", "--project", tmp / "runs", "--json"])
    c = invoke(["convert", r.json()["run_dir"], "-q", "int8", "--out", tmp / "model", "--json"])
    assert c.exit_code == 0, c.stderr
    files = sorted((data / "fire").glob("*"))[:20] + sorted((data / "no_fire").glob("*"))[:20]
    frames = [cv2.resize(cv2.imread(str(f)), (320, 240)) for f in files]
    video = tmp / "fire400.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for f in frames * 10:
        w.write(f)
    w.release()
    return tmp / "model" / "model_int8.tflite", video


def inference_overhead(tmp: Path, model: Path, video: Path, passes: int) -> dict:
    """Pairs of passes over the same decoded frames, MQTT off then on (or on then off, every
    other pair), so each pair sees the same machine; the overhead is the median of the pairs'
    differences. The reporter's background work is counted where it happens (a pass with MQTT
    off has none), and the time inside ``reporter.result`` is measured directly as well."""
    from mltool.runtime.predictor import Predictor
    from mltool.runtime.sources import Frame, open_source

    broker = Broker(tmp / "broker-c").start()
    rep = reporter(broker.url("bench"), "c", tmp / "c.sqlite", clear_frames=3)  # the default lifecycle
    p = Predictor(model, threads=1, alert_threshold=0.6)
    src = open_source(str(video))
    frames = [f for f in src if isinstance(f, Frame)]  # decoded once: time what the model and the reporter do
    src.close()

    def one_pass(on: bool) -> tuple[float, list[tuple[float, bool]]]:
        report_ms = []
        t_start = time.perf_counter()
        for fr in frames:
            r = p.predict_frame(fr, source=str(video))
            if on:
                last = rep.outbox.last_id
                t1 = time.perf_counter()
                rep.result(r)
                report_ms.append(((time.perf_counter() - t1) * 1000, rep.outbox.last_id != last))
        return (time.perf_counter() - t_start) * 1000 / len(frames), report_ms

    diffs, off_ms, on_ms, rep_ms = [], [], [], []
    for k in range(passes):
        means = {}
        for on in ((False, True) if k % 2 == 0 else (True, False)):
            means[on], r = one_pass(on)
            rep_ms += r
        diffs.append(means[True] - means[False])
        off_ms.append(means[False])
        on_ms.append(means[True])
    # frame rate with MQTT on, broker down vs up, in pairs the same way
    fps: dict[str, list[float]] = {"up": [], "down": []}
    for k in range(passes):
        for state in (("up", "down") if k % 2 == 0 else ("down", "up")):
            if state == "down":
                broker.stop()
            else:
                if broker.proc is None:
                    broker.start()
                deadline = time.monotonic() + 60
                while not rep.publisher.connected and time.monotonic() < deadline:
                    time.sleep(0.1)
            fps[state].append(1000.0 / one_pass(True)[0])  # (their reporter times are not in rep_ms)
    if broker.proc is None:
        broker.start()
    rep.close()
    broker.stop()
    t = np.asarray([x[0] for x in rep_ms])
    wrote = np.asarray([x[1] for x in rep_ms])
    return {"off_ms": float(np.median(off_ms)), "on_ms": float(np.median(on_ms)), "overhead_ms": float(np.median(diffs)),
            "diffs": diffs, "frames": len(frames), "report_mean_ms": float(t.mean()),
            "report_p99_ms": float(np.percentile(t, 99)), "report_max_ms": float(t.max()),
            "write_share": float(wrote.mean()), "write_ms": float(t[wrote].mean()), "quiet_ms": float(t[~wrote].mean()),
            "fps_up": fps["up"], "fps_down": fps["down"]}


def drain(tmp: Path, n: int) -> dict:
    from mltool.report.formats import Context, dumps
    from mltool.report.outbox import Outbox

    outbox = tmp / "d.sqlite"
    box = Outbox(outbox)
    ctx = Context("d", "bench", model="model_int8.tflite", release="69702be097fd6293", source="/dev/video0",
                  task="classification")
    for i in range(n):  # realistic event payloads (~400 bytes), written as the reporter writes them
        box.put(ctx.topic("events"), lambda c, i=i: dumps({
            "type": "new" if i % 2 == 0 else "end", "id": f"d-{i // 2 + 1}", "seq": c["events"], "device": "d",
            "class": "fire", "score": 0.9123, "top_score": 0.9123, "threshold": 0.6, "source": ctx.source, "frame": i,
            "frames": 1, "model": ctx.model, "release": ctx.release, "start_time": time.time(), "end_time": None,
            "timestamp": time.time()}), counters=("events",))
    box.close()
    broker = Broker(tmp / "broker-d").start()
    sub = Subscriber(broker, ["bench/d/events"], persistent=True).start()
    from mltool.report import MqttOptions
    from mltool.report.outbox import Outbox as _Outbox
    from mltool.report.publisher import Publisher

    cfg = MqttOptions(url=broker.url("bench"), device="d", outbox=outbox).resolve(env={})
    box = _Outbox(outbox)
    pub = Publisher(cfg, box)
    t0 = time.perf_counter()
    pub.start()
    while box.rows and time.perf_counter() - t0 < 120:
        time.sleep(0.005)
    took = time.perf_counter() - t0
    pub.close(0)
    box.close()
    lost, dup = counted(sub, "bench/d/events", n, 60)
    sub.stop()
    broker.stop()
    return {"messages": n, "seconds": took, "rate": n / took, "lost": lost, "duplicates": dup}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=30.0, help="broker outage in seconds (a)")
    ap.add_argument("--messages", type=int, default=10_000, help="event messages per loss run (at least)")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--video", type=Path)
    ap.add_argument("--passes", type=int, default=10, help="pairs of passes in part 2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("1. messages lost, QoS 1, real Mosquitto + mosquitto_sub (persistent session)", flush=True)
        a = outage(tmp, args.messages + 500, args.outage)
        b = kill9(tmp, args.messages + 500)
        print(f"   (a) {args.outage:.0f} s broker outage: {a['lost']} lost of {a['published']} published, "
              f"{a['duplicates']} duplicates delivered")
        print(f"       reporter.result() with an event message every call: mean {a['result_ms_up'][0]:.3f} ms "
              f"(p99 {a['result_ms_up'][1]:.3f}) broker up, {a['result_ms_down'][0]:.3f} ms (p99 {a['result_ms_down'][1]:.3f}) "
              "broker down")
        print(f"   (b) kill -9 + restart: {b['lost']} lost of {b['published']} published, {b['duplicates']} duplicates "
              f"delivered (killed after {b['at_kill']} messages, {b['unsent_at_kill']} not yet acknowledged)", flush=True)

        model, video = args.model, args.video
        if model is None or video is None:
            print("   (training the tests' fire model for part 2...)", flush=True)
            model, video = fire_model_and_video(tmp)
        c = inference_overhead(tmp, model, video, args.passes)
        over = c["overhead_ms"]
        print(f"2. inference path, {model.name} on {video.name} ({c['frames']} frames), {args.passes} pairs of passes "
              "MQTT off/on (order alternating)")
        print(f"   per frame: MQTT off {c['off_ms']:.3f} ms, on {c['on_ms']:.3f} ms (medians of passes); overhead, median of "
              f"pair differences: {over:+.3f} ms ({'MET' if over <= 0.2 else 'MISSED'} <= 0.2 ms; pairs "
              f"{', '.join(f'{x:+.2f}' for x in c['diffs'])})")
        print(f"   inside reporter.result (the pairs' MQTT-on passes): mean {c['report_mean_ms']:.4f} ms per frame, "
              f"p99 {c['report_p99_ms']:.3f}, max {c['report_max_ms']:.3f}; {c['write_share']:.1%} of frames wrote to the "
              f"outbox ({c['write_ms']:.3f} ms each on average), the others {c['quiet_ms']:.4f} ms")
        up, down = np.asarray(c["fps_up"]), np.asarray(c["fps_down"])
        print(f"   frame rate with MQTT on: broker up {np.median(up):.1f} fps (passes {', '.join(f'{x:.0f}' for x in up)}), "
              f"down {np.median(down):.1f} fps (passes {', '.join(f'{x:.0f}' for x in down)}) -> down/up "
              f"{np.median(down) / np.median(up):.3f} (medians)")
        d = drain(tmp, 10_000)
        print(f"3. outbox drain: {d['messages']} messages in {d['seconds']:.2f} s = {d['rate']:.0f} messages/s to a local "
              f"broker ({d['lost']} lost, {d['duplicates']} duplicates)")


if __name__ == "__main__":
    main()
