"""``open_source(spec)``: whatever a user names on the command line, as a :class:`Source`."""

from __future__ import annotations

import glob as globmod
import os
import sys
from pathlib import Path
from typing import Any

from mltool.errors import ConfigError, DataError
from mltool.runtime.sources.files import VIDEO_EXTENSIONS, ImageFiles, VideoFile, image_exts
from mltool.runtime.sources.frames import Source
from mltool.runtime.sources.live import CvReader, LiveSource, PiCameraReader, open_url
from mltool.runtime.sources.signals import (
    SIGNAL_EXTENSIONS,
    MultiSignal,
    SignalSource,
    signal_file,
    stdin_samples,
)


def open_source(
    spec: str,
    *,
    kind: str | None = None,
    signal_window: int | None = None,
    channels: int = 1,
    hop: int | None = None,
    rate: float | None = None,
    timeout_s: float = 5.0,
    max_reconnects: int | None = None,
    stdin: Any = None,
    draft: tuple[int, int] | None = None,
) -> Source:
    """Open whatever ``spec`` names for a model that takes ``kind`` ("image" or "signal";
    default: "signal" when ``signal_window`` is given). Signal models read windows of
    ``signal_window`` samples (None: each file whole, for models with a dynamic length) of
    ``channels`` channels every ``hop`` samples. Image files much larger than ``draft`` (W, H)
    are decoded reduced (JPEG), exactly as training read them."""
    window = signal_window
    signal = kind == "signal" or (kind is None and window is not None)
    if hop is not None and hop < 1:
        raise ConfigError(f"--hop {hop} must be at least 1", "use the number of samples between windows, e.g. --hop 1800")
    if timeout_s <= 0:
        raise ConfigError(f"--timeout {timeout_s:g} must be positive", "use seconds, e.g. --timeout 5")
    if max_reconnects is not None and max_reconnects < 0:
        raise ConfigError(f"--max-reconnects {max_reconnects} cannot be negative", "use 0 to never reconnect, or omit it")
    if spec == "-":
        if not signal:
            raise ConfigError("stdin ('-') carries signal samples, but this model takes images", "pass an image, video, camera or stream source")
        if window is None:
            raise ConfigError("this model's input length is dynamic, so a stream of samples on stdin has no window size",
                              "pass --window N (samples per window)")
        return SignalSource("stdin", stdin_samples(stdin or sys.stdin, channels), window, hop, rate, channels)
    if spec == "picamera":
        return LiveSource(lambda: PiCameraReader(), "picamera", "picamera", timeout_s=timeout_s, max_reconnects=max_reconnects)
    if spec.isdigit() or spec.startswith("/dev/video"):
        target: int | str = int(spec) if spec.isdigit() else spec
        return LiveSource(lambda: CvReader(target, timeout_s), spec, "camera", timeout_s=timeout_s, max_reconnects=max_reconnects)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "rtsp", "rtmp", "udp", "tcp"):
            raise ConfigError(f"unknown stream scheme '{scheme}://' in {spec}", "use rtsp://, http:// or https://")
        return LiveSource(lambda: open_url(spec, timeout_s), spec, "stream", timeout_s=timeout_s, max_reconnects=max_reconnects)
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?[") and not path.exists():  # an existing path always wins over a pattern
        matches = sorted(Path(p) for p in globmod.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not matches:
            raise DataError(f"no files match {spec}", "check the pattern (quote it so the shell does not expand it)")
        return _files_source(matches, spec, signal, window, hop, rate, channels, draft)
    if path.is_dir():
        exts = SIGNAL_EXTENSIONS if signal else image_exts()
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)
        if not files:
            what = "signal files (.npy/.csv/.wav)" if signal else "images"
            raise DataError(f"{path} holds no {what}", f"put {what} in it or pass another --source")
        return _files_source(files, str(path), signal, window, hop, rate, channels, draft)
    if not path.exists():
        raise DataError(f"source {spec} does not exist",
                        "pass an image, directory, glob, video, camera index, /dev/videoN, rtsp:// or http:// URL, picamera, signal file, or '-'")
    return _files_source([path], str(path), signal, window, hop, rate, channels, draft)


def _files_source(files: list[Path], label: str, signal: bool, window: int | None, hop: int | None, rate: float | None,
                  channels: int, draft: tuple[int, int] | None = None) -> Source:
    suffixes = {p.suffix.lower() for p in files}
    if signal:
        bad = suffixes - SIGNAL_EXTENSIONS
        if bad:
            raise ConfigError(f"this model takes 1-D signals, but {label} has {', '.join(sorted(bad))} files",
                              "pass .npy/.csv/.wav signal files or '-' for samples on stdin")
        if len(files) == 1:
            return signal_file(files[0], window, hop, rate, channels)
        return MultiSignal(files, label, window, hop, rate, channels)
    if suffixes & SIGNAL_EXTENSIONS and not suffixes & image_exts():
        raise ConfigError(f"{label} holds signal files, but this model takes images",
                          "pass images, a video, a camera or a stream; or use a 1-D signal model")
    if len(files) == 1 and files[0].suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFile(files[0])
    return ImageFiles(files, label, draft)

