"""Import TensorFlow/Keras quietly: its C++ start-up logging is noise for users.

``MLTOOL_DEBUG=1`` leaves everything visible.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any


def _debug() -> bool:
    return os.environ.get("MLTOOL_DEBUG", "").strip() not in ("", "0")


def import_tensorflow() -> Any:
    """Import and return ``tensorflow`` (and ``keras``) with start-up logs silenced.

    Some of TensorFlow's messages are written straight to file descriptor 2 before its log
    level applies, so stderr is redirected at the descriptor level during the import only.
    On failure the captured output is replayed so nothing useful is lost.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    if _debug():
        import keras  # noqa: F401
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
