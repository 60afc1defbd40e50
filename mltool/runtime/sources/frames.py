"""What a source yields: frames (an image or a signal window) and events (errors, a lost
camera, a reconnection), plus the counters every source keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Frame:
    index: int
    name: str
    timestamp: float
    image: np.ndarray | None = None  # H x W x 3 RGB uint8
    signal: np.ndarray | None = None  # one window, float32
    read_ms: float = 0.0


@dataclass
class SourceEvent:
    kind: str  # error | lost | reconnected | stalled
    message: str
    name: str = ""
    timestamp: float = field(default_factory=time.time)


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

