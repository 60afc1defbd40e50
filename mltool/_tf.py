"""Import TensorFlow/Keras quietly: its C++ start-up logging is noise for users.

``MLTOOL_DEBUG=1`` leaves everything visible.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mltool._silence import silenced


def import_tensorflow() -> Any:
    """Import and return ``tensorflow`` (and ``keras``) with start-up logs silenced."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silenced():
        import keras  # noqa: F401
        import tensorflow as tf
    return tf
