"""One source abstraction for everything `infer` and `bench --pipeline` read.

``open_source(spec)`` understands: an image file, a directory, a glob, a video file, a camera
index or ``/dev/videoN``, ``rtsp://`` and ``http(s)://`` streams (MJPEG parsed here, anything
else through OpenCV/FFmpeg), ``picamera`` (picamera2 on a Pi), ``.npy``/``.csv``/``.wav`` signal
files, and ``-`` for signal samples on stdin.

Iterating a source yields :class:`Frame` objects and :class:`SourceEvent` objects (errors that
were skipped, a lost camera, a reconnection). Live sources (cameras, streams) are read by a
capture thread that always hands over the *newest* frame: when inference is slower than the
camera, stale frames are dropped (and counted) instead of queueing up.
"""

from __future__ import annotations

import glob as globmod
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mltool.data.signals import SIGNAL_EXTENSIONS as _DATA_SIGNAL_EXTENSIONS
from mltool.errors import ConfigError, DataError

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg", ".mpg", ".mpeg", ".wmv", ".flv", ".h264"}
SIGNAL_EXTENSIONS = _DATA_SIGNAL_EXTENSIONS | {".wav"}  # what training reads, plus recordings


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


# --------------------------------------------------------------------------- files


def _image_exts() -> set[str]:
    from mltool.data.images import image_extensions

    return image_extensions()


class ImageFiles:
    kind = "images"
    live = False
    fps = None

    def __init__(self, paths: list[Path], label: str) -> None:
        self.paths = paths
        self.label = label
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        from mltool.data.images import read_image

        for i, p in enumerate(self.paths):
            t0 = time.perf_counter()
            try:
                img = read_image(p, None, "RGB")
            except DataError as exc:
                self.stats.errors += 1
                yield SourceEvent("error", exc.one_line(), str(p))
                continue
            self.stats.frames += 1
            yield Frame(i, str(p), time.time(), image=img, read_ms=(time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        pass


class VideoFile:
    kind = "video"
    live = False

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = path
        self.label = str(path)
        self.stats = SourceStats()
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise DataError(f"cannot open video {path}", "check that it is a video file OpenCV/FFmpeg can decode")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or None

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        import cv2

        i = 0
        while True:
            t0 = time.perf_counter()
            ok, bgr = self.cap.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.stats.frames += 1
            yield Frame(i, f"{self.path.name}#{i}", time.time(), image=rgb, read_ms=(time.perf_counter() - t0) * 1000)
            i += 1

    def close(self) -> None:
        self.cap.release()


# --------------------------------------------------------------------------- live capture


class _Reader(Protocol):
    def read(self) -> tuple[bool, np.ndarray | None]: ...  # RGB frame

    def release(self) -> None: ...


class _CvReader:
    """OpenCV capture (camera index, /dev/videoN, rtsp, non-MJPEG http) with FFmpeg timeouts."""

    def __init__(self, target: int | str, timeout_s: float) -> None:
        import cv2

        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        self.cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not self.cap.isOpened():
            self.cap.release()
            raise OSError(f"OpenCV could not open {target}")

    def read(self) -> tuple[bool, np.ndarray | None]:
        import cv2

        ok, bgr = self.cap.read()
        return (True, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if ok else (False, None)

    def release(self) -> None:
        self.cap.release()


class _MjpegReader:
    """multipart/x-mixed-replace JPEG over HTTP (what most IP and ESP32 cameras serve), or a
    single-JPEG snapshot URL polled once per read. Socket timeouts make reads fail, not hang."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import urllib.request

        self.url = url
        self.timeout = timeout_s
        self.resp = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 (user-given URL)
        ctype = self.resp.headers.get("Content-Type", "")
        self.snapshot = ctype.startswith("image/")
        self.boundary = None
        if not self.snapshot:
            if "multipart" not in ctype or "boundary=" not in ctype:
                self.resp.close()
                raise _NotMjpeg(ctype)
            self.boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
            if self.boundary.startswith(b"--"):
                self.boundary = self.boundary[2:]

    def _decode(self, data: bytes) -> np.ndarray | None:
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self) -> tuple[bool, np.ndarray | None]:
        import urllib.request

        if self.snapshot:
            if self.resp is None:
                self.resp = urllib.request.urlopen(self.url, timeout=self.timeout)  # noqa: S310
            data = self.resp.read()
            self.resp.close()
            self.resp = None
            img = self._decode(data)
            return (img is not None), img
        fp = self.resp
        # Skip to the next part's headers.
        headers: dict[str, str] = {}
        while True:
            line = fp.readline()
            if not line:
                return False, None
            line = line.strip()
            if not line:
                if headers:
                    break
                continue
            if line.startswith(b"--"):
                continue
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.decode().strip().lower()] = v.decode().strip()
        length = headers.get("content-length")
        if length is not None:
            data = fp.read(int(length))
            if len(data) < int(length):
                return False, None
        else:  # no length: read until the next boundary
            buf = bytearray()
            marker = b"--" + (self.boundary or b"")
            while True:
                line = fp.readline()
                if not line:
                    return False, None
                if line.startswith(marker):
                    break
                buf += line
            data = bytes(buf).rstrip(b"\r\n")
        img = self._decode(data)
        return (img is not None), img

    def release(self) -> None:
        if self.resp is not None:
            self.resp.close()


class _NotMjpeg(Exception):
    pass


def _open_url(url: str, timeout_s: float) -> _Reader:
    if url.startswith(("http://", "https://")):
        try:
            return _MjpegReader(url, timeout_s)
        except _NotMjpeg:
            pass  # a video over HTTP (HLS, mp4...): let FFmpeg handle it
    return _CvReader(url, timeout_s)


class _PiCameraReader:
    """picamera2 on a Raspberry Pi. Kept thin: it cannot be exercised off a Pi."""

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        from picamera2 import Picamera2  # type: ignore[import-not-found]

        self.cam = Picamera2()
        self.cam.configure(self.cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
        self.cam.start()

    def read(self) -> tuple[bool, np.ndarray | None]:
        arr = self.cam.capture_array()
        # picamera2's "RGB888" is BGR byte order in memory.
        return True, arr[..., ::-1].copy()

    def release(self) -> None:
        self.cam.stop()
        self.cam.close()


class LiveSource:
    """A capture thread that keeps only the newest frame, reopens a lost device with backoff,
    and never lets a read hang the consumer: no new frame within ``timeout_s`` is a stall."""

    live = True

    def __init__(self, opener: Callable[[], _Reader], label: str, kind: str, *, timeout_s: float = 5.0,
                 backoff: tuple[float, float] = (0.5, 8.0), max_reconnects: int | None = None) -> None:
        self.opener = opener
        self.label = label
        self.kind = kind
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.max_reconnects = max_reconnects
        self.stats = SourceStats()
        self.fps = None
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray, float] | None = None
        self._seq = 0
        self._consumed = 0
        self._events: list[SourceEvent] = []
        self._stop = threading.Event()
        self._gave_up: str | None = None
        try:
            reader = opener()
        except Exception as exc:
            raise DataError(f"cannot open {kind} {label} ({exc})", _open_hint(kind)) from None
        self._thread = threading.Thread(target=self._run, args=(reader,), name=f"capture-{label}", daemon=True)
        self._thread.start()

    def _emit(self, kind: str, message: str) -> None:
        with self._cond:
            self._events.append(SourceEvent(kind, message, self.label))
            self._cond.notify_all()

    def _run(self, reader: _Reader | None) -> None:
        delay = self.backoff[0]
        attempts = 0
        recovering = False
        while not self._stop.is_set():
            if reader is None:
                if self.max_reconnects is not None and attempts >= self.max_reconnects:
                    self._gave_up = f"gave up after {attempts} reconnection attempts"
                    self._emit("error", f"{self.label}: {self._gave_up}")
                    with self._cond:
                        self._cond.notify_all()
                    return
                attempts += 1
                if self._stop.wait(delay):
                    return
                try:
                    reader = self.opener()
                except Exception as exc:
                    delay = min(delay * 2, self.backoff[1])
                    self._emit("retry", f"{self.label}: reopen attempt {attempts} failed ({exc}); next in {delay:.1f}s")
                    continue
                recovering = True
            t0 = time.perf_counter()
            try:
                ok, img = reader.read()
            except Exception as exc:  # socket timeouts, decoder errors
                ok, img = False, None
                err = str(exc) or type(exc).__name__
            else:
                err = "end of stream"
            if not ok or img is None:
                reader.release()
                reader = None
                if recovering:  # reopened, but no frame came: back off as for a failed reopen
                    delay = min(delay * 2, self.backoff[1])
                self._emit("lost", f"{self.label}: lost ({err}); reconnecting in {delay:.1f}s")
                continue
            read_ms = (time.perf_counter() - t0) * 1000
            if recovering:  # only a delivered frame counts as recovered, not a mere reopen
                self.stats.reconnects += 1
                self._emit("reconnected", f"{self.label}: reconnected after {attempts} attempt(s)")
                delay, attempts, recovering = self.backoff[0], 0, False
            with self._cond:
                self._seq += 1
                if self._latest is not None and self._latest[0] > self._consumed:
                    self.stats.dropped += 1  # overwritten before inference took it
                self._latest = (self._seq, time.time(), img, read_ms)
                self._cond.notify_all()
        if reader is not None:
            reader.release()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        index = 0
        while not self._stop.is_set():
            with self._cond:
                deadline = time.monotonic() + self.timeout_s
                while (not self._events and (self._latest is None or self._latest[0] <= self._consumed)
                       and not self._stop.is_set() and self._gave_up is None):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                events, self._events = self._events, []
                fresh = self._latest if self._latest is not None and self._latest[0] > self._consumed else None
                if fresh is not None:
                    self._consumed = fresh[0]
            for ev in events:
                if ev.kind in ("lost", "error"):
                    self.stats.errors += 1
                yield ev
            if fresh is not None:
                seq, ts, img, read_ms = fresh
                self.stats.frames += 1
                yield Frame(index, f"{self.label}#{seq}", ts, image=img, read_ms=read_ms)
                index += 1
            elif not events:
                if self._gave_up is not None:
                    return
                yield SourceEvent("stalled", f"{self.label}: no frame for {self.timeout_s:.1f}s", self.label)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout_s + 1)


def _open_hint(kind: str) -> str:
    return {
        "camera": "check the device (ls /dev/video*, `mltool doctor`) and that no other program holds it",
        "stream": "check the URL in a browser or with ffprobe; the camera may be offline",
        "picamera": "install picamera2 (apt install python3-picamera2) and enable the camera",
    }.get(kind, "check the source")


# --------------------------------------------------------------------------- signals


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


def _signal_file(path: Path, window: int, hop: int, rate: float | None) -> SignalSource:
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


def _stdin_samples(stream: Any) -> Callable[[], Iterator[np.ndarray]]:
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


# --------------------------------------------------------------------------- factory


def open_source(
    spec: str,
    *,
    signal_window: int | None = None,
    hop: int | None = None,
    rate: float | None = None,
    timeout_s: float = 5.0,
    max_reconnects: int | None = None,
    stdin: Any = None,
) -> Source:
    """Open whatever ``spec`` names. ``signal_window`` is set for 1-D models."""
    window = signal_window
    hop = hop or window
    if spec == "-":
        if window is None:
            raise ConfigError("stdin ('-') carries signal samples, but this model takes images", "pass an image, video, camera or stream source")
        return SignalSource("stdin", _stdin_samples(stdin or sys.stdin), window, hop or window, rate)
    if spec == "picamera":
        return LiveSource(lambda: _PiCameraReader(), "picamera", "picamera", timeout_s=timeout_s, max_reconnects=max_reconnects)
    if spec.isdigit() or spec.startswith("/dev/video"):
        target: int | str = int(spec) if spec.isdigit() else spec
        return LiveSource(lambda: _CvReader(target, timeout_s), spec, "camera", timeout_s=timeout_s, max_reconnects=max_reconnects)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "rtsp", "rtmp", "udp", "tcp"):
            raise ConfigError(f"unknown stream scheme '{scheme}://' in {spec}", "use rtsp://, http:// or https://")
        return LiveSource(lambda: _open_url(spec, timeout_s), spec, "stream", timeout_s=timeout_s, max_reconnects=max_reconnects)
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(p) for p in globmod.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not matches:
            raise DataError(f"no files match {spec}", "check the pattern (quote it so the shell does not expand it)")
        return _files_source(matches, spec, window, hop, rate)
    if path.is_dir():
        exts = SIGNAL_EXTENSIONS if window is not None else _image_exts()
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)
        if not files:
            what = "signal files (.npy/.csv/.wav)" if window is not None else "images"
            raise DataError(f"{path} holds no {what}", f"put {what} in it or pass another --source")
        return _files_source(files, str(path), window, hop, rate)
    if not path.exists():
        raise DataError(f"source {spec} does not exist",
                        "pass an image, directory, glob, video, camera index, /dev/videoN, rtsp:// or http:// URL, picamera, signal file, or '-'")
    return _files_source([path], str(path), window, hop, rate)


def _files_source(files: list[Path], label: str, window: int | None, hop: int | None, rate: float | None) -> Source:
    suffixes = {p.suffix.lower() for p in files}
    if window is not None:
        bad = suffixes - SIGNAL_EXTENSIONS
        if bad:
            raise ConfigError(f"this model takes 1-D signals, but {label} has {', '.join(sorted(bad))} files",
                              "pass .npy/.csv/.wav signal files or '-' for samples on stdin")
        if len(files) == 1:
            return _signal_file(files[0], window, hop or window, rate)
        return _MultiSignal(files, label, window, hop or window, rate)
    if suffixes & SIGNAL_EXTENSIONS and not suffixes & _image_exts():
        raise ConfigError(f"{label} holds signal files, but this model takes images",
                          "pass images, a video, a camera or a stream; or use a 1-D signal model")
    if len(files) == 1 and files[0].suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFile(files[0])
    return ImageFiles(files, label)


class _MultiSignal:
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
                src = _signal_file(f, self.window, self.hop, self.rate)
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
