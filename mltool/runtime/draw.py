"""Annotated pictures for people: labels, boxes and alerts drawn on a frame."""

from __future__ import annotations

import numpy as np

from mltool.runtime.detect import Detection


def annotate(img: np.ndarray, text_lines: list[str], detections: list[Detection] | None = None, alert: bool = False) -> np.ndarray:
    """A BGR copy of an RGB frame with labels (and boxes) drawn."""
    import cv2

    out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 500)
    for det in detections or []:
        x0, y0, x1, y1 = det.pixels(w, h)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), max(1, int(2 * scale)))
        cv2.putText(out, f"{det.label} {det.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), 1)
    color = (80, 80, 255) if alert else (255, 255, 255)
    for i, line in enumerate(text_lines):
        y = int((i + 1) * 22 * scale) + 4
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (2, y - th - 4), (10 + tw, y + base), (0, 0, 0), -1)
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out
