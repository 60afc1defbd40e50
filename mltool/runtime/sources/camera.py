"""Which camera ``--camera`` means, the camera options, and picamera2's frames as RGB.

``--camera`` (or ``--source camera``) means *the device's camera*: a libcamera camera
(a Raspberry Pi camera module, seen through picamera2) when one is attached, else the first
V4L2 capture device (a USB webcam). ``--camera N`` and ``/dev/videoN`` pick a V4L2 device,
``picamera[:N]`` a libcamera camera. On a Pi the camera module's own ``/dev/video*`` nodes
(unicam, the ISP, codecs) give OpenCV no usable frames, so they are never chosen as webcams.

picamera2's format names are those of DRM, whose byte order is the reverse of the name
(picamera2 manual, "Image formats"): ``RGB888`` is ``[B, G, R]`` in memory, ``BGR888`` is
``[R, G, B]``, ``XBGR8888`` (picamera2's default) is ``[R, G, B, 255]``, ``XRGB8888`` is
``[B, G, R, 255]``. :func:`picamera_rgb` turns each into RGB.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError, DataError

TRANSFORMS = ("none", "hflip", "vflip", "rot180")
DEFAULT_SIZE = (640, 480)
# V4L2 nodes a Pi's SoC registers for the camera module pipeline and codecs: not webcams
SOC_NODES = re.compile(r"unicam|bcm2835|rpi-|rp1-cfe|pispbe|pisp|hevc|codec|isp|h264|jpeg", re.I)
V4L2_SYSFS = "/sys/class/video4linux"
APT_PICAMERA2 = "sudo apt install -y python3-picamera2"


@dataclass(frozen=True)
class CameraOptions:
    """What users ask of a camera: size (W, H), frames per second, and a transform for a module
    mounted upside down or mirrored. None: the camera's own default."""

    size: tuple[int, int] | None = None
    fps: float | None = None
    transform: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None and not all(16 <= v <= 8192 for v in self.size):
            raise ConfigError(f"--camera-size {self.size[0]}x{self.size[1]} is out of range", "use e.g. --camera-size 640x480")
        if self.fps is not None and not (self.fps == self.fps and 0.1 <= self.fps <= 240):
            raise ConfigError(f"--camera-fps {self.fps:g} is out of range", "use 0.1 to 240 frames per second, e.g. --camera-fps 15")
        if self.transform is not None and self.transform not in TRANSFORMS:
            from mltool.errors import did_you_mean

            raise ConfigError(f"--camera-transform '{self.transform}' is not a transform", did_you_mean(self.transform, TRANSFORMS))

    @property
    def given(self) -> bool:
        return self.size is not None or self.fps is not None or self.transform not in (None, "none")

    def as_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "fps": self.fps, "transform": self.transform or "none"}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``640x480`` as (640, 480)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d{1,5})\s*[xX*,]\s*(\d{1,5})\s*", text)
    if m is None:
        raise ConfigError(f"--camera-size '{text}' is not WIDTHxHEIGHT", "use e.g. --camera-size 640x480")
    return int(m.group(1)), int(m.group(2))


def camera_options(size: str | None = None, fps: float | None = None, transform: str | None = None) -> CameraOptions | None:
    """The CLI's ``--camera-size``, ``--camera-fps``, ``--camera-transform`` (None if none given)."""
    opts = CameraOptions(parse_size(size), fps, transform.lower() if transform else None)
    return opts if opts.given else None


# --------------------------------------------------------------------------- what is attached


def libcamera_cameras() -> tuple[list[dict[str, Any]] | None, str | None]:
    """(cameras, None) as picamera2 lists them, or (None, why) when picamera2 cannot be imported."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or picamera2 built against another NumPy
        return None, f"{type(exc).__name__}: {exc}"[:200]
    try:
        infos = Picamera2.global_camera_info()
    except Exception as exc:
        return None, f"picamera2 could not list cameras ({exc})"[:200]
    return [{"num": int(i.get("Num", n)), "model": str(i.get("Model", "?")), "id": str(i.get("Id", "")),
             "location": i.get("Location"), "rotation": i.get("Rotation")} for n, i in enumerate(infos)], None


def v4l2_devices(root: str | os.PathLike[str] = V4L2_SYSFS) -> list[dict[str, Any]]:
    """Every /dev/videoN with its name, whether it is a capture node a webcam would be (its first
    node, not one of a Pi's SoC nodes), and its bus (usb, platform)."""
    out = []
    base = Path(root)
    nodes = sorted(base.glob("video*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)) if base.is_dir() else []
    for node in nodes:
        name = _read(node / "name") or "?"
        index = _read(node / "index")
        try:
            target = os.path.realpath(node / "device")
        except OSError:
            target = ""
        bus = "usb" if "/usb" in target else "platform" if "/platform" in target or "soc" in target else "other"
        webcam = (index in (None, "0")) and not SOC_NODES.search(name)
        out.append({"device": f"/dev/{node.name}", "name": name, "bus": bus, "webcam": webcam})
    if not nodes:  # no sysfs (a container): the device nodes alone
        for dev in sorted(Path("/dev").glob("video*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
            out.append({"device": str(dev), "name": "?", "bus": "other", "webcam": True})
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@dataclass
class CameraChoice:
    """The camera a source spec resolved to, and why."""

    spec: str  # picamera:N | /dev/videoN | N
    backend: str  # libcamera | v4l2
    name: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"camera": self.spec, "backend": self.backend, "name": self.name, "reason": self.reason}


def choose_camera(spec: str, *, sysfs: str | os.PathLike[str] = V4L2_SYSFS) -> CameraChoice:
    """What ``spec`` (camera | picamera[:N] | N | /dev/videoN) means on this machine."""
    if spec.startswith("picamera"):
        num = _picamera_num(spec)
        cams, why = libcamera_cameras()
        if cams is None:
            raise DataError(f"{spec}: picamera2 cannot be imported in this Python ({why})", picamera2_hint())
        match = next((c for c in cams if c["num"] == num), None)
        if match is None:
            have = ", ".join(f"picamera:{c['num']} ({c['model']})" for c in cams) or "none"
            raise DataError(f"{spec}: no libcamera camera {num} (attached: {have})",
                            "check the ribbon cable and `rpicam-hello --list-cameras`" if not cams else "pick one of those")
        return CameraChoice(f"picamera:{num}", "libcamera", match["model"], f"asked for {spec}")
    if spec.isdigit() or spec.startswith("/dev/video"):
        dev = f"/dev/video{spec}" if spec.isdigit() else spec
        info = next((d for d in v4l2_devices(sysfs) if d["device"] == dev), None)
        return CameraChoice(spec, "v4l2", info["name"] if info else "?", f"asked for {spec}")
    # "camera": the device's camera
    cams, why = libcamera_cameras()
    if cams:
        c = cams[0]
        more = f" (of {len(cams)})" if len(cams) > 1 else ""
        return CameraChoice(f"picamera:{c['num']}", "libcamera", c["model"],
                            f"libcamera camera {c['num']}{more} attached ({c['model']}), seen through picamera2")
    devices = v4l2_devices(sysfs)
    webcams = [d for d in devices if d["webcam"]]
    no_libcamera = "no libcamera camera attached" if cams is not None else "picamera2 not importable"
    if webcams:
        d = webcams[0]
        skipped = len(devices) - len(webcams)
        return CameraChoice(d["device"], "v4l2", d["name"],
                            f"{no_libcamera}; first V4L2 capture device {d['device']} ({d['name']}, {d['bus']})"
                            + (f"; {skipped} other node(s) are not cameras" if skipped else ""))
    soc = [d for d in devices if SOC_NODES.search(d["name"])]
    if cams is None and soc:  # a Pi's camera pipeline is there, but this Python cannot reach it
        raise DataError(f"no usable camera: {', '.join(d['device'] for d in soc)} belong to a Pi camera module, which needs "
                        f"picamera2, and picamera2 cannot be imported here ({why})", picamera2_hint())
    raise DataError(f"no camera found: {no_libcamera} and no V4L2 capture device"
                    + (f" ({len(devices)} /dev/video nodes, none a camera)" if devices else ""),
                    "connect a camera and check `mltool doctor`; a camera module needs picamera2 "
                    f"({APT_PICAMERA2}); or pass --source with a file or stream")


def _picamera_num(spec: str) -> int:
    _, _, num = spec.partition(":")
    if spec not in ("picamera",) and not (spec.startswith("picamera:") and num.isdigit()):
        raise ConfigError(f"camera '{spec}' is not picamera or picamera:N", "use e.g. picamera:0")
    return int(num) if num else 0


def picamera2_hint() -> str:
    import sys

    venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    see = ""
    if venv and not _venv_sees_system():
        see = ("; this venv does not see the system's packages: re-run `mltool deploy HOST --setup` "
               "(or recreate it with python3 -m venv --system-site-packages)")
    return f"on Raspberry Pi OS: {APT_PICAMERA2}{see}; then `mltool doctor` lists the cameras"


def _venv_sees_system() -> bool:
    import sys

    cfg = Path(sys.prefix) / "pyvenv.cfg"
    text = _read(cfg) or ""
    return bool(re.search(r"include-system-site-packages\s*=\s*true", text, re.I))


# --------------------------------------------------------------------------- picamera2 frames


def picamera_rgb(arr: np.ndarray, fmt: str) -> np.ndarray:
    """An RGB (H, W, 3) uint8 copy of a picamera2 ``capture_array()`` in format ``fmt``."""
    fmt = fmt.upper()
    if fmt == "RGB888":  # [B, G, R]
        return np.ascontiguousarray(arr[..., 2::-1])
    if fmt == "BGR888":  # [R, G, B]
        return np.ascontiguousarray(arr[..., :3])
    if fmt in ("XBGR8888", "ABGR8888"):  # [R, G, B, X]
        return np.ascontiguousarray(arr[..., :3])
    if fmt in ("XRGB8888", "ARGB8888"):  # [B, G, R, X]
        return np.ascontiguousarray(arr[..., 2::-1])
    if fmt in ("YUV420", "YVU420"):
        import cv2

        code = cv2.COLOR_YUV2RGB_I420 if fmt == "YUV420" else cv2.COLOR_YUV2RGB_YV12
        return cv2.cvtColor(np.ascontiguousarray(arr), code)
    raise DataError(f"picamera2 gave frames in format {fmt}, which mltool does not read",
                    "use RGB888, BGR888, XBGR8888, XRGB8888 or YUV420")


def flip(img: np.ndarray, transform: str | None) -> np.ndarray:
    """``transform`` applied in software (V4L2 cameras; libcamera does it in the ISP)."""
    if transform in (None, "none"):
        return img
    import cv2

    return cv2.flip(img, {"hflip": 1, "vflip": 0, "rot180": -1}[transform])


class PiCameraReader:
    """A libcamera camera through picamera2: configured for video at the asked size and rate,
    with the transform done by the ISP, frames handed over as RGB whatever the format."""

    def __init__(self, num: int = 0, options: CameraOptions | None = None, fmt: str = "RGB888") -> None:
        from picamera2 import Picamera2  # type: ignore[import-not-found]

        opts = options or CameraOptions()
        self.cam = Picamera2(num)
        try:
            kwargs: dict[str, Any] = {}
            if opts.transform not in (None, "none"):
                from libcamera import Transform  # type: ignore[import-not-found]

                kwargs["transform"] = Transform(hflip=int(opts.transform in ("hflip", "rot180")),
                                                vflip=int(opts.transform in ("vflip", "rot180")))
            if opts.fps is not None:
                frame_us = int(round(1e6 / opts.fps))
                kwargs["controls"] = {"FrameDurationLimits": (frame_us, frame_us)}
            config = self.cam.create_video_configuration(main={"size": tuple(opts.size or DEFAULT_SIZE), "format": fmt}, **kwargs)
            self.cam.configure(config)
            self.format = str(config["main"].get("format", fmt))
            self.size = tuple(config["main"].get("size", opts.size or DEFAULT_SIZE))
            self.cam.start()
        except BaseException:
            self.cam.close()
            raise

    def read(self) -> tuple[bool, np.ndarray | None]:
        return True, picamera_rgb(self.cam.capture_array("main"), self.format)

    def release(self) -> None:
        try:
            self.cam.stop()
        finally:
            self.cam.close()
