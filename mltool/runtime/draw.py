"""Annotated pictures for people: labels, boxes and alerts drawn on a frame.

The summary text goes in a strip added below the picture, so it never covers a box or its
label; box labels sit above their box, or just inside it when the box touches the top edge, and
are kept inside the picture horizontally.
"""

from __future__ import annotations

import numpy as np

from mltool.runtime.detect import Detection

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
GREEN = (0, 255, 0)


def annotate(img: np.ndarray, text_lines: list[str], detections: list[Detection] | None = None, alert: bool = False,
             strip_lines: int | None = None) -> np.ndarray:
    """A BGR copy of an RGB frame with boxes and their labels drawn, and ``text_lines`` in a strip
    below it (the picture's own pixels keep their places: boxes map 1:1). ``strip_lines`` fixes
    the strip's height, so every frame of a video has the same size."""
    import cv2

    pic = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = pic.shape[:2]
    scale = max(0.4, min(h, w) / 500)
    thick = max(1, int(2 * scale))
    for det in detections or []:
        x0, y0, x1, y1 = det.pixels(w, h)
        cv2.rectangle(pic, (x0, y0), (x1, y1), GREEN, thick)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        tx = int(min(max(x0, 0), max(w - tw - 2, 0)))
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else min(y0 + th + 4, h - base - 1)  # above the box, else just inside
        cv2.rectangle(pic, (tx, ty - th - 2), (tx + tw + 2, ty + base), GREEN, -1)
        cv2.putText(pic, text, (tx + 1, ty), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    rows = max(strip_lines or 0, len(text_lines))
    if not rows:
        return pic
    line_h = int(22 * scale) + 4
    strip = np.zeros((line_h * rows + 6, w, 3), np.uint8)
    color = (80, 80, 255) if alert else (255, 255, 255)
    for i, line in enumerate(text_lines):
        cv2.putText(strip, line, (6, line_h * (i + 1)), _FONT, scale, color, 1, cv2.LINE_AA)
    return np.vstack([pic, strip])
