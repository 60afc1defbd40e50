"""NMS against a brute-force greedy reference on random boxes, and the letterbox geometry."""

from __future__ import annotations

import numpy as np
import pytest

from mltool.runtime.detect import grid_cells, nms
from mltool.runtime.preprocess import Letterbox, letterbox


def reference(boxes, scores, iou, classes=None, max_det=300):
    """Textbook greedy NMS, one box at a time: best score first (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        a = boxes[i]
        for k in keep:
            if classes is not None and classes[k] != classes[i]:
                continue
            b = boxes[k]
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = w * h
            union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
            if inter > iou * union:
                break
        else:
            keep.append(i)
            if len(keep) == max_det:
                break
    return keep


@pytest.mark.parametrize("seed", range(40))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 120))
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(0, 60, (n, 2)) * (rng.random((n, 1)) > 0.05)  # a few empty boxes
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.random(n)
    if seed % 3 == 0:
        scores = np.round(scores, 1)  # ties
    classes = rng.integers(0, 4, n)
    for iou in (0.0, 0.3, 0.5, 0.7, 0.95):
        for max_det in (1, 7, 300):
            assert nms(boxes, scores, iou, None, max_det).tolist() == reference(boxes.tolist(), scores.tolist(), iou, None, max_det)
            assert nms(boxes, scores, iou, classes, max_det).tolist() == reference(
                boxes.tolist(), scores.tolist(), iou, classes.tolist(), max_det)


def test_nms_dense_cluster_and_chain():
    # a chain: each box overlaps only the next, so keep/drop alternates down the chain
    boxes = np.array([[i * 5.0, 0, i * 5.0 + 10, 10] for i in range(50)])
    scores = np.linspace(1, 0.5, 50)
    assert nms(boxes, scores, 0.3).tolist() == reference(boxes.tolist(), scores.tolist(), 0.3) == list(range(0, 50, 2))
    # one object seen by 200 anchors: one box survives
    rng = np.random.default_rng(1)
    jitter = np.array([100, 100, 200, 200]) + rng.normal(0, 1, (200, 4))
    assert len(nms(jitter, rng.random(200), 0.7)) == 1
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.7).tolist() == []


def test_grid_cells_and_letterbox_geometry():
    assert grid_cells(640, 640) == 8400 and grid_cells(64, 64) == 84 and grid_cells(480, 640) == 6300
    g = Letterbox.fit(640, 480, 640, 640)
    assert (g.inner_w, g.inner_h, g.left, g.top) == (640, 480, 0, 80)
    g = Letterbox.fit(480, 640, 320, 320)
    assert (g.inner_w, g.inner_h, g.left, g.top) == (240, 320, 40, 0)
    back = g.to_source(np.array([[40.0, 0, 280, 320], [0, -5, 400, 10]]))
    assert back.tolist() == [[0, 0, 480, 640], [0, 0, 480, 20]]  # clipped to the picture
    img = np.full((480, 640, 3), 200, np.uint8)
    out = letterbox(img, 320, 320)
    assert out.shape == (320, 320, 3) and (out[:40] == 114).all() and (out[280:] == 114).all() and (out[40:280] == 200).all()
