"""Device-side runtime: loads and runs .tflite models. Never imports TensorFlow."""

import os as _os

# OpenCV's C++ warnings (failed camera probes, FFmpeg chatter) are noise next to mltool's own
# one-line errors; MLTOOL_DEBUG=1 keeps them.
if _os.environ.get("MLTOOL_DEBUG", "").strip() in ("", "0"):
    _os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    _os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
