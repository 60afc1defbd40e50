"""Everything `infer`, `bench --pipeline` and the Predictor read from.

``open_source(spec)`` understands: an image file, a directory, a glob, a video file, a camera
index or ``/dev/videoN``, ``rtsp://`` and ``http(s)://`` streams (MJPEG parsed here, anything
else through OpenCV/FFmpeg), ``picamera`` (picamera2 on a Pi), ``.npy``/``.csv``/``.wav`` signal
files, ``-`` for signal samples on stdin, and ``i2c:BUS:ADDR`` for an ADC on an I2C bus.

Iterating a source yields :class:`Frame` objects and :class:`SourceEvent` objects (errors that
were skipped, a lost camera, a reconnection). Live sources (cameras, streams) are read by a
capture thread that always hands over the *newest* frame: when inference is slower than the
camera, stale frames are dropped (and counted) instead of queueing up.

    frames.py   Frame, SourceEvent, SourceStats, the Source protocol
    files.py    image files and video files
    live.py     cameras, streams, picamera2 (capture thread, reconnects)
    signals.py  signal files, stdin samples, live sensors: windowing
    sampler.py  sampling a sensor on absolute deadlines, in a thread, with timing stats
    i2c.py      PCF8591 and ADS1115 ADCs over smbus2
    open.py     open_source(): the factory, and the i2c: syntax
"""

from mltool.runtime.sources.frames import Frame, SamplingStats, Source, SourceEvent, SourceStats
from mltool.runtime.sources.open import open_source

__all__ = ["Frame", "SamplingStats", "Source", "SourceEvent", "SourceStats", "open_source"]
