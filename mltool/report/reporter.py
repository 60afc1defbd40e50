"""Reporters: where results go. A reporter is four calls, so ``run_infer`` and ``serve``'s live
loop can feed the same object::

    reporter = MqttReporter(MqttOptions(url="mqtt://broker.local/home").resolve())
    reporter.connect()                   # fails fast on bad credentials / TLS (exit 1)
    run_infer(cfg, on_start=reporter.start, on_result=reporter.result, on_event=reporter.event)
    stats = reporter.close()             # drains the outbox (bounded), publishes "stopped"

``result`` is called on the inference thread and does only in-memory bookkeeping plus, when
something changed, one outbox write; encoding snapshots and talking to the broker happen on the
publisher's threads.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mltool.report.config import MqttConfig
from mltool.report.formats import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_STOPPED,
    Context,
    alink_event_values,
    alink_post,
    alink_sign,
    alink_state_values,
    alink_topic,
    dumps,
    event_payload,
    ha_discovery,
    model_identity,
    state_payload,
)
from mltool.report.lifecycle import Event, Lifecycle, State

if TYPE_CHECKING:
    from mltool.runtime.predictor import Result
    from mltool.runtime.sources import SourceEvent


@runtime_checkable
class Reporter(Protocol):
    """Where a run's results go: what `infer` and `serve` call (tests check MqttReporter is one)."""

    def start(self, info: dict[str, Any]) -> None:
        """The run begins: ``info`` is ``Predictor.describe()`` plus ``source`` and ``source_kind``."""

    def result(self, result: Result) -> None:
        """One result; called on the inference thread, so it must be quick."""

    def event(self, event: dict[str, Any] | SourceEvent) -> None:
        """A source event (error, lost, reconnected, stalled)."""

    def close(self) -> dict[str, Any]:
        """Stop; returns counters for the run's summary."""


def _stderr(msg: str) -> None:
    print(f"mqtt: {msg}", file=sys.stderr, flush=True)


class MqttReporter:
    def __init__(self, cfg: MqttConfig, *, log: Any = _stderr, drain_s: float = 10.0) -> None:
        from mltool import __version__

        self.cfg = cfg
        self.log = log
        self.drain_s = drain_s
        self.ctx = Context(cfg.device, cfg.prefix, version=__version__)
        self.lifecycle = Lifecycle(cfg.update_delta, cfg.clear_frames)
        self.state = State(cfg.update_delta)
        self.outbox: Any = None
        self.publisher: Any = None
        self._lock = threading.Lock()  # the state is built by the inference thread and the heartbeat
        self._alink = cfg.format == "alink"
        self._closed = False
        self.events = 0
        self.write_errors = 0

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the outbox and connect (see :meth:`Publisher.start` for what fails and what waits)."""
        from mltool.report.outbox import Outbox
        from mltool.report.publisher import Publisher

        cfg = self.cfg
        if cfg.password_on_command_line:
            self.log("the password in --mqtt is visible to every user in `ps`: use MLTOOL_MQTT_PASSWORD or --mqtt-credentials")
        if cfg.credentials_warning:
            self.log(cfg.credentials_warning)
        self.outbox = Outbox(cfg.outbox, max_rows=cfg.max_rows, max_bytes=cfg.max_bytes)
        if self.outbox.rows:
            self.log(f"{self.outbox.rows} messages from an earlier run are in the outbox: they go first")
        if self._alink:
            client_id, user, password = alink_sign(cfg.product_key or "", cfg.device, cfg.device_secret or "",
                                                   method=cfg.sign_method, tls=cfg.tls)
            self.publisher = Publisher(cfg, self.outbox, log=self.log, client_id=client_id, username=user, password=password)
        else:
            avail = self.ctx.topic("available")
            self.publisher = Publisher(cfg, self.outbox, log=self.log, availability=(avail, STATUS_ONLINE, STATUS_OFFLINE))
        try:
            self.publisher.start()
        except BaseException:
            self.outbox.close()
            raise
        self.publisher.every(cfg.interval, lambda: self._state("heartbeat"))

    def start(self, info: dict[str, Any]) -> None:
        if self.publisher is None:
            self.connect()
        self.ctx.model, self.ctx.release = model_identity(info.get("model", ""), info.get("release"))
        self.ctx.source = str(info.get("source", ""))
        self.ctx.task = str(info.get("task", ""))
        try:
            if self.cfg.discovery == "homeassistant":
                for topic, payload in ha_discovery(self.ctx, self.cfg.qos):
                    self.outbox.put(topic, dumps(payload), qos=self.cfg.qos, retain=True, key=topic)
            self._state("start")
        except sqlite3.Error as exc:
            self._write_failed(exc)
        self.publisher.wake()

    def result(self, result: Result) -> None:
        written = False
        try:
            with self.outbox.batch():  # one commit for this result's messages
                for kind, ev in self.lifecycle.update(result):
                    self._event(kind, ev, result)
                    written = True
                if self.state.update(result, bool(self.lifecycle.active)):
                    self._state("change")
                    written = True
        except sqlite3.Error as exc:
            self._write_failed(exc)
        if written:  # waking the publisher for nothing would cost the inference thread its GIL
            self.publisher.wake()

    def event(self, event: dict[str, Any] | SourceEvent) -> None:
        """A source event; ``end`` (serve's live view reached the end of a file, or its source
        stopped) closes the open events and says so in the state."""
        kind = event.get("event", "") if isinstance(event, dict) else event.kind
        if self._closed:
            return
        try:
            with self.outbox.batch():
                if kind == "end":
                    for k, ev in self.lifecycle.finish():
                        self._event(k, ev, None)
                    self.state.active = False
                if self.state.source_event(kind):
                    self._state("source")
        except sqlite3.Error as exc:
            self._write_failed(exc)
        self.publisher.wake()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        """A full or read-only disk: inference goes on; the messages that could not be written
        count as dropped (their sequence numbers stay used, so receivers see the gap); said once."""
        if not self.write_errors:
            self.log(f"cannot write the outbox {self.cfg.outbox} ({exc}): messages that cannot be written are "
                     "dropped and counted until it can")
        self.write_errors += 1

    def close(self) -> dict[str, Any]:
        if self._closed or self.publisher is None:
            return self.stats()
        self._closed = True
        try:
            for kind, ev in self.lifecycle.finish():
                self._event(kind, ev, None)
            self._state("stop")
        except sqlite3.Error as exc:
            self._write_failed(exc)
        final = None if self._alink else (self.ctx.topic("available"), STATUS_STOPPED)
        self.publisher.close(self.drain_s, final=final)
        stats = self.stats()
        self.outbox.close()
        if stats["pending"]:
            self.log(f"{stats['pending']} messages kept in {self.cfg.outbox}: they are sent on the next start")
        if self.outbox.lost:
            self.log(f"{self.outbox.lost} messages could not be written to {self.cfg.outbox} (full or read-only disk) and "
                     "were dropped: receivers see the gap in the sequence numbers")
        return stats

    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = {"broker": self.cfg.url_masked, "format": self.cfg.format}
        if self.outbox is not None:
            s.update({"published": self.publisher.acked, "pending": self.outbox.rows, "dropped": self.outbox.dropped,
                      "events": self.events, "outbox": str(self.cfg.outbox)})
            if self.write_errors:
                s["write_errors"] = self.write_errors
            if self.outbox.lost:
                s["not_written"] = self.outbox.lost  # part of "dropped"
        return s

    # ------------------------------------------------------------------ messages
    def _event(self, kind: str, ev: Event, result: Result | None) -> None:
        cfg = self.cfg
        counters = ("alink" if self._alink else "events",) + (("event",) if kind == "new" else ())
        snapshot = cfg.snapshot and kind == "new" and result is not None and result.image is not None

        def build(c: dict[str, int]) -> bytes:
            if kind == "new":
                self.events += 1
                ev.number = c["event"]
                ev.id = f"{cfg.device}-{ev.number}"
            if self._alink:
                return dumps(alink_post(c["alink"], alink_event_values(kind, ev, self.ctx.task), cfg.alink_properties))
            return dumps(event_payload(kind, ev, c["events"], self.ctx, snapshot=snapshot))

        self.outbox.put(self._topic_post() or self.ctx.topic("events"), build, qos=cfg.qos, counters=counters)
        if snapshot:
            self.publisher.submit(lambda: self._snapshot(result))

    def _state(self, reason: str) -> None:
        # the outbox's lock first, then ours: the same order on the inference and heartbeat threads
        with self.outbox.batch(), self._lock:
            if self._alink:
                values = alink_state_values(self.state, self.ctx.task)
                self.outbox.put(self._topic_post(), lambda c: dumps(alink_post(c["alink"], values, self.cfg.alink_properties)),
                                qos=self.cfg.qos, key="state", counters=("alink",))
            else:
                payload = state_payload(self.state, list(self.lifecycle.active.values()), self.ctx, self.outbox.stats(), reason)
                self.outbox.put(self.ctx.topic("state"), dumps(payload), qos=self.cfg.qos, retain=True, key="state")
            self.state.published()

    def _topic_post(self) -> str | None:
        return alink_topic(self.cfg.product_key or "", self.cfg.device) if self._alink else None

    def _snapshot(self, result: Any) -> None:
        """The annotated frame as a JPEG no larger than --mqtt-snapshot-max-kb (publisher thread)."""
        import cv2

        img = result.annotated()
        limit = self.cfg.snapshot_max_bytes
        quality = 90
        while True:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            data = buf.tobytes()
            if len(data) <= limit or (quality <= 30 and min(img.shape[:2]) <= 64):
                break
            if quality > 30:
                quality -= 20
            else:
                img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        if len(data) <= limit:
            self.outbox.put(self.ctx.topic("snapshot"), data, qos=self.cfg.qos, retain=True)
