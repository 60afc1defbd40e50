"""Device-side runtime: loads and runs .tflite models. Never imports TensorFlow."""

import os as _os

from mltool._silence import debug as _debug

# OpenCV's C++ warnings (failed camera probes, FFmpeg chatter) are noise next to mltool's own
# one-line errors; MLTOOL_DEBUG=1 keeps them.
if not _debug():
    _os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    _os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
