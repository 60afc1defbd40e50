"""Object detection outputs as named detections: SSD-style (boxes, classes, scores, count) and
Ultralytics YOLO (v5, v8/v9/11, end-to-end), with letterbox geometry and NMS for the latter."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from mltool.runtime.labels import Labels
from mltool.runtime.quant import TensorSpec


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


# --------------------------------------------------------------------------- YOLO (Ultralytics)

YOLO_STRIDES = (8, 16, 32)
MAX_NMS = 30000  # candidates NMS looks at, best first (a frame of noise should not take seconds)


class YoloHead(NamedTuple):
    """Which YOLO output convention a model follows, and how mltool decided it."""

    layout: str  # v8 ([1, 4+nc, N]: v8, v9, 11, YOLO26 one-to-many) | v5 ([1, N, 5+nc]) | end2end ([1, K, 6], NMS done)
    output: int  # position of the output
    classes: int | None  # None: end-to-end outputs carry class ids, not one column per class
    evidence: str

    @property
    def family(self) -> str:
        return {"v8": "YOLO v8/v9/11", "v5": "YOLOv5", "end2end": "YOLO end-to-end"}[self.layout]


def grid_cells(height: int, width: int, strides: tuple[int, ...] = YOLO_STRIDES) -> int:
    """How many predictions a YOLO head makes at ``height`` x ``width``: one per cell of each
    stride's grid (8400 at 640x640)."""
    return sum(-(-height // s) * -(-width // s) for s in strides)


def yolo_head(outputs: list[Any], hw: tuple[int, int] | None, classes: int | None = None,
              end2end: bool | None = None) -> YoloHead | None:
    """The YOLO convention of a model with one 3-D output, or None. ``hw``: the input's height
    and width; ``classes``: how many names the model's own metadata gives (if any);
    ``end2end``: what the metadata says about NMS in the graph (if anything)."""
    if len(outputs) != 1 or len(outputs[0].shape) != 3 or outputs[0].shape[0] != 1 or hw is None:
        return None
    _, a, b = (int(d) for d in outputs[0].shape)
    n = grid_cells(*hw)
    shape = f"output {list(outputs[0].shape)}"
    if end2end is not True and b == n and a >= 5 and classes in (None, a - 4):
        return YoloHead("v8", 0, a - 4, f"{shape}: {b} = the grid cells of strides 8/16/32 at {hw[0]}x{hw[1]}, "
                                          f"rows = 4 box values + {a - 4} class scores")
    if end2end is not True and a == 3 * n and b >= 6 and classes in (None, b - 5):
        return YoloHead("v5", 0, b - 5, f"{shape}: {a} = 3 anchors x the grid cells of strides 8/16/32 at "
                                          f"{hw[0]}x{hw[1]}, columns = 4 box values + objectness + {b - 5} class scores")
    if b == 6 and end2end is not False:
        why = "the metadata says end2end" if end2end else f"{a} rows of 6 (x1, y1, x2, y2, score, class), not the {n} grid cells"
        return YoloHead("end2end", 0, None, f"{shape}: {why}: boxes after NMS")
    if classes is not None and end2end is not True:  # other strides (P2, P6 heads): the metadata's class count decides
        if a == 4 + classes and b > a:
            return YoloHead("v8", 0, classes, f"{shape}: rows = 4 box values + the {classes} classes the metadata names")
        if b == 5 + classes and a > b:
            return YoloHead("v5", 0, classes, f"{shape}: columns = 4 box values + objectness + the {classes} classes the "
                                              "metadata names")
    return None


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.7, classes: np.ndarray | None = None,
        max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression: indexes of the kept boxes, best score first. A box is
    dropped when a kept box with a higher score overlaps it with IoU > ``iou``; with
    ``classes``, only boxes of the same class suppress each other.

    Exact greedy NMS without the n x n IoU matrix: only pairs whose x ranges overlap are
    compared (a sweep over boxes sorted by x1), then the keep/drop decisions are settled in a few
    vectorised passes (a box is dropped once a kept box suppresses it, kept once every box that
    could suppress it is dropped), so a dense frame costs what its overlapping pairs cost."""
    n = len(scores)
    if n == 0 or max_det < 1:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = np.asarray(boxes, np.float64)[order]
    if classes is not None:  # one x range per class: boxes of different classes never meet
        span = float(b[:, [0, 2]].max() - b[:, [0, 2]].min()) + 1.0
        shift = np.asarray(classes)[order].astype(np.float64) * span
        x1, x2 = b[:, 0] + shift, b[:, 2] + shift
    else:
        x1, x2 = b[:, 0], b[:, 2]
    by_x = np.argsort(x1, kind="stable")
    xs1, xs2 = x1[by_x], x2[by_x]
    hi = np.searchsorted(xs1, xs2, side="left")  # boxes after p in x1 order that start before p ends
    counts = np.maximum(hi - np.arange(1, n + 1), 0)
    total = int(counts.sum())
    if total:
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        first = np.repeat(np.arange(n), counts)
        second = first + 1 + (np.arange(total) - starts)
        i, j = by_x[first], by_x[second]
        bx1, by1, bx2, by2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
        w = np.minimum(bx2[i], bx2[j]) - np.maximum(bx1[i], bx1[j])
        h = np.minimum(by2[i], by2[j]) - np.maximum(by1[i], by1[j])
        np.clip(w, 0, None, out=w)
        np.clip(h, 0, None, out=h)
        inter = w * h
        area = np.clip(bx2 - bx1, 0, None) * np.clip(by2 - by1, 0, None)
        hit = inter > iou * (area[i] + area[j] - inter)
        if classes is not None:
            ranked = np.asarray(classes)[order]
            hit &= ranked[i] == ranked[j]
        i, j = i[hit], j[hit]
        strong, weak = np.minimum(i, j), np.maximum(i, j)  # rank order: lower index = higher score
    else:
        strong = weak = np.zeros(0, np.int64)
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 dropped
    while True:
        open_ = state == 0
        dropped = np.zeros(n, bool)
        dropped[weak[state[strong] == 1]] = True
        pending = np.bincount(weak[state[strong] != -1], minlength=n)  # suppressors not yet dropped
        drop, keep = open_ & dropped, open_ & ~dropped & (pending == 0)
        if not (drop.any() or keep.any()):  # all settled (the best open box always settles)
            break
        state[drop], state[keep] = -1, 1
    kept = np.flatnonzero(state == 1)[:max_det]
    return order[kept]


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh, dtype=np.float64)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    out[:, 0], out[:, 1] = xywh[:, 0] - half_w, xywh[:, 1] - half_h
    out[:, 2], out[:, 3] = xywh[:, 0] + half_w, xywh[:, 1] + half_h
    return out


def decode_yolo(output: np.ndarray, head: YoloHead, labels: Labels, threshold: float, *, input_hw: tuple[int, int],
                source: Any = None, iou: float = 0.7, max_det: int = 300, agnostic: bool = False) -> list[Detection]:
    """One image's YOLO output (dequantized) as detections in the source picture.

    ``source``: the :class:`~mltool.runtime.preprocess.Letterbox` that placed the picture in
    the input (None: boxes relative to the input itself). Boxes normalised to 0..1 (TFLite
    exports) and in input pixels (end-to-end LiteRT exports, raw ONNX-converted graphs) are
    told apart by their values: any coordinate above 2 means pixels."""
    out = np.asarray(output)[0]
    if head.layout == "v8":
        cls = out[4:]
        best = cls.max(axis=0)
        idx = np.flatnonzero(best >= threshold)
        if idx.size > MAX_NMS:
            idx = idx[np.argsort(-best[idx], kind="stable")[:MAX_NMS]]
        scores, classes = best[idx], cls[:, idx].argmax(axis=0)
        xyxy = _xywh_to_xyxy(out[:4, idx].T)
    elif head.layout == "v5":
        idx = np.flatnonzero(out[:, 4] >= threshold)  # score = objectness x class <= objectness
        conf = out[idx, 5:] * out[idx, 4:5]
        classes = conf.argmax(axis=1)
        scores = conf[np.arange(len(idx)), classes]
        keep = scores >= threshold
        idx, scores, classes = idx[keep], scores[keep], classes[keep]
        if idx.size > MAX_NMS:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS]
            idx, scores, classes = idx[top], scores[top], classes[top]
        xyxy = _xywh_to_xyxy(out[idx, :4])
    else:
        idx = np.flatnonzero(out[:, 4] >= threshold)
        scores, classes = out[idx, 4], np.round(out[idx, 5]).astype(np.int64)
        xyxy = out[idx, :4].astype(np.float64)
    if not len(idx):
        return []
    h, w = input_hw
    if float(np.abs(xyxy).max()) <= 2.0:  # normalised to the input
        xyxy[:, [0, 2]] *= w
        xyxy[:, [1, 3]] *= h
    if head.layout == "end2end":
        keep = np.argsort(-scores, kind="stable")[:max_det]
    else:
        keep = nms(xyxy, scores, iou, None if agnostic else classes, max_det)
    xyxy, scores, classes = xyxy[keep], scores[keep], classes[keep]
    if source is not None:
        xyxy = source.to_source(xyxy)
        sw, sh = source.width, source.height
    else:
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        sw, sh = w, h
    norm = np.round(xyxy[:, [1, 0, 3, 2]] / np.array([sh, sw, sh, sw], np.float64), 4).tolist()  # ymin, xmin, ymax, xmax
    names = {c: labels.name(c) for c in set(classes.tolist())}
    return [Detection(names[c], s, c, tuple(b))  # type: ignore[arg-type]
            for b, s, c in zip(norm, np.round(scores.astype(np.float64), 4).tolist(), classes.tolist())]
