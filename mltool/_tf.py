"""Import TensorFlow/Keras quietly (its C++ start-up logging is noise for users), and load
Keras files safely.

``MLTOOL_DEBUG=1`` leaves everything visible.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
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


def load_keras_model(path: str | Path) -> Any:
    """Load a ``.keras`` file in safe mode: no arbitrary code (Lambda layers) is deserialised."""
    from mltool.errors import ModelError

    import_tensorflow()
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", "check the path")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ModelError(
                f"{path} needs unsafe deserialisation (it contains a Lambda layer or custom code)",
                "rebuild the model without Lambda layers; mltool never runs code embedded in model files",
            ) from None
        raise ModelError(f"cannot load {path} ({str(exc).splitlines()[0][:200]})", "check that it is a Keras 3 .keras file") from None
    except Exception as exc:  # zip errors, missing config, ...
        raise ModelError(f"cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                         "check that it is a Keras 3 .keras file") from None
