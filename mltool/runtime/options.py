"""How a model is run and read: the Predictor's options, declared once here.

`infer`, `serve` and Python code build one :class:`PredictorOptions`; the CLI declares the
matching options once (``mltool.cli._options.predictor_options``); ``validate()`` checks them
before any model loads (usage errors, exit 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mltool.errors import ConfigError, did_you_mean

TASKS = ("auto", "classify", "detect", "raw")


@dataclass
class PredictorOptions:
    threads: int | None = None  # interpreter threads (given to the constructor: XNNPACK takes them there)
    labels: str | Path | list[str] | None = None  # overrides the model's own labels
    mean: list[float] | None = None  # normalisation, overrides the model's metadata
    std: list[float] | None = None
    task: str = "auto"  # auto | classify | detect | raw
    top_k: int = 3
    score_threshold: float | None = None  # detections (default: 0.5 SSD, 0.25 YOLO)
    alert_threshold: float | None = None
    alert_class: str | None = None
    delegate: str | None = None  # an external delegate library, or "none"
    delegate_options: dict[str, str] | None = None
    input_shape: list[list[int]] | list[int] | None = None  # resize dynamic inputs before allocation
    window: int | None = None  # samples per window for signal models with a dynamic length
    iou: float = 0.7  # YOLO NMS
    max_det: int = 300
    agnostic: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PredictorOptions:
        """From keyword arguments, refusing a misspelt one by name (not a TypeError)."""
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(f"'{key}' is not a Predictor option", did_you_mean(key, known))
        return cls(**values)

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        check_options(self.task, self.top_k, self.alert_threshold, score_threshold=self.score_threshold, iou=self.iou,
                      max_det=self.max_det)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be at least 1", "use --threads 1, 2 or 4")
        if self.window is not None and self.window < 1:
            raise ConfigError(f"--window {self.window} must be at least 1", "use the number of samples per window, e.g. --window 16000")


def check_options(task: str = "auto", top_k: int = 3, alert_threshold: float | None = None, *,
                  score_threshold: float | None = None, iou: float = 0.7, max_det: int = 300) -> None:
    """Validate Predictor options before anything is loaded (usage errors, exit 2)."""
    if task not in TASKS:
        raise ConfigError(f"unknown --task '{task}'", "use auto, classify, detect or raw")
    if score_threshold is not None and not 0 <= score_threshold <= 1:
        raise ConfigError(f"--score-threshold {score_threshold} is not between 0 and 1", "e.g. --score-threshold 0.25")
    if not 0 <= iou <= 1:
        raise ConfigError(f"--iou {iou} is not between 0 and 1", "e.g. --iou 0.7 (Ultralytics' default)")
    if max_det < 1:
        raise ConfigError(f"--max-det {max_det} must be at least 1", "e.g. --max-det 300")
    if alert_threshold is not None and not (0 <= alert_threshold <= 1 and not math.isnan(alert_threshold)):
        raise ConfigError(f"--alert-threshold {alert_threshold} is not a probability", "use a value between 0 and 1, e.g. 0.8")
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be at least 1", "use --top-k 1 or more")
