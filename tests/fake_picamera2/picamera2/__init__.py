"""Stand-in for picamera2 on a Pi with a camera module (see ../README.md): documented API only,
documented byte orders, a real photo as every frame."""

from __future__ import annotations

import json
import os
import time

import numpy as np

__version__ = "0.3.99+fake"

_DEFAULT_CAMERAS = [{"Model": "imx708", "Location": 2, "Rotation": 180,
                     "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "Num": 0}]
# DRM names: the byte order in memory is the reverse of the name
_ORDER = {"RGB888": (2, 1, 0), "BGR888": (0, 1, 2), "XBGR8888": (0, 1, 2, None), "XRGB8888": (2, 1, 0, None)}


def _cameras() -> list[dict]:
    text = os.environ.get("FAKE_PICAMERA2_CAMERAS")
    return json.loads(text) if text else [dict(c) for c in _DEFAULT_CAMERAS]


def _photo() -> np.ndarray:
    path = os.environ.get("FAKE_PICAMERA2_IMAGE")
    if not path:
        img = np.full((480, 640, 3), 128, np.uint8)
        img[40:200, 40:200] = (255, 0, 0)  # a red square, top left
        return img
    if path.endswith(".npy"):
        return np.load(path)
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict]:
        return _cameras()

    def __init__(self, camera_num: int = 0) -> None:
        cams = _cameras()
        if not 0 <= camera_num < len(cams):
            raise IndexError("list index out of range")  # what picamera2 raises for a camera that is not there
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.closed = False
        self._last = 0.0

    def _configuration(self, use_case: str, main: dict | None, transform=None, controls=None, **_: object) -> dict:
        main = {"format": "XBGR8888" if use_case != "still" else "BGR888", "size": (640, 480), **(main or {})}
        return {"use_case": use_case, "main": main, "transform": transform, "controls": dict(controls or {})}

    def create_preview_configuration(self, main: dict | None = None, **kw: object) -> dict:
        return self._configuration("preview", main, **kw)

    def create_video_configuration(self, main: dict | None = None, **kw: object) -> dict:
        return self._configuration("video", main, **kw)

    def create_still_configuration(self, main: dict | None = None, **kw: object) -> dict:
        return self._configuration("still", main, **kw)

    def configure(self, config: dict) -> None:
        fmt = config["main"]["format"]
        if fmt not in _ORDER:
            raise RuntimeError(f"fake picamera2: format {fmt} not supported")
        self.config = config
        log = os.environ.get("FAKE_PICAMERA2_LOG")
        if log:
            t = config.get("transform")
            with open(log, "a") as fh:
                fh.write(json.dumps({"camera": self.camera_num, "format": fmt, "size": list(config["main"]["size"]),
                                     "hflip": getattr(t, "hflip", 0), "vflip": getattr(t, "vflip", 0),
                                     "controls": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in config["controls"].items()}}) + "\n")
        w, h = config["main"]["size"]
        from PIL import Image

        img = np.asarray(Image.fromarray(_photo()).resize((w, h), Image.BILINEAR))
        t = config.get("transform")
        if getattr(t, "hflip", 0):
            img = img[:, ::-1]
        if getattr(t, "vflip", 0):
            img = img[::-1]
        order = _ORDER[fmt]
        planes = [img[..., c] if c is not None else np.full(img.shape[:2], 255, np.uint8) for c in order]
        self._frame = np.ascontiguousarray(np.stack(planes, axis=-1))
        duration = config["controls"].get("FrameDurationLimits")
        self._period = duration[0] / 1e6 if duration else 1 / 30

    def camera_configuration(self) -> dict | None:
        return self.config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera is not running")
        wait = self._last + self._period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()
        return self._frame.copy()

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
