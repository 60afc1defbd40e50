"""Live capture (cameras, HTTP/RTSP streams, picamera2): a thread that keeps only the newest
frame, reopens a lost device with backoff, and never lets a read hang the consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from mltool.errors import DataError
from mltool.runtime.sources.camera import CameraOptions, flip, picamera2_hint
from mltool.runtime.sources.frames import Frame, SourceEvent, SourceStats


class _Reader(Protocol):
    def read(self) -> tuple[bool, np.ndarray | None]: ...  # RGB frame

    def release(self) -> None: ...


class CvReader:
    """OpenCV capture (camera index, /dev/videoN, rtsp, non-MJPEG http) with FFmpeg timeouts;
    a camera's size and rate asked of the driver, its transform done here."""

    def __init__(self, target: int | str, timeout_s: float, options: CameraOptions | None = None) -> None:
        import cv2

        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        self.cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not self.cap.isOpened():
            self.cap.release()
            raise OSError(f"OpenCV could not open {target}")
        self.transform = options.transform if options else None
        if options is not None and options.size is not None:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, options.size[0])
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, options.size[1])
        if options is not None and options.fps is not None:
            self.cap.set(cv2.CAP_PROP_FPS, options.fps)

    def read(self) -> tuple[bool, np.ndarray | None]:
        import cv2

        ok, bgr = self.cap.read()
        return (True, flip(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.transform)) if ok else (False, None)

    def release(self) -> None:
        self.cap.release()


MAX_LINE = 8 << 10  # bytes in one multipart header line
MAX_HEADERS = 64  # header lines in one part
MAX_PART = 16 << 20  # bytes in one JPEG part (or snapshot)


class StreamViolation(Exception):
    """The peer broke the stream's rules (a size cap or the frame deadline): the stream is lost."""


class _Buffered:
    """Bounded reads from an HTTP response: every wait is capped by the socket timeout, every
    frame by a deadline, every line and part by a size. ``read1`` returns what one recv gave, so
    a peer trickling bytes cannot hold a read open past the deadline."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.buf = bytearray()

    def _fill(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise StreamViolation("no complete frame before the deadline (the peer is too slow or sends garbage)")
        chunk = self.resp.read1(1 << 16)
        if not chunk:
            raise EOFError("end of stream")
        self.buf += chunk

    def readline(self, deadline: float) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise StreamViolation(f"a header line longer than {MAX_LINE} bytes")
            self._fill(deadline)

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker: bytes, deadline: float) -> bytes:
        start = 0
        while True:
            i = self.buf.find(marker, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > MAX_PART:
                raise StreamViolation(f"an image part longer than {MAX_PART >> 20} MiB without a boundary")
            start = max(0, len(self.buf) - len(marker))
            self._fill(deadline)

    def read_all(self, deadline: float) -> bytes:
        try:
            while True:
                if len(self.buf) > MAX_PART:
                    raise StreamViolation(f"a snapshot larger than {MAX_PART >> 20} MiB")
                self._fill(deadline)
        except EOFError:
            return bytes(self.buf)


class _MjpegReader:
    """multipart/x-mixed-replace JPEG over HTTP (what most IP and ESP32 cameras serve), or a
    single-JPEG snapshot URL polled once per read. Every read is bounded: the socket timeout for
    each wait, ``timeout_s`` for a whole frame, and size caps for lines and parts; a peer that
    breaks them raises :class:`StreamViolation` and the capture thread reconnects."""

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
        self.stream = _Buffered(self.resp)

    def _decode(self, data: bytes) -> np.ndarray | None:
        import io

        import cv2
        from PIL import Image

        try:  # the header says how big the picture is: refuse a decompression bomb before decoding it
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
        except Exception:
            return None
        from mltool.runtime.decode import MAX_PIXELS

        if w * h > MAX_PIXELS:
            raise StreamViolation(f"a {w}x{h} frame, more than mltool decodes")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self) -> tuple[bool, np.ndarray | None]:
        import urllib.request

        deadline = time.monotonic() + self.timeout
        if self.snapshot:
            if self.resp is None:
                self.resp = urllib.request.urlopen(self.url, timeout=self.timeout)  # noqa: S310
                self.stream = _Buffered(self.resp)
            data = self.stream.read_all(deadline)
            self.resp.close()
            self.resp = None
            img = self._decode(data)
            return (img is not None), img
        headers: dict[str, str] = {}
        lines = 0
        while True:  # skip to the next part's headers
            line = self.stream.readline(deadline).strip()
            lines += 1
            if lines > MAX_HEADERS:
                raise StreamViolation(f"more than {MAX_HEADERS} header lines in one part")
            if not line:
                if headers:
                    break
                continue
            if line.startswith(b"--"):
                continue
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.decode(errors="replace").strip().lower()] = v.decode(errors="replace").strip()
        length = headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise StreamViolation(f"Content-Length {length[:20]!r} is not a number") from None
            if not 0 < n <= MAX_PART:
                raise StreamViolation(f"Content-Length {n} is outside 1..{MAX_PART}")
            data = self.stream.read_exact(n, deadline)
        else:  # no length: read until the next boundary
            data = self.stream.read_until(b"--" + (self.boundary or b""), deadline).rstrip(b"\r\n")
        img = self._decode(data)
        return (img is not None), img

    def release(self) -> None:
        if self.resp is not None:
            self.resp.close()


class _NotMjpeg(Exception):
    pass


def open_url(url: str, timeout_s: float) -> _Reader:
    if url.startswith(("http://", "https://")):
        try:
            return _MjpegReader(url, timeout_s)
        except _NotMjpeg:
            pass  # a video over HTTP (HLS, mp4...): let FFmpeg handle it
    return CvReader(url, timeout_s)


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
        self.camera: dict[str, Any] | None = None  # which camera and backend, and why (cameras only)
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
        "picamera": f"check the ribbon cable and that no other program holds the camera; {picamera2_hint()}",
    }.get(kind, "check the source")

