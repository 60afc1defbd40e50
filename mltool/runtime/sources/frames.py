"""What a source yields: frames (an image or a signal window) and events (errors, a lost
camera, a reconnection), plus the counters every source keeps, and how well a live sensor kept
its sample rate (:class:`SamplingStats`, per window and per run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class SamplingStats:
    """How a sensor kept its rate over a window (or a whole run). A sample is *late* when read
    more than half a period after its deadline, *missed* when its deadline passed unread (its
    slot holds the previous value). ``ok`` is False when late + missed exceed ``tolerance`` of
    the samples: a classifier fed such a window answers confidently about the wrong signal."""

    rate_hz: float
    samples: int
    achieved_hz: float | None
    late: int
    missed: int
    jitter_ms: dict[str, float]  # p50, p99, max of (read time - deadline)
    tolerance: float
    read_ms: dict[str, float] | None = None  # p50, p99, max of the bus read itself (runs only)

    @property
    def ok(self) -> bool:
        return self.late + self.missed <= self.tolerance * self.samples

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rate_hz": self.rate_hz, "achieved_hz": self.achieved_hz, "samples": self.samples,
                             "late": self.late, "missed": self.missed, "jitter_ms": self.jitter_ms,
                             "tolerance": self.tolerance, "ok": self.ok}
        if self.read_ms is not None:
            d["read_ms"] = self.read_ms
        return d


@dataclass
class Frame:
    index: int
    name: str
    timestamp: float
    image: np.ndarray | None = None  # H x W x 3 RGB uint8
    signal: np.ndarray | None = None  # one window, float32
    read_ms: float = 0.0
    sampling: SamplingStats | None = None  # live sensors: how this window was sampled


@dataclass
class SourceEvent:
    kind: str  # error | lost | retry | reconnected | stalled | dropped
    message: str
    name: str = ""
    timestamp: float = field(default_factory=time.time)

    def as_dict(self, source: str) -> dict[str, Any]:
        """The event's record on the wire (infer --json, serve's /events, the MQTT reporter)."""
        return {"event": self.kind, "source": source, "name": self.name, "message": self.message, "timestamp": self.timestamp}


@dataclass
class SourceStats:
    frames: int = 0
    dropped: int = 0
    errors: int = 0
    reconnects: int = 0


class Source(Protocol):
    label: str
    kind: str  # images | video | camera | stream | picamera | signal
    live: bool
    stats: SourceStats
    fps: float | None

    def __iter__(self) -> Iterator[Frame | SourceEvent]: ...

    def close(self) -> None: ...

