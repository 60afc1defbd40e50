"""What converted files are called. One home, used by `convert` to write them and by `deploy`
to pick one from a run directory. Importing it costs nothing (no NumPy, no TensorFlow)."""

from __future__ import annotations

MODES = ("none", "float16", "dynamic", "int8", "int16x8")
FILE_TAG = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8", "int16x8": "int16x8"}

# Which converted file a device gets when given a whole run directory: the smallest and
# fastest that runs everywhere first.
DEPLOY_PREFERENCE = ("int8", "dynamic", "float16", "none", "int16x8")


def tflite_name(stem: str, mode: str) -> str:
    """``model_int8.tflite`` for a run directory's model in int8 mode."""
    return f"{stem}_{FILE_TAG[mode]}.tflite"
