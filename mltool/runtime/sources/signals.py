"""1-D signals: .npy/.csv/.wav files and samples on stdin, cut into windows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mltool.data.signals import SIGNAL_EXTENSIONS as _DATA_SIGNAL_EXTENSIONS
from mltool.errors import DataError
from mltool.runtime.sources.frames import Frame, SourceEvent, SourceStats

SIGNAL_EXTENSIONS = _DATA_SIGNAL_EXTENSIONS | {".wav"}  # what training reads, plus recordings


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"cannot read WAV file {path} ({exc})", "save it as PCM WAV") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise DataError(f"WAV file {path} has {8 * width}-bit samples", "save it as 8/16/32-bit PCM")
    data = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if width == 1:
        data -= 128
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    return data, rate


class SignalSource:
    kind = "signal"
    live = False
    fps = None

    def __init__(self, label: str, samples: Callable[[], Iterator[np.ndarray]], window: int, hop: int, rate: float | None) -> None:
        self.label = label
        self.samples = samples
        self.window = window
        self.hop = hop
        self.rate = rate
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        buf = np.zeros(0, np.float32)
        start = 0  # sample index of buf[0]
        index = 0
        for chunk in self.samples():
            t0 = time.perf_counter()
            buf = np.concatenate([buf, chunk.astype(np.float32)])
            while len(buf) >= self.window:
                self.stats.frames += 1
                name = f"{self.label}@{start}" if self.rate is None else f"{self.label}@{start / self.rate:.2f}s"
                yield Frame(index, name, time.time(), signal=buf[: self.window].copy(), read_ms=(time.perf_counter() - t0) * 1000)
                index += 1
                buf = buf[self.hop :]
                start += self.hop

    def close(self) -> None:
        pass


def signal_file(path: Path, window: int, hop: int, rate: float | None) -> SignalSource:
    if path.suffix.lower() == ".wav":
        data, file_rate = read_wav(path)
        if rate is not None and abs(file_rate - rate) > 1e-6:
            raise DataError(f"{path} is sampled at {file_rate} Hz, the model expects {rate:g} Hz",
                            f"resample it to {rate:g} Hz (e.g. sox in.wav -r {rate:g} out.wav)")
    else:
        from mltool.data.signals import read_signal

        data = read_signal(path)
    if len(data) < window:
        raise DataError(f"signal file {path} has {len(data)} samples, the model needs windows of {window}",
                        f"record at least {window} samples{f' ({window / rate:g} s at {rate:g} Hz)' if rate else ''}")
    return SignalSource(str(path), lambda: iter([data]), window, hop, rate)


def stdin_samples(stream: Any) -> Callable[[], Iterator[np.ndarray]]:
    def gen() -> Iterator[np.ndarray]:
        for lineno, line in enumerate(stream, 1):
            parts = line.replace(",", " ").split()
            if not parts:
                continue
            try:
                yield np.asarray([float(p) for p in parts], np.float32)
            except ValueError:
                raise DataError(f"stdin line {lineno} is not numeric: {line.strip()[:40]!r}",
                                "send one number (or comma-separated numbers) per line") from None
    return gen



class MultiSignal:
    """Several signal files, one after the other; a bad file is reported and skipped."""

    kind = "signal"
    live = False
    fps = None

    def __init__(self, files: list[Path], label: str, window: int, hop: int, rate: float | None) -> None:
        self.files, self.label, self.window, self.hop, self.rate = files, label, window, hop, rate
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        index = 0
        for f in self.files:
            try:
                src = signal_file(f, self.window, self.hop, self.rate)
            except DataError as exc:
                self.stats.errors += 1
                yield SourceEvent("error", exc.one_line(), str(f))
                continue
            for item in src:
                if isinstance(item, Frame):
                    item.index = index
                    index += 1
                    self.stats.frames += 1
                yield item

    def close(self) -> None:
        pass
