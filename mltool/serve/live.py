"""``serve --source SRC``: continuous inference on a camera/stream/video beside the HTTP API.

A thread reads the source (newest frame wins, as in `mltool infer`), runs each frame on the
engine's live slot (so hot reload swaps it too), and hands every :class:`Result` to the
*consumers* given to :class:`LiveView` (``serve --mqtt`` passes the MQTT reporter's ``result``;
called on the live thread, so they must be quick) plus the browser view itself, which serves

* ``/``             a small page: the annotated live picture and the latest results;
* ``/stream.mjpg``  multipart MJPEG, newest frame wins, at most ``--fps`` per viewer;
* ``/snapshot.jpg`` the latest annotated frame;
* ``/events``       Server-Sent Events, one JSON record per result (and source events).

Viewers never slow inference: the thread only publishes the newest JPEG and record; each
viewer's coroutine sends when its socket has room and skips what it missed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mltool.runtime.predictor import Result
from mltool.runtime.sources import Frame, SourceEvent
from mltool.serve.http import HttpError, Request, Response, StreamedResponse, StreamWriter

if TYPE_CHECKING:
    from mltool.serve.app import App

Consumer = Callable[[Result], None]


def encode_jpeg(result: Result, quality: int = 80) -> bytes | None:
    import cv2

    bgr = result.annotated()
    if bgr is None:
        return None
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


class LiveView:
    def __init__(self, app: App, source: str, slot: int, consumers: list[Consumer] | None = None,
                 event_consumers: list[Callable[[dict[str, Any]], None]] | None = None) -> None:
        self.app = app
        self.cfg = app.cfg
        self.spec = source
        self.slot = slot
        self.consumers: list[Consumer] = list(consumers or [])
        self.event_consumers = list(event_consumers or [])
        self.loop: asyncio.AbstractEventLoop | None = None
        self.latest: Result | None = None
        self.latest_seq = -1  # the seq at which `latest` was published
        self.result_record: dict[str, Any] | None = None  # the latest result's record (not an event's)
        self.record: dict[str, Any] | None = None
        self.seq = 0
        self.jpeg: bytes | None = None
        self.jpeg_seq = -1
        self.viewers = 0
        self.snapshot_wanted = 0.0
        self.frames = 0
        self.consumer_errors = 0
        self.state = "starting"
        self.label = source
        self._changed: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: Any = None
        self._release: str | None = None  # the release that made the latest live result
        self._last_encode = 0.0
        app.add("GET", "/", self.page)
        app.add("GET", "/stream.mjpg", self.mjpeg)
        app.add("GET", "/snapshot.jpg", self.snapshot)
        app.add("GET", "/events", self.events)
        app.metrics.gauge("mltool_live_frames_total", "counter", "Frames of --source run through the model.", lambda: [({}, self.frames)])
        app.metrics.gauge("mltool_live_dropped_frames_total", "counter", "Frames of --source dropped because inference was busy.",
                          lambda: [({}, self._source.stats.dropped if self._source is not None else 0)])
        app.metrics.gauge("mltool_live_viewers", "gauge", "Browsers watching /stream.mjpg.", lambda: [({}, self.viewers)])

    # ------------------------------------------------------------------ the source thread
    def open(self) -> None:
        """Open the source now, so a bad --source fails before the server starts listening."""
        from mltool.runtime.sources import open_source

        p = self.app.engine.release.first  # type: ignore[union-attr]
        self._source = open_source(self.spec, kind=p.kind, signal_window=p.input.window, channels=p.input.channels,
                                   rate=p.input.rate_hz, timeout_s=self.cfg.source_timeout_s,
                                   max_reconnects=self.cfg.max_reconnects, draft=p._draft(), camera=self.cfg.camera,
                                   realtime=True, loop=self.cfg.loop)  # a video plays at its own rate, like a camera
        if p.kind == "image" and self._source.kind == "signal":
            self._source.close()
            from mltool.errors import ConfigError

            raise ConfigError(f"{p.path} takes images but {self.spec} is a signal source", "pass an image/video/camera/stream source")
        self.label = self._source.label

    @property
    def kind(self) -> str | None:
        """The source's kind (camera, stream, video, ...), once opened."""
        src = getattr(self, "_source", None)
        return src.kind if src is not None else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="serve-live", daemon=True)
        self._thread.start()

    def _infer(self, frame: Frame) -> Result:
        """One frame on the engine's live slot (a hot reload swaps the model under it)."""
        result, self._release = self.app.engine.run_on_slot(
            self.slot, lambda p, rel: (p.predict_frame(frame, source=self.label), rel.id))
        return result

    def _run(self) -> None:
        from mltool.runtime.predictor import Stream

        self.state = "running"
        try:
            for item in Stream(None, self._source, every=self.cfg.every, events=True, run=self._infer):
                if self._stop.is_set():
                    break
                if isinstance(item, SourceEvent):
                    record = item.as_dict(self.label)
                    for consumer in list(self.event_consumers):
                        self._call(consumer, record)
                    self._post(record, None, None)
                    continue
                result, rid = item, self._release
                self.frames += 1
                for consumer in list(self.consumers):
                    self._call(consumer, result)
                record = {**result.as_dict(), "release": rid}
                if result.size:
                    record["width"], record["height"] = result.size
                jpeg = None
                now = time.monotonic()
                if (self.viewers or now < self.snapshot_wanted) and now - self._last_encode >= 1 / self.cfg.fps:
                    jpeg = encode_jpeg(result)
                    self._last_encode = now
                self._post(record, result, jpeg)
            self.state = "ended"
        except Exception as exc:
            self.state = f"failed: {exc}"
            self.app.log(f"live source {self.label} stopped: {type(exc).__name__}: {exc}")
        end = {"event": "end", "source": self.label, "message": self.state, "timestamp": time.time()}
        for consumer in list(self.event_consumers):  # MQTT: close open events, state says "ended"
            self._call(consumer, end)
        self._post(end, None, None)

    def _call(self, consumer: Callable[[Any], None], value: Any) -> None:
        try:
            consumer(value)
        except Exception as exc:  # a consumer's bug must not stop the live loop
            self.consumer_errors += 1
            if self.consumer_errors <= 3:
                self.app.log(f"live consumer {getattr(consumer, '__name__', consumer)!r} failed: {type(exc).__name__}: {exc}")

    def _post(self, record: dict[str, Any], result: Result | None, jpeg: bytes | None) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self._publish, record, result, jpeg)
        except RuntimeError:
            pass

    def _publish(self, record: dict[str, Any], result: Result | None, jpeg: bytes | None) -> None:
        self.seq += 1
        self.record = record
        if result is not None:
            self.latest, self.latest_seq, self.result_record = result, self.seq, record
        if jpeg is not None:
            self.jpeg, self.jpeg_seq = jpeg, self.seq
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _next(self, timeout: float | None = None) -> None:
        ev = self._changed
        if ev is None:
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._source is not None:
            self._source.close()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.source_timeout_s + 2)

    # ------------------------------------------------------------------ routes
    async def page(self, req: Request) -> Response:
        from mltool.serve.page import render

        return Response(200, render(self.app.name, self.label).encode(), "text/html; charset=utf-8",
                        [("Cache-Control", "no-store")])

    async def _fresh_jpeg(self) -> None:
        """Encode the latest result now when nobody was watching as it came (no JPEG is made
        for frames nobody sees)."""
        if self.latest is not None and (self.jpeg is None or self.jpeg_seq < self.latest_seq):
            seq = self.latest_seq
            jpeg = await asyncio.get_running_loop().run_in_executor(None, encode_jpeg, self.latest)
            if jpeg is not None and seq >= self.jpeg_seq:
                self.jpeg, self.jpeg_seq = jpeg, seq
                self._wake()

    async def snapshot(self, req: Request) -> Response:
        if self.latest is None:
            raise HttpError(503, "no frame yet from the source", [("Retry-After", "1")])
        jpeg = self.jpeg if self.jpeg is not None and self.jpeg_seq >= 0 and self.latest is not None else None
        if jpeg is None or self.jpeg_seq < self.seq - 1:
            self.snapshot_wanted = time.monotonic() + 10
            jpeg = await asyncio.get_running_loop().run_in_executor(None, encode_jpeg, self.latest)
        if jpeg is None:
            raise HttpError(404, "this model takes signals: there is no picture")
        return Response(200, jpeg, "image/jpeg", [("Cache-Control", "no-store")])

    async def mjpeg(self, req: Request) -> StreamedResponse:
        async def produce(w: StreamWriter) -> None:
            self.viewers += 1
            try:
                await self._fresh_jpeg()  # a viewer who comes late (or after the end) sees the last picture at once
                # each part ends with the next boundary: a browser shows a frame when its part is
                # complete, so the last frame (a stalled or ended source) is shown now, not never
                w.send(b"--frame\r\n")
                sent = -1
                gap = 1.0 / self.cfg.fps
                last = 0.0
                while not w.closed and not self._stop.is_set():
                    if self.jpeg is None or self.jpeg_seq == sent:
                        await self._next(15)
                        continue
                    wait = gap - (time.monotonic() - last)
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if w.congested:  # the client is behind: wait for room, then send the newest
                        await w.drained()
                        continue
                    jpeg, sent = self.jpeg, self.jpeg_seq
                    w.send(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n--frame\r\n")
                    last = time.monotonic()
            finally:
                self.viewers -= 1

        return StreamedResponse(produce, "multipart/x-mixed-replace; boundary=frame", [("Cache-Control", "no-store")])

    async def events(self, req: Request) -> StreamedResponse:
        async def produce(w: StreamWriter) -> None:
            w.send(b"retry: 2000\n\n")
            sent = 0
            # a late viewer gets the last result at once, then the source's last word if it came after
            for record in (self.result_record, self.record if self.record is not self.result_record else None):
                if record is not None:
                    w.send(b"data: " + json.dumps(record).encode() + b"\n\n")
                    sent = self.seq
            while not w.closed and not self._stop.is_set():
                if self.seq == sent:
                    await self._next(15)
                    if self.seq == sent and not w.closed:
                        w.send(b": keep-alive\n\n")
                    continue
                if w.congested:
                    await w.drained()
                    continue
                sent = self.seq
                w.send(b"data: " + json.dumps(self.record).encode() + b"\n\n")

        return StreamedResponse(produce, "text/event-stream", [("Cache-Control", "no-store")])
