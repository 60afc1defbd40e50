"""``open_source(spec)``: whatever a user names on the command line, as a :class:`Source`.

I2C ADCs are named ``i2c:BUS:ADDR[?key=value,...]`` (``&`` works as a separator too, but a
comma needs no shell quoting): ``chip`` (pcf8591, the default, or ads1115), ``channel`` (0-3),
``rate`` (Hz; default the model's), ``gain`` (ads1115: 2/3, 1, 2, 4, 8, 16), ``dr`` (ads1115
data rate), ``scale`` and ``offset`` (value = counts * scale + offset), ``tolerance`` (share of
late + missed samples before a window is flagged, default 0.01), ``rt`` (0: do not ask for
real-time scheduling of the sampling thread).
"""

from __future__ import annotations

import glob as globmod
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltool.errors import ConfigError, DataError, did_you_mean
from mltool.runtime.sources.camera import CameraOptions
from mltool.runtime.sources.files import VIDEO_EXTENSIONS, ImageFiles, VideoFile, image_exts
from mltool.runtime.sources.frames import Source
from mltool.runtime.sources.live import CvReader, LiveSource, open_url
from mltool.runtime.sources.signals import (
    SIGNAL_EXTENSIONS,
    MultiSignal,
    SensorSource,
    SignalSource,
    signal_file,
    stdin_samples,
)

if TYPE_CHECKING:
    from mltool.runtime.sources.i2c import I2CSpec

I2C_USAGE = "i2c:BUS:ADDR[?chip=pcf8591|ads1115,channel=N,rate=HZ,gain=G,dr=SPS,scale=X,offset=Y,tolerance=F,rt=0|1]"
I2C_KEYS = ("chip", "channel", "rate", "gain", "dr", "scale", "offset", "tolerance", "rt")


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
    camera: CameraOptions | None = None,
    realtime: bool = False,
    loop: bool = False,
) -> Source:
    """Open whatever ``spec`` names for a model that takes ``kind`` ("image" or "signal";
    default: "signal" when ``signal_window`` is given). Signal models read windows of
    ``signal_window`` samples (None: each file whole, for models with a dynamic length) of
    ``channels`` channels every ``hop`` samples. Image files much larger than ``draft`` (W, H)
    are decoded reduced (JPEG), exactly as training read them. ``camera`` (size, rate, transform)
    applies to cameras: ``camera`` (the device's camera), ``picamera[:N]``, ``N``, ``/dev/videoN``.
    A video file plays at its own frame rate with ``realtime`` (a live view), for ever with ``loop``."""
    window = signal_window
    signal = kind == "signal" or (kind is None and window is not None)
    if hop is not None and hop < 1:
        raise ConfigError(f"--hop {hop} must be at least 1", "use the number of samples between windows, e.g. --hop 1800")
    if timeout_s <= 0:
        raise ConfigError(f"--stall-timeout {timeout_s:g} must be positive", "use seconds, e.g. --stall-timeout 5")
    if max_reconnects is not None and max_reconnects < 0:
        raise ConfigError(f"--max-reconnects {max_reconnects} cannot be negative", "use 0 to never reconnect, or omit it")
    if spec == "-":
        if not signal:
            raise ConfigError("stdin ('-') carries signal samples, but this model takes images", "pass an image, video, camera or stream source")
        if window is None:
            raise ConfigError("this model's input length is dynamic, so a stream of samples on stdin has no window size",
                              "pass --window N (samples per window)")
        return SignalSource("stdin", stdin_samples(stdin or sys.stdin, channels), window, hop, rate, channels)
    if loop and (spec == "-" or spec.startswith("i2c:") or is_camera(spec) or "://" in spec):
        raise ConfigError(f"--loop plays a video file again and again; {spec} is live already", "drop --loop")
    if spec.startswith("i2c:"):
        return _i2c_source(spec, signal, window, channels, hop, rate, timeout_s, max_reconnects)
    if is_camera(spec):
        return _camera_source(spec, camera, signal, timeout_s, max_reconnects)
    if camera is not None:
        raise ConfigError(f"--camera-size, --camera-fps and --camera-transform apply to cameras, not to {spec}",
                          "drop them, or use --camera")
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
        return _files_source(matches, spec, signal, window, hop, rate, channels, draft, realtime, loop)
    if path.is_dir():
        exts = SIGNAL_EXTENSIONS if signal else image_exts()
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)
        if not files:
            what = "signal files (.npy/.csv/.wav)" if signal else "images"
            raise DataError(f"{path} holds no {what}", f"put {what} in it or pass another --source")
        return _files_source(files, str(path), signal, window, hop, rate, channels, draft, realtime, loop)
    if not path.exists():
        raise DataError(f"source {spec} does not exist",
                        "pass an image, directory, glob, video, camera, camera index, /dev/videoN, rtsp:// or http:// URL, picamera[:N], "
                        "signal file, i2c:BUS:ADDR, or '-'")
    return _files_source([path], str(path), signal, window, hop, rate, channels, draft, realtime, loop)


def is_camera(spec: str) -> bool:
    return spec in ("camera", "picamera") or spec.startswith("picamera:") or spec.isdigit() or spec.startswith("/dev/video")


def _camera_source(spec: str, options: CameraOptions | None, signal: bool, timeout_s: float,
                   max_reconnects: int | None) -> Source:
    from mltool.runtime.sources.camera import PiCameraReader, choose_camera

    if signal:
        raise ConfigError(f"this model takes 1-D signals, but {spec} is a camera", "pass signal files, '-' or i2c:BUS:ADDR")
    choice = choose_camera(spec)
    if choice.backend == "libcamera":
        num = int(choice.spec.partition(":")[2] or 0)
        source = LiveSource(lambda: PiCameraReader(num, options), choice.spec, "picamera", timeout_s=timeout_s,
                            max_reconnects=max_reconnects)
    else:
        target: int | str = int(choice.spec) if choice.spec.isdigit() else choice.spec
        source = LiveSource(lambda: CvReader(target, timeout_s, options), choice.spec, "camera", timeout_s=timeout_s,
                            max_reconnects=max_reconnects)
    source.camera = {**choice.as_dict(), **(options or CameraOptions()).as_dict()}
    return source


def _files_source(files: list[Path], label: str, signal: bool, window: int | None, hop: int | None, rate: float | None,
                  channels: int, draft: tuple[int, int] | None = None, realtime: bool = False, loop: bool = False) -> Source:
    suffixes = {p.suffix.lower() for p in files}
    if signal and loop:
        raise ConfigError(f"--loop plays a video file again and again; {label} holds signals", "drop --loop")
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
        return VideoFile(files[0], realtime=realtime, loop=loop)
    if loop:
        raise ConfigError(f"--loop plays a video file again and again; {label} is not one", "drop --loop")
    return ImageFiles(files, label, draft)



def _i2c_source(spec: str, signal: bool, window: int | None, channels: int, hop: int | None, rate: float | None,
                timeout_s: float, max_reconnects: int | None) -> Source:
    from mltool.runtime.sources.i2c import i2c_stream

    i2c = parse_i2c(spec)
    if not signal:
        raise ConfigError(f"{i2c.label} gives signal samples, but this model takes images",
                          "use a 1-D signal model (e.g. one from `mltool train ecg`)")
    if window is None:
        raise ConfigError(f"this model's input length is dynamic, so the samples from {i2c.label} have no window size",
                          "pass --window N (samples per window)")
    if channels != 1:
        raise ConfigError(f"{i2c.label} reads one ADC channel, but this model takes {channels} channels per sample",
                          "use a single-channel signal model")
    if i2c.rate is not None and rate is not None and abs(i2c.rate - rate) > 1e-9:
        raise ConfigError(f"rate={i2c.rate:g} differs from the model's {rate:g} Hz: every window would be sampled at the wrong rate",
                          "drop rate= (the model's rate is the default)")
    i2c.rate = i2c.rate if i2c.rate is not None else rate
    stream = i2c_stream(i2c, timeout_s=timeout_s, max_retries=max_reconnects)
    return SensorSource(stream, window, hop or window, i2c.tolerance)


def parse_i2c(spec: str) -> I2CSpec:
    """``i2c:1:0x48?chip=ads1115,channel=1,gain=2`` as an :class:`I2CSpec`; usage errors (exit 2)
    name the bad part and show the syntax."""
    from mltool.runtime.sources.i2c import ADS1115_GAINS, ADS1115_RATES, CHIPS, I2CSpec

    def bad(what: str, fix: str = f"use {I2C_USAGE}, e.g. i2c:1:0x48?chip=pcf8591,channel=0") -> ConfigError:
        return ConfigError(f"{what} in I2C source '{spec}'", fix)

    body, _, query = spec[len("i2c:"):].partition("?")
    parts = body.split(":")
    if len(parts) != 2 or not all(parts):
        raise bad("expected BUS:ADDR after 'i2c:'")
    try:
        bus = int(parts[0])
    except ValueError:
        bus = -1
    if bus < 0:
        raise bad(f"bus '{parts[0]}' is not a bus number", "use N of /dev/i2c-N (1 on a Raspberry Pi)")
    try:
        address = int(parts[1], 0)
    except ValueError:
        address = -1
    if not 0x03 <= address <= 0x77:
        raise bad(f"address '{parts[1]}' is not a 7-bit I2C address", "use the address i2cdetect shows, e.g. 0x48")
    opts: dict[str, str] = {}
    for item in (x for x in query.replace("&", ",").split(",") if x):
        key, eq, value = item.partition("=")
        if key not in I2C_KEYS:
            raise bad(f"unknown option '{key}'", did_you_mean(key, I2C_KEYS))
        if not eq or not value:
            raise bad(f"option '{key}' has no value", f"write {key}=VALUE")
        if key in opts:
            raise bad(f"option '{key}' is given twice ({key}={opts[key]} and {key}={value})", f"keep one {key}=")
        opts[key] = value
    out = I2CSpec(bus=bus, address=address)
    chip = opts.get("chip", out.chip).lower()
    if chip not in CHIPS:
        raise bad(f"unknown chip '{chip}'", did_you_mean(chip, CHIPS))
    out.chip = chip
    for key in ("gain", "dr"):
        if key in opts and chip != "ads1115":
            raise bad(f"{key}= applies to chip=ads1115", f"drop {key}= or add chip=ads1115")

    def number(key: str, lo: float, hi: float, cast: Any = float) -> Any:
        hint = f"use a {'whole ' if cast is int else ''}number from {lo:g} to {hi:g}"
        try:
            v = cast(opts[key])
        except ValueError:
            raise bad(f"{key}={opts[key]} is not a {'whole ' if cast is int else ''}number", hint) from None
        if not lo <= v <= hi:
            raise bad(f"{key}={opts[key]} is out of range", hint)
        return v

    if "channel" in opts:
        out.channel = number("channel", 0, 3, int)
    if "rate" in opts:
        out.rate = number("rate", 1, 10_000)  # I2C ADCs: PCF8591 ~11 kHz at 100 kHz bus, ADS1115 860 SPS
    if "gain" in opts:
        if opts["gain"] not in ADS1115_GAINS:
            raise bad(f"gain={opts['gain']} is not an ADS1115 gain",
                      "use " + ", ".join(f"{g} (+/-{v:g} V)" for g, v in ADS1115_GAINS.items()))
        out.gain = opts["gain"]
    if "dr" in opts:
        out.data_rate = number("dr", 8, 860, int)
        if out.data_rate not in ADS1115_RATES:
            raise bad(f"dr={out.data_rate} is not an ADS1115 data rate", f"use one of {', '.join(map(str, ADS1115_RATES))}")
    for key in ("scale", "offset"):
        if key in opts:
            setattr(out, key, number(key, -1e12, 1e12))
    if "tolerance" in opts:
        out.tolerance = number("tolerance", 0, 1)
    if "rt" in opts:
        out.realtime = bool(number("rt", 0, 1, int))
    return out
