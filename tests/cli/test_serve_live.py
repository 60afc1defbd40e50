"""`mltool serve --source`: continuous inference on a real MJPEG camera stream, the live page
in a real headless browser (Debian's chromium), MJPEG, snapshot, SSE, and result consumers."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image


def _chromium() -> None:
    from tests.browser import chromium

    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: scripts/setup.sh should install it")
        pytest.skip("chromium not installed (apt-get install chromium)")


def _events(url: str, n: int) -> list[dict]:
    out = []
    with requests.get(f"{url}/events", stream=True, timeout=20) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
                if len(out) == n:
                    return out
    return out


def _live_frames(url: str) -> float:
    text = requests.get(f"{url}/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("mltool_live_frames_total ")))


def test_live_page_in_headless_chromium(serve, mjpeg, fire_models, tmp_path):
    cam = mjpeg(fps=20)
    s = serve(fire_models["int8"], "--source", cam.url, "--fps", "5")
    assert s.ready["live"] == cam.url

    events = _events(s.url, 3)
    assert len(events) == 3 and all(e["release"] == s.ready["release"] for e in events)
    assert all({p["label"] for p in e["predictions"]} == {"fire", "no_fire"} for e in events)
    assert (events[0]["width"], events[0]["height"]) == (160, 120) and events[2]["index"] > events[0]["index"]

    snap = requests.get(f"{s.url}/snapshot.jpg")
    assert snap.status_code == 200 and snap.headers["Content-Type"] == "image/jpeg"
    w, h = Image.open(io.BytesIO(snap.content)).size
    assert w == 160 and 120 < h <= 200  # the frame, plus the strip below it that carries the summary text

    # MJPEG: frames arrive, at most --fps per second
    parts = 0
    t0 = time.monotonic()
    with requests.get(f"{s.url}/stream.mjpg", stream=True, timeout=20) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        buf = b""
        for chunk in r.iter_content(4096):
            buf += chunk
            parts = buf.count(b"--frame\r\n")
            if time.monotonic() - t0 > 2.0:
                break
    assert 4 <= parts <= 5 * (time.monotonic() - t0) + 2, parts

    # the HTTP API keeps answering beside the live loop
    up = requests.post(f"{s.url}/api/image", data=snap.content, headers={"Content-Type": "image/jpeg"})
    assert up.status_code == 200 and up.json()["predictions"][0]["label"] in ("fire", "no_fire")

    # a client that never reads does not slow inference down
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", s.port))
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    before, t0 = _live_frames(s.url), time.monotonic()
    time.sleep(2.0)
    rate = (_live_frames(s.url) - before) / (time.monotonic() - t0)
    assert rate > 8, rate  # the camera sends 20 frames/s
    stalled.close()

    from tests.browser import Browser

    _chromium()
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.open(s.url + "/")
        results = browser.wait_for("Number(document.body.dataset.results || 0) >= 3 && document.body.dataset.frames && "
                                   "document.body.dataset.results")
        state = browser.evaluate("JSON.stringify({top: document.getElementById('top').textContent, "
                                 "size: document.getElementById('size').textContent, release: document.getElementById('release').textContent, "
                                 "rows: document.querySelectorAll('#items tr').length, w: document.getElementById('pic').naturalWidth})")
        shot = browser.screenshot(tmp_path / "live.png")
    finally:
        browser.close()
    print(f"live page screenshot: {shot}")
    state = json.loads(state)
    shown_w, shown_h = (int(v) for v in state["size"].split("x"))
    assert int(results) >= 3 and shown_w == 160 and shown_h == h and state["w"] == 160  # the frame plus its text strip
    assert state["release"] == s.ready["release"] and state["rows"] == 2
    assert state["top"].split()[0] in ("fire", "no_fire")
    pic = np.asarray(Image.open(shot).convert("RGB"))[48:528, 14:654]  # where the page puts the picture
    assert pic.std() > 10  # a real frame with its annotation, not an empty box


def test_consumers_receive_every_live_result(mjpeg, fire_models):
    """The library call: serve() with result consumers (what MQTT reporting plugs into)."""
    from mltool.serve import ServeConfig, serve

    cam = mjpeg(fps=30)
    got: list = []
    seen = threading.Event()
    stop = threading.Event()
    events: list[dict] = []

    def consumer(result) -> None:
        got.append(result)
        if len(got) >= 10:
            seen.set()

    def broken(result) -> None:
        raise RuntimeError("a consumer with a bug")

    cfg = ServeConfig(model=str(fire_models["int8"]), port=0, source=cam.url)
    t = threading.Thread(target=serve, args=(cfg,), kwargs={"consumers": [broken, consumer], "on_event": events.append, "stop": stop})
    t.start()
    try:
        assert seen.wait(30)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert all(r.top.label in ("fire", "no_fire") and r.image.shape == (120, 160, 3) for r in got[:10])
    assert [e["event"] for e in events] == ["ready", "stopped"] and events[1]["live_frames"] >= 10


def test_video_source_closed_from_another_thread_mid_read(fire_video):
    """serve's shutdown closes the live source from another thread while it reads: an OpenCV
    capture released mid-read aborted the process or deadlocked (seen as a serve that ignored
    SIGTERM). Run in a child so a regression fails this test, not the whole session."""
    import subprocess
    import sys

    code = f"""
import threading, time
from pathlib import Path
from mltool.runtime.sources.files import VideoFile
for i in range(150):
    v = VideoFile(Path({str(fire_video)!r}))
    frames = []
    t = threading.Thread(target=lambda: frames.extend(1 for _ in v), daemon=True)
    t.start()
    time.sleep(0.001 * (i % 7))
    v.close()
    t.join(10)
    assert not t.is_alive(), f"round {{i}}: the reader still runs after close()"
    assert len(frames) <= 40
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_one_bad_frame_does_not_end_the_live_view(tmp_path):
    """serve --source runs the same loop as infer: a frame whose scores are NaN is an error event
    and the live view goes on to the next frame and the end of the source (it used to stop for good)."""
    import tensorflow as tf

    from mltool.serve import ServeConfig, serve

    x = tf.keras.Input((8, 8, 3))
    mean = tf.keras.layers.GlobalAveragePooling2D()(x)
    probs = tf.keras.layers.Dense(2, activation="softmax")(mean)
    # sqrt(0.75 - mean): NaN for a bright picture (its scores are NaN), fine for a dark or blank one
    scale = tf.keras.layers.Lambda(lambda m: tf.sqrt(0.75 - tf.reduce_mean(m, axis=1, keepdims=True)))(mean)
    model = tf.keras.Model(x, tf.keras.layers.Multiply()([probs, scale]))
    path = tmp_path / "nan_when_bright.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, value in (("a_dark.png", 10), ("b_bright.png", 240), ("c_dark.png", 20)):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(folder / name)
    results: list = []
    events: list[dict] = []
    ended = threading.Event()

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "end":
            ended.set()

    stop = threading.Event()
    cfg = ServeConfig(model=str(path), port=0, source=str(folder), predictor={"mean": [0.0], "std": [255.0]})
    t = threading.Thread(target=serve, args=(cfg,), kwargs={"consumers": [results.append], "event_consumers": [on_event],
                                                             "stop": stop})
    t.start()
    try:
        assert ended.wait(60)
    finally:
        stop.set()
        t.join(30)
    assert [r.name.rsplit("/", 1)[1] for r in results] == ["a_dark.png", "c_dark.png"]
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["name"].endswith("b_bright.png") and "NaN" in errors[0]["message"]
    assert events[-1]["event"] == "end" and events[-1]["message"] == "ended"


def _until_end(url: str, timeout: float = 60) -> tuple[list[dict], float]:
    """Every /events record up to the source's end, and how long that took."""
    out, t0 = [], time.monotonic()
    with requests.get(f"{url}/events", stream=True, timeout=timeout) as r:
        for line in r.iter_lines(chunk_size=1):  # records as they come, not when 512 bytes have
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
                if out[-1].get("event") == "end" or time.monotonic() - t0 > timeout:
                    break
    return out, time.monotonic() - t0


def test_video_source_plays_at_its_rate_and_a_late_viewer_sees_the_end(serve, fire_models, fire_video, tmp_path):
    """A video file as the live source plays at its frame rate (40 frames at 10 fps: ~4 s, not a
    blink), says when it ends, and a browser that opens the page afterwards sees the last annotated
    frame and the last result at once (it saw a black box and "waiting for results...")."""
    s = serve(fire_models["int8"], "--source", fire_video)
    records, took = _until_end(s.url)
    results = [r for r in records if "predictions" in r]
    assert records[-1].get("event") == "end" and records[-1]["message"] == "ended", (records[-3:], took)
    assert len(results) >= 35 and took > 3.0, (len(results), took)

    from tests.browser import Browser

    _chromium()
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.open(s.url + "/")
        browser.wait_for("document.body.dataset.frames && Number(document.body.dataset.results || 0) >= 1")
        state = json.loads(browser.evaluate("JSON.stringify({top: document.getElementById('top').textContent, "
                                            "status: document.getElementById('status').textContent})"))
        shot = browser.screenshot(tmp_path / "after-end.png")
    finally:
        browser.close()
    assert state["top"].split()[0] in ("fire", "no_fire") and state["status"] == "end: ended", state
    pic = np.asarray(Image.open(shot).convert("RGB"))[48:528, 14:654]
    assert pic.std() > 10  # the last annotated frame, not an empty box


def test_video_source_loops(serve, fire_models, fire_video):
    s = serve(fire_models["int8"], "--source", fire_video, "--loop")
    deadline = time.monotonic() + 30
    while _live_frames(s.url) <= 45 and time.monotonic() < deadline:  # 40 frames in the file
        time.sleep(0.5)
    assert _live_frames(s.url) > 45
