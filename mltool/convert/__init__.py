"""Convert Keras models to TFLite in every quantization mode, each evaluated against the source.

    from mltool.convert import ConvertConfig, convert
    result = convert(ConvertConfig(model="runs/train/digits-1", quantize="int8"))
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {
    "convert": "mltool.convert.converter", "ConvertConfig": "mltool.convert.converter",
    "ConvertResult": "mltool.convert.results", "ConvertCheckError": "mltool.convert.results",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
