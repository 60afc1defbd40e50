"""From a frame to model input, and from model output to named results.

What the model wants comes from its embedded metadata; flags override it, and a model with no
metadata works with flags alone. Quantization itself is done by :mod:`mltool.runtime.quant`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mltool.errors import ConfigError, DataError
from mltool.runtime.interpreter import LoadedModel
from mltool.runtime.preprocess import normalize


class Classification(NamedTuple):
    index: int
    label: str
    score: float


class Detection(NamedTuple):
    label: str
    score: float
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax, normalised 0..1
    index: int


@dataclass
class ModelIO:
    kind: str  # image | signal
    task: str  # classification | detection
    shape: tuple[int, ...]  # input without batch
    mean: np.ndarray | None
    std: np.ndarray | None
    raw_quantized: bool  # feed pixels straight into a uint8/int8 input (no metadata, no flags)
    labels: list[str] | None
    rate_hz: float | None
    detection_outputs: dict[str, int] | None = None
    pixel_lut: np.ndarray | None = None  # uint8 pixel -> model input value (normalised, quantized)

    @property
    def window(self) -> int | None:
        return self.shape[0] if self.kind == "signal" else None

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels and 0 <= i < len(self.labels) else str(i)


def _detection_outputs(model: LoadedModel) -> dict[str, int] | None:
    """Map SSD-style outputs (boxes, classes, scores, count) to output positions, or None."""
    outs = model.interpreter.get_output_details()
    if len(outs) != 4:
        return None
    found: dict[str, int] = {}
    pairs = []
    for pos, d in enumerate(outs):
        shape = list(d["shape"])
        if len(shape) == 3 and shape[-1] == 4:
            found["boxes"] = pos
        elif int(np.prod(shape)) == 1:
            found["count"] = pos
        elif len(shape) == 2:
            pairs.append((pos, d["name"].lower()))
    if len(pairs) != 2 or "boxes" not in found or "count" not in found:
        return None
    named = {("classes" if "class" in n else "scores" if "score" in n else ""): p for p, n in pairs}
    if set(named) == {"classes", "scores"}:
        found.update(named)
    else:  # TFLite_Detection_PostProcess order: boxes, classes, scores, count
        (a, _), (b, _) = sorted(pairs)
        found.update(classes=a, scores=b)
    return found


def resolve_io(model: LoadedModel, *, labels: Path | None = None, mean: list[float] | None = None,
               std: list[float] | None = None, task: str = "auto") -> ModelIO:
    meta = model.metadata or {}
    inp = model.inputs[0]
    shape = tuple(int(s) for s in inp.shape[1:])
    if len(shape) == 3:
        kind = "image"
        if shape[-1] not in (1, 3):
            raise ConfigError(f"{model.path} input {list(inp.shape)} is not an NHWC image with 1 or 3 channels",
                              "mltool feeds NHWC images (1 or 3 channels) or 1-D signals")
    elif len(shape) == 2 or len(shape) == 1:
        kind = "signal"
        shape = (shape[0], 1) if len(shape) == 1 else shape
    else:
        raise ConfigError(f"{model.path} has input shape {list(inp.shape)}, which mltool cannot feed",
                          "use an image (N, H, W, C) or signal (N, W, 1) model")
    if labels is not None:
        if not labels.is_file():
            raise DataError(f"labels file {labels} does not exist", "pass a text file with one class name per line")
        label_list: list[str] | None = [ln.strip() for ln in labels.read_text().splitlines() if ln.strip()]
    else:
        label_list = meta.get("labels")
    norm = meta.get("normalization") or {}
    m = mean if mean is not None else norm.get("mean")
    s = std if std is not None else norm.get("std")
    raw = False
    if m is None or s is None:
        if inp.quantized and inp.dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            raw = True  # the common tutorial case: pixels go straight into a uint8 input
            m = s = None
        else:
            raise ConfigError(
                f"{model.path} has no mltool metadata saying how to normalise its float input",
                "pass --mean and --std (e.g. --mean 0 --std 255 for [0, 1], --mean 127.5 --std 127.5 for [-1, 1])",
            )
    det = _detection_outputs(model)
    if task == "detect" and det is None:
        raise ConfigError(f"{model.path} does not have the four SSD-style outputs (boxes, classes, scores, count)",
                          "use --task classify, or a detection model")
    chosen = "detection" if (task == "detect" or (task == "auto" and det is not None)) else "classification"
    rate = (meta.get("input") or {}).get("rate_hz")
    lut = None
    if kind == "image" and not raw:
        from mltool.runtime.quant import pixel_lut

        if inp.quantized or inp.dtype == np.dtype(np.float32):
            lut = pixel_lut(np.asarray(m, np.float32), np.asarray(s, np.float32), inp, shape[-1])
    return ModelIO(kind, chosen, shape,
                   None if raw else np.asarray(m, np.float32), None if raw else np.asarray(s, np.float32),
                   raw, label_list, rate, det if chosen == "detection" else None, lut)


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Downscale by halving with a Gaussian pyramid while >= 2x too big, then bilinear: close to
    area averaging (no aliasing) at a quarter of INTER_AREA's cost on 640x480 -> 224x224."""
    import cv2

    while img.shape[0] >= 2 * h and img.shape[1] >= 2 * w:
        img = cv2.pyrDown(img)
    if img.shape[0] != h or img.shape[1] != w:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def preprocess_image(img: np.ndarray, io: ModelIO) -> np.ndarray:
    """RGB uint8 frame -> (1, H, W, C) model input. With a pixel LUT the result is already in the
    input tensor's dtype (normalised and quantized in one table lookup); raw mode gives pixels."""
    import cv2

    h, w, c = io.shape
    img = resize(img, w, h)
    if c == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    if io.raw_quantized:
        return img[None]
    if io.pixel_lut is not None:
        lut = io.pixel_lut
        if lut.dtype == np.int8:  # cv2.LUT has no signed 8-bit tables: same bytes, viewed as uint8
            out = cv2.LUT(np.ascontiguousarray(img), lut.view(np.uint8)).view(np.int8)
        elif lut.dtype in (np.uint8, np.float32):
            out = cv2.LUT(np.ascontiguousarray(img), lut)
        else:
            out = lut[img] if lut.ndim == 1 else lut[img, 0, np.arange(c)]
        return out.reshape(h, w, c)[None]
    return normalize(img, io.mean, io.std)[None]


def preprocess_signal(sig: np.ndarray, io: ModelIO) -> np.ndarray:
    x = sig.reshape(1, *io.shape).astype(np.float32)
    if io.raw_quantized:
        return x
    return normalize(x, io.mean, io.std)


def feed(model: LoadedModel, x: np.ndarray, io: ModelIO) -> list[np.ndarray]:
    """Run one input through the model. Input already in the tensor's dtype (pixel LUT) is
    written as is; raw-pixel mode writes pixels into the quantized tensor."""
    if io.pixel_lut is not None and x.dtype == io.pixel_lut.dtype:
        return model.run_prepared(x)
    if not io.raw_quantized:
        return model.run(x)
    spec = model.inputs[0]
    q = x.astype(np.int16) - (128 if spec.dtype == np.dtype(np.int8) else 0)
    return model.run_prepared(q.astype(spec.dtype))


def _as_probabilities(v: np.ndarray) -> np.ndarray:
    if v.min() >= 0 and v.max() <= 1.0001 and abs(float(v.sum()) - 1) < 0.05:
        return v
    e = np.exp(v - v.max())
    return e / e.sum()


def classify(outputs: list[np.ndarray], io: ModelIO, top_k: int) -> list[Classification]:
    probs = _as_probabilities(outputs[0].reshape(-1).astype(np.float32))
    k = max(1, min(top_k, len(probs)))
    idx = np.argsort(-probs, kind="stable")[:k]
    return [Classification(int(i), io.label(int(i)), round(float(probs[i]), 6)) for i in idx]


def detect(outputs: list[np.ndarray], io: ModelIO, threshold: float) -> list[Detection]:
    d = io.detection_outputs
    assert d is not None
    boxes = outputs[d["boxes"]].reshape(-1, 4)
    classes = outputs[d["classes"]].reshape(-1)
    scores = outputs[d["scores"]].reshape(-1)
    count = int(round(float(outputs[d["count"]].reshape(-1)[0])))
    res = []
    for i in range(min(count, len(scores))):
        if scores[i] >= threshold:
            b = tuple(round(float(v), 4) for v in np.clip(boxes[i], 0, 1))
            res.append(Detection(io.label(int(classes[i])), round(float(scores[i]), 4), b, int(classes[i])))  # type: ignore[arg-type]
    return res


def alert_index(io: ModelIO, alert_class: str | None) -> int:
    """Which class an --alert-threshold watches: --alert-class, else the first class that is not
    a "no..."/"normal" class (fire in fire/no_fire, arrhythmia in arrhythmia/normal)."""
    labels = io.labels or []
    if alert_class is not None:
        if alert_class in labels:
            return labels.index(alert_class)
        if alert_class.isdigit():
            return int(alert_class)
        raise ConfigError(f"--alert-class '{alert_class}' is not one of the model's labels",
                          f"choose from: {', '.join(labels) or 'class indexes'}")
    for i, name in enumerate(labels):
        low = name.lower()
        if not (low.startswith(("no_", "no-", "no ", "non", "not")) or low in ("normal", "background", "negative", "none")):
            return i
    return 0


def class_scores(outputs: list[np.ndarray]) -> np.ndarray:
    return _as_probabilities(outputs[0].reshape(-1).astype(np.float32))


def annotate(img: np.ndarray, text_lines: list[str], detections: list[Detection] | None = None, alert: bool = False) -> np.ndarray:
    """A BGR copy of an RGB frame with labels (and boxes) drawn, for --save."""
    import cv2

    out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 500)
    for det in detections or []:
        y0, x0, y1, x1 = det.box
        p0, p1 = (int(x0 * w), int(y0 * h)), (int(x1 * w), int(y1 * h))
        cv2.rectangle(out, p0, p1, (0, 255, 0), max(1, int(2 * scale)))
        cv2.putText(out, f"{det.label} {det.score:.2f}", (p0[0], max(12, p0[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), 1)
    color = (80, 80, 255) if alert else (255, 255, 255)
    for i, line in enumerate(text_lines):
        y = int((i + 1) * 22 * scale) + 4
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (2, y - th - 4), (10 + tw, y + base), (0, 0, 0), -1)
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out


def describe(model: LoadedModel, io: ModelIO) -> dict[str, Any]:
    return {"model": str(model.path), "runtime": f"{model.runtime} {model.runtime_version}",
            "input": list(model.inputs[0].shape), "input_dtype": str(model.inputs[0].dtype),
            "task": io.task, "kind": io.kind, "labels": len(io.labels or []), "raw_pixels": io.raw_quantized}
