"""mltool: train, convert, deploy and run TFLite models on the edge.

The Python API is the command line's own calls::

    from mltool import Predictor                    # device side: no TensorFlow
    from mltool.train import TrainConfig, train
    from mltool.convert import ConvertConfig, convert
    from mltool.deploy import DeployConfig, deploy

Importing ``mltool`` is cheap: names load on first use.
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "Predictor": "mltool.runtime.predictor",
    "Result": "mltool.runtime.predictor",
    "Stream": "mltool.runtime.predictor",
    "Classification": "mltool.runtime.classify",
    "Detection": "mltool.runtime.detect",
    "MltoolError": "mltool.errors",
}
__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_getattr(__name__, _EXPORTS)
