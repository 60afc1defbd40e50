"""Training progress as events, so that one view draws it whether the run is here or on another
machine (``train --on`` streams the same events over SSH as JSON lines).

A *listener* has ``train_begin(epochs, steps)``, ``epoch_begin(epoch)``, ``batch(batch, logs)``,
``epoch_end(epoch, logs, seconds)`` and ``train_end()`` (epochs and batches counted from 0).
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

EVENT_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def keras_callback(listener: Any, n_epochs: int, steps: int) -> Any:
    """A Keras callback that tells ``listener`` what happens."""
    import keras

    class Forward(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            listener.train_begin(n_epochs, steps)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.monotonic()
            listener.epoch_begin(epoch)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            listener.batch(batch, _floats(logs))

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            listener.epoch_end(epoch, _floats(logs), time.monotonic() - self._t)

        def on_train_end(self, logs: Any = None) -> None:
            listener.train_end()

    return Forward()


def _floats(logs: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items() if k in EVENT_KEYS}


class EventWriter:
    """A listener writing one JSON line per event to ``stream`` (batches at most every
    ``batch_interval`` seconds, and always the last of an epoch)."""

    def __init__(self, stream: IO[str], batch_interval: float = 0.25) -> None:
        self.stream = stream
        self.interval = batch_interval
        self._last = 0.0
        self._steps = 0

    def emit(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def train_begin(self, epochs: int, steps: int) -> None:
        self._steps = steps
        self.emit("train_begin", epochs=epochs, steps=steps)

    def epoch_begin(self, epoch: int) -> None:
        self.emit("epoch_begin", epoch=epoch)

    def batch(self, batch: int, logs: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval or batch + 1 >= self._steps:
            self._last = now
            self.emit("batch", batch=batch, logs=logs)

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        self.emit("epoch_end", epoch=epoch, logs=logs, seconds=round(seconds, 3))

    def train_end(self) -> None:
        self.emit("train_end")


def dispatch(event: dict[str, Any], listener: Any) -> bool:
    """Hand a progress event to ``listener``; False if it is not a progress event."""
    kind = event.get("event")
    if kind == "train_begin":
        listener.train_begin(event["epochs"], event["steps"])
    elif kind == "epoch_begin":
        listener.epoch_begin(event["epoch"])
    elif kind == "batch":
        listener.batch(event["batch"], event.get("logs") or {})
    elif kind == "epoch_end":
        listener.epoch_end(event["epoch"], event.get("logs") or {}, event.get("seconds") or 0.0)
    elif kind == "train_end":
        listener.train_end()
    else:
        return False
    return True
