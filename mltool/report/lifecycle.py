"""From a stream of results to a few messages: Frigate-style events and a "latest" state.

Events (one per class at a time): ``new`` when the class appears (a classification alert turns
active, or a detector finds the class), ``update`` only when its score rises by ``update_delta``
over the last published score or its number of objects changes and holds for ``confirm`` results,
``end`` after ``clear_frames`` results in a row without it (one noisy frame does not end an event
and start another). The state is published at once when an event opens or closes, the set of detected
classes or the source's status changes, and at most once a second when only the top class or its
score (by ``update_delta``) moves; the publisher adds a heartbeat.

Pure logic on :class:`~mltool.runtime.predictor.Result`: no I/O, microseconds per result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    cls: str
    start: float
    score: float
    threshold: float | None
    frame: int
    boxes: list[list[float]] = field(default_factory=list)
    count: int = 0
    top_score: float = 0.0
    published_score: float = 0.0
    frames: int = 1
    clear: int = 0
    pending_count: int | None = None
    pending_n: int = 0
    number: int = 0  # assigned by the outbox when `new` is stored
    id: str = ""
    end: float | None = None
    reason: str | None = None  # cleared | stopped


def observe(r: Any) -> dict[str, tuple[float, list[list[float]], float | None]]:
    """class -> (score, boxes, threshold) for what is "present" in one result."""
    if r.task == "detection":
        seen: dict[str, tuple[float, list[list[float]], float | None]] = {}
        for d in r.detections:  # sorted by score, best first
            score, boxes, _ = seen.get(d.label, (d.score, [], None))
            boxes.append([round(float(v), 4) for v in d.box])
            seen[d.label] = (max(score, float(d.score)), boxes, None)
        return seen
    a = r.alert
    if a is not None and a.active:
        return {a.label: (float(a.score), [], a.threshold)}
    return {}


class Lifecycle:
    def __init__(self, update_delta: float = 0.05, clear_frames: int = 3, confirm: int = 2) -> None:
        self.update_delta = update_delta
        self.clear_frames = max(1, clear_frames)
        self.confirm = max(1, confirm)
        self.active: dict[str, Event] = {}

    def update(self, r: Any) -> list[tuple[str, Event]]:
        """The messages one result causes: a list of (new|update|end, event)."""
        out: list[tuple[str, Event]] = []
        seen = observe(r)
        for cls, (score, boxes, thr) in seen.items():
            ev = self.active.get(cls)
            if ev is None:
                ev = Event(cls, r.timestamp, score, thr, r.index, boxes, len(boxes), score, score)
                self.active[cls] = ev
                out.append(("new", ev))
                continue
            ev.clear = 0
            ev.frames += 1
            ev.score, ev.boxes, ev.frame = score, boxes, r.index
            ev.top_score = max(ev.top_score, score)
            changed = False
            if len(boxes) != ev.count:
                ev.pending_n = ev.pending_n + 1 if ev.pending_count == len(boxes) else 1
                ev.pending_count = len(boxes)
                if ev.pending_n >= self.confirm:
                    ev.count, ev.pending_count, ev.pending_n = len(boxes), None, 0
                    changed = True
            else:
                ev.pending_count, ev.pending_n = None, 0
            if changed or score >= ev.published_score + self.update_delta:
                ev.published_score = score
                out.append(("update", ev))
        for cls in [c for c in self.active if c not in seen]:
            ev = self.active[cls]
            ev.clear += 1
            if ev.clear >= self.clear_frames:
                ev.end, ev.reason, ev.frame = r.timestamp, "cleared", r.index
                del self.active[cls]
                out.append(("end", ev))
        return out

    def finish(self, timestamp: float | None = None) -> list[tuple[str, Event]]:
        """End every open event (the source ended or mltool is stopping)."""
        out = []
        for ev in self.active.values():
            ev.end, ev.reason = timestamp or time.time(), "stopped"
            out.append(("end", ev))
        self.active.clear()
        return out


class State:
    """The latest result in a few fields, and whether it changed enough to publish: at once when
    an event opens or closes, the set of detected classes or the source's status changes; at most
    once per ``min_interval_s`` when only the top class or its score moves."""

    def __init__(self, update_delta: float = 0.05, min_interval_s: float = 1.0) -> None:
        self.update_delta = update_delta
        self.min_interval_s = min_interval_s
        self.frames = 0
        self.frame: int | None = None
        self.timestamp: float | None = None
        self.top: tuple[str, float] | None = None
        self.active = False  # an event is open (debounced, unlike the raw alert)
        self.alert: Any = None  # the result's Alert
        self.objects: dict[str, int] = {}
        self.outputs: dict[str, Any] | None = None  # task raw: the latest output tensors (JSON-ready)
        self._published_outputs: dict[str, Any] | None = None
        self.source_status = "starting"
        self._published_key: tuple[Any, ...] | None = None
        self._published_top: tuple[str, float] | None = None
        self._published_at = 0.0

    def update(self, r: Any, active: bool) -> bool:
        self.frames += 1
        self.frame, self.timestamp = r.index, r.timestamp
        top = r.top
        self.top = (top.label, float(top.score)) if top is not None else None
        if r.task == "detection":
            objects: dict[str, int] = {}
            for d in r.detections:
                objects[d.label] = objects.get(d.label, 0) + 1
            self.objects = objects
        elif r.task == "raw":
            from mltool.runtime.predictor import tensor_json

            self.outputs = {k: _summary(v) if v.size > MAX_STATE_VALUES else tensor_json(v) for k, v in (r.outputs or {}).items()}
            if r.value is not None:
                self.outputs = {**self.outputs, "value": round(r.value, 6)}
        else:
            self.alert = r.alert
        self.active = active
        self.source_status = "ok"
        return self.due()

    def source_event(self, kind: str) -> bool:
        status = {"lost": "lost", "stalled": "stalled", "reconnected": "ok", "end": "ended"}.get(kind)
        if status is None or status == self.source_status:
            return False
        self.source_status = status
        return True

    def key(self) -> tuple[Any, ...]:
        return (self.active, tuple(sorted(self.objects)), self.source_status)

    def due(self) -> bool:
        if self.key() != self._published_key:
            return True
        if time.monotonic() - self._published_at < self.min_interval_s:
            return False
        if self.outputs is not None and self.outputs != self._published_outputs:  # raw: values moved
            return True
        old, new = self._published_top, self.top
        if old is None or new is None:
            return old != new
        return old[0] != new[0] or abs(old[1] - new[1]) >= self.update_delta

    def published(self) -> None:
        self._published_key = self.key()
        self._published_top = self.top
        self._published_outputs = self.outputs
        self._published_at = time.monotonic()


MAX_STATE_VALUES = 4096  # a raw output larger than this goes into the state as its shape and statistics


def _summary(v: Any) -> dict[str, Any]:
    return {"shape": list(v.shape), "min": round(float(v.min()), 6), "max": round(float(v.max()), 6),
            "mean": round(float(v.mean()), 6)}
