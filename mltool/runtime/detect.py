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


ROLES = ("boxes", "classes", "scores", "count")
_ROLE_WORDS = {"boxes": ("box", "location"), "classes": ("class", "category", "label"),
               "scores": ("score",), "count": ("num", "count")}


def _role(name: str) -> str | None:
    low = name.lower()
    found = [r for r, words in _ROLE_WORDS.items() if any(w in low for w in words)]
    return found[0] if len(found) == 1 else None


def _shapes_fit(mapping: dict[str, int], outputs: list[TensorSpec]) -> bool:
    sh = {r: list(outputs[p].shape) for r, p in mapping.items()}
    n = sh["scores"][-1] if sh["scores"] else 0
    return (len(sh["boxes"]) >= 2 and sh["boxes"][-1] == 4 and int(np.prod(sh["count"])) == 1
            and sh["classes"] == sh["scores"] and n == sh["boxes"][-2])


# Signature outputs named output_0..3 say nothing by their names; the exporters that write them
# use one of two orders, and shapes tell which (count is a single value, boxes end in 4).
_NUMBERED = ({0: "boxes", 1: "classes", 2: "scores", 3: "count"},   # a (boxes, classes, scores, count) function
             {0: "count", 1: "scores", 2: "classes", 3: "boxes"})   # the TF2 Object Detection API exporter


def detection_outputs(outputs: list[TensorSpec], names: list[list[str]] | None = None) -> dict[str, int] | None:
    """Map the four SSD-style outputs (boxes, classes, scores, count) to output positions, or
    None if the model does not have them.

    ``names`` are alternative names for the outputs in order of trust (the signature's output
    names, then the TFLite Metadata's); the tensors' own names come next. Names that say what an
    output is (``detection_boxes``, ``location``, ``score``...) win; signature outputs numbered
    ``output_0..3`` follow one of the two exporters' orders, told apart by shape; last, the
    position of the count output tells the TF1 order (boxes, classes, scores, count) from the TF2
    Object Detection API order (scores, boxes, count, classes)."""
    if len(outputs) != 4:
        return None
    candidates = [*(names or []), [o.name for o in outputs]]
    for candidate in candidates:
        if len(candidate) != 4:
            continue
        roles = [_role(n) for n in candidate]
        if sorted(r for r in roles if r) == sorted(ROLES):
            mapping = {r: p for p, r in enumerate(roles) if r}
            if _shapes_fit(mapping, outputs):
                return mapping
    for candidate in candidates:
        numbers = [int(n[7:]) for n in candidate if n.startswith("output_") and n[7:].isdigit()]
        if sorted(numbers) != [0, 1, 2, 3]:
            continue
        for order in _NUMBERED:
            mapping = {order[int(n[7:])]: p for p, n in enumerate(candidate)}
            if _shapes_fit(mapping, outputs):
                return mapping
    by_shape = {"boxes": [p for p, o in enumerate(outputs) if len(o.shape) == 3 and o.shape[-1] == 4],
                "count": [p for p, o in enumerate(outputs) if int(np.prod(o.shape)) == 1]}
    pairs = [p for p, o in enumerate(outputs) if len(o.shape) == 2 and p not in by_shape["count"]]
    if len(by_shape["boxes"]) != 1 or len(by_shape["count"]) != 1 or len(pairs) != 2:
        return None
    found = {"boxes": by_shape["boxes"][0], "count": by_shape["count"][0]}
    if found["count"] == 2 and found["boxes"] == 1:  # TF2 OD API: scores, boxes, count, classes
        found.update(scores=pairs[0], classes=pairs[1])
    else:  # TFLite_Detection_PostProcess's own order: boxes, classes, scores, count
        found.update(classes=pairs[0], scores=pairs[1])
    return found if _shapes_fit(found, outputs) else None


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
