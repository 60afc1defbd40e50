"""Train Keras models on a task's dataset and write run directories.

    from mltool.train import TrainConfig, train
    result = train(TrainConfig(task="digits", epochs=5))
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {
    "train": "mltool.train.run", "TrainConfig": "mltool.train.run", "TrainResult": "mltool.train.run",
    "evaluate_run": "mltool.train.run", "RunInfo": "mltool.train.rundir", "read_run": "mltool.train.rundir",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
