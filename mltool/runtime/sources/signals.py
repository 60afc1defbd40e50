"""1-D signals: .npy/.csv/.wav files, samples on stdin and live sensors, cut into windows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import DataError
from mltool.runtime.decode import SIGNAL_EXTENSIONS as _DATA_SIGNAL_EXTENSIONS
from mltool.runtime.sources.frames import Frame, SourceEvent, SourceStats
from mltool.runtime.sources.sampler import RESTART, SampleBlock, SensorStream, window_stats

SIGNAL_EXTENSIONS = _DATA_SIGNAL_EXTENSIONS | {".wav"}  # what training reads, plus recordings


def read_wav(path: Path, channels: int = 1) -> tuple[np.ndarray, int]:
    """PCM samples as float32 in [-1, 1] (full scale, the convention audio models are trained
    with): (n,) for ``channels`` 1 (the first channel of a multi-channel file), (n, channels)
    otherwise; and the sample rate."""
    import struct
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            rate, width, file_channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise DataError(f"WAV file {path} does not exist", "check the path") from None
    except PermissionError:
        raise DataError(f"cannot read WAV file {path} (permission denied)", "check its permissions") from None
    except (wave.Error, EOFError, OSError, struct.error, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(f"cannot read WAV file {path} ({reason})", "save it as PCM WAV (e.g. sox in.wav -e signed -b 16 out.wav)") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise DataError(f"WAV file {path} has {8 * width}-bit samples", "save it as 8/16/32-bit PCM")
    usable = len(raw) // (width * file_channels) * width * file_channels  # a truncated file ends mid-frame
    data = np.frombuffer(raw[:usable], dtype=dtype).astype(np.float32)
    if width == 1:
        data -= 128
    data /= float(1 << (8 * width - 1))
    data = data.reshape(-1, file_channels)
    if channels == 1:
        return data[:, 0], rate
    if file_channels != channels:
        raise DataError(f"WAV file {path} has {file_channels} channel(s), the model takes {channels}",
                        f"record {channels} channels")
    return data, rate


class SignalSource:
    """Windows of ``window`` samples every ``hop`` samples from ``samples()``, which yields
    plain arrays (files, stdin), or, from a live sensor, timed :class:`SampleBlock` objects,
    events and :data:`RESTART` markers; timed windows carry their :class:`SamplingStats`.
    ``window`` None: the whole stream is one window (models with a dynamic input length)."""

    kind = "signal"
    live = False
    fps = None

    def __init__(self, label: str, samples: Callable[[], Iterator[Any]], window: int | None, hop: int | None,
                 rate: float | None, channels: int = 1, tolerance: float = 0.01) -> None:
        self.label = label
        self.samples = samples
        self.window = window
        self.hop = hop or window
        self.rate = rate
        self.channels = channels
        self.tolerance = tolerance
        self.stats = SourceStats()

    def _frame(self, index: int, start: int, sig: np.ndarray, t0: float, times: np.ndarray | None = None,
               late: np.ndarray | None = None, wall0: float = 0.0) -> Frame:
        self.stats.frames += 1
        sampling = None
        if times is not None and len(times):  # a live sensor: named and stamped by its sample times
            sampling = window_stats(times, late, self.rate, self.tolerance)  # type: ignore[arg-type]
            name, ts = f"{self.label}@{times[0]:.2f}s", wall0 + float(times[-1])
        else:
            name = f"{self.label}@{start}" if self.rate is None else f"{self.label}@{start / self.rate:.2f}s"
            ts = time.time()
        return Frame(index, name, ts, signal=sig[:, 0] if self.channels == 1 else sig,
                     read_ms=(time.perf_counter() - t0) * 1000, sampling=sampling)

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        buf = np.zeros((0, self.channels), np.float32)
        times = late = np.zeros(0)  # timed sources only
        wall0 = 0.0
        start = 0  # sample index of buf[0]
        skip = 0  # a --hop longer than the window: samples still to drop from the next chunks
        index = 0
        t0 = time.perf_counter()
        for chunk in self.samples():
            if isinstance(chunk, SourceEvent):
                yield chunk
                continue
            if chunk is RESTART:  # a gap in the samples: no window spans it
                start += len(buf) + skip
                buf, times, late = buf[:0], times[:0], late[:0]
                skip = 0
                continue
            t0 = time.perf_counter()
            values = chunk.values if isinstance(chunk, SampleBlock) else chunk
            values = np.asarray(values, np.float32).reshape(-1, self.channels)
            if skip:  # chunked sources (sensors, stdin) deliver a few samples at a time
                drop = min(skip, len(values))
                skip -= drop
                values = values[drop:]
                if isinstance(chunk, SampleBlock):
                    times, late = np.concatenate([times, chunk.times[drop:]]), np.concatenate([late, chunk.late[drop:]])
                    wall0 = chunk.wall0
            elif isinstance(chunk, SampleBlock):
                times, late, wall0 = np.concatenate([times, chunk.times]), np.concatenate([late, chunk.late]), chunk.wall0
            buf = np.concatenate([buf, values])
            while self.window is not None and len(buf) >= self.window:
                yield self._frame(index, start, buf[: self.window].copy(), t0, times[: self.window], late[: self.window], wall0)
                index += 1
                skip = max(0, self.hop - len(buf))  # type: ignore[operator]
                buf, times, late = buf[self.hop :], times[self.hop :], late[self.hop :]
                start += self.hop  # type: ignore[operator]
        if self.window is None and len(buf):
            yield self._frame(index, start, buf, t0)
        elif index == 0 and self.window is not None:
            self.stats.errors += 1
            when = f" ({self.window / self.rate:g} s at {self.rate:g} Hz)" if self.rate else ""
            yield SourceEvent("error", f"{self.label}: only {len(buf)} samples arrived, fewer than one window of "
                                       f"{self.window}{when}", self.label)

    def close(self) -> None:
        pass


class SensorSource(SignalSource):
    """A live sensor (an I2C ADC...): the same windowing over a :class:`SensorStream`, plus
    the whole run's sampling figures (:meth:`sampling_summary`)."""

    live = True

    def __init__(self, stream: SensorStream, window: int, hop: int | None, tolerance: float) -> None:
        super().__init__(stream.label, lambda: iter(stream), window, hop, stream.rate, tolerance=tolerance)
        self.stream = stream
        self.stats = stream.stats  # one set of counters: frames counted here, errors there

    def sampling_summary(self) -> dict[str, Any]:
        return {**self.stream.summary().as_dict(), "realtime": self.stream.realtime}

    def close(self) -> None:
        self.stream.close()


def signal_file(path: Path, window: int | None, hop: int | None, rate: float | None, channels: int = 1) -> SignalSource:
    if path.suffix.lower() == ".wav":
        data, file_rate = read_wav(path, channels)
        if rate is not None and abs(file_rate - rate) > 1e-6:
            raise DataError(f"{path} is sampled at {file_rate} Hz, the model expects {rate:g} Hz",
                            f"resample it to {rate:g} Hz (e.g. sox in.wav -r {rate:g} out.wav)")
    else:
        from mltool.runtime.decode import read_signal

        data = read_signal(path, channels=channels)
    if window is not None and len(data) < window:
        raise DataError(f"signal file {path} has {len(data)} samples, the model needs windows of {window}",
                        f"record at least {window} samples{f' ({window / rate:g} s at {rate:g} Hz)' if rate else ''}")
    if window is None and len(data) == 0:
        raise DataError(f"signal file {path} holds no samples", "record some")
    return SignalSource(str(path), lambda: iter([data]), window, hop, rate, channels)


def stdin_samples(stream: Any, channels: int = 1) -> Callable[[], Iterator[np.ndarray]]:
    """Numbers on stdin: one sample per number (one channel), or one sample of ``channels``
    comma/space-separated values per line."""
    def gen() -> Iterator[np.ndarray]:
        for lineno, line in enumerate(stream, 1):
            parts = line.replace(",", " ").split()
            if not parts:
                continue
            try:
                values = np.asarray([float(p) for p in parts], np.float32)
            except ValueError:
                raise DataError(f"stdin line {lineno} is not numeric: {line.strip()[:40]!r}",
                                "send one number (or comma-separated numbers) per line") from None
            if not np.all(np.isfinite(values)):
                raise DataError(f"stdin line {lineno} holds a NaN or infinite value: {line.strip()[:40]!r}",
                                "send finite numbers only (check the sensor reader)")
            if channels > 1 and len(values) != channels:
                raise DataError(f"stdin line {lineno} has {len(values)} values, the model takes {channels} channels",
                                f"send one line of {channels} values per sample")
            yield values
    return gen


class MultiSignal:
    """Several signal files, one after the other; a bad file is reported and skipped."""

    kind = "signal"
    live = False
    fps = None

    def __init__(self, files: list[Path], label: str, window: int | None, hop: int | None, rate: float | None,
                 channels: int = 1) -> None:
        self.files, self.label, self.window, self.hop, self.rate, self.channels = files, label, window, hop, rate, channels
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        index = 0
        for f in self.files:
            try:
                src = signal_file(f, self.window, self.hop, self.rate, self.channels)
            except DataError as exc:
                self.stats.errors += 1
                yield SourceEvent("error", exc.one_line(), str(f))
                continue
            for item in src:
                if isinstance(item, Frame):
                    item.index = index
                    index += 1
                    self.stats.frames += 1
                else:
                    self.stats.errors += 1
                yield item

    def close(self) -> None:
        pass
