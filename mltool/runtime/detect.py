"""SSD-style object detection outputs (boxes, classes, scores, count) as named detections."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mltool.runtime.labels import Labels
from mltool.runtime.model_io import TensorSpec


class Detection(NamedTuple):
    label: str
    score: float
    index: int
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax, normalised 0..1

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` image: (xmin, ymin, xmax, ymax)."""
        y0, x0, y1, x1 = self.box
        return round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)


def detection_outputs(outputs: list[TensorSpec]) -> dict[str, int] | None:
    """Map SSD-style outputs (boxes, classes, scores, count) to output positions, or None."""
    if len(outputs) != 4:
        return None
    found: dict[str, int] = {}
    pairs = []
    for pos, d in enumerate(outputs):
        shape = list(d.shape)
        if len(shape) == 3 and shape[-1] == 4:
            found["boxes"] = pos
        elif int(np.prod(shape)) == 1:
            found["count"] = pos
        elif len(shape) == 2:
            pairs.append((pos, d.name.lower()))
    if len(pairs) != 2 or "boxes" not in found or "count" not in found:
        return None
    named = {("classes" if "class" in n else "scores" if "score" in n else ""): p for p, n in pairs}
    if set(named) == {"classes", "scores"}:
        found.update(named)
    else:  # TFLite_Detection_PostProcess order: boxes, classes, scores, count
        (a, _), (b, _) = sorted(pairs)
        found.update(classes=a, scores=b)
    return found


def decode(outputs: list[np.ndarray], mapping: dict[str, int], labels: Labels, threshold: float) -> list[Detection]:
    boxes = outputs[mapping["boxes"]].reshape(-1, 4)
    classes = outputs[mapping["classes"]].reshape(-1)
    scores = outputs[mapping["scores"]].reshape(-1)
    count = int(round(float(outputs[mapping["count"]].reshape(-1)[0])))
    res = []
    for i in range(min(count, len(scores))):
        if scores[i] >= threshold:
            b = tuple(round(float(v), 4) for v in np.clip(boxes[i], 0, 1))
            res.append(Detection(labels.name(int(classes[i])), round(float(scores[i]), 4), int(classes[i]), b))  # type: ignore[arg-type]
    return res
