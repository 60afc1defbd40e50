"""Image files (one, a directory, a glob) and video files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mltool.errors import DataError
from mltool.runtime.sources.frames import Frame, SourceEvent, SourceStats

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg", ".mpg", ".mpeg", ".wmv", ".flv", ".h264"}


def image_exts() -> set[str]:
    from mltool.runtime.decode import image_extensions

    return image_extensions()


class ImageFiles:
    kind = "images"
    live = False
    fps = None

    def __init__(self, paths: list[Path], label: str, draft: tuple[int, int] | None = None) -> None:
        self.paths = paths
        self.label = label
        self.draft = draft  # (W, H) the model takes: big JPEGs are decoded reduced, as in training
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        from mltool.runtime.decode import decode_image

        for i, p in enumerate(self.paths):
            t0 = time.perf_counter()
            try:
                img = decode_image(p, self.draft)
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

    def __init__(self, path: Path, *, realtime: bool = False, loop: bool = False) -> None:
        """``realtime``: frames come at the video's own rate, as a camera's would (serve's live
        view), not as fast as they decode; ``loop``: start over at the end, for ever."""
        import cv2

        self.path = path
        self.realtime = realtime
        self.loop = loop
        self.loops = 0
        self.label = str(path)
        self.stats = SourceStats()
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise DataError(f"cannot open video {path}", "check that it is a video file OpenCV/FFmpeg can decode")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or None
        # close() may come from another thread (serve's shutdown) while a read is under way:
        # releasing an OpenCV capture mid-read deadlocks, so the two take turns
        self._lock = threading.Lock()
        self._closed = False

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        import cv2

        i = 0
        period = 1.0 / self.fps if self.realtime and self.fps else 0.0
        due = time.monotonic()
        while True:
            if period:
                due += period
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                else:
                    due = time.monotonic()  # behind (a slow model): no burst to catch up
            t0 = time.perf_counter()
            with self._lock:
                if self._closed:
                    return
                ok, bgr = self.cap.read()
                if not ok and self.loop and i > 0:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    self.loops += 1
                    ok, bgr = self.cap.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.stats.frames += 1
            yield Frame(i, f"{self.path.name}#{i}", time.time(), image=rgb, read_ms=(time.perf_counter() - t0) * 1000)
            i += 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.cap.release()

