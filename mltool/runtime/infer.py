"""``run_infer()``: a model over a source, one result per frame/file/window, with a summary.

    from mltool.runtime.infer import InferConfig, run_infer
    summary = run_infer(InferConfig(model="model_int8.tflite", source="photos/"), on_result=print)
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError
from mltool.runtime.sources import Frame, SourceEvent, open_source


@dataclass
class InferConfig:
    model: str | Path
    source: str
    threads: int | None = None
    labels: Path | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    task: str = "auto"  # auto | classify | detect
    top_k: int = 3
    alert_threshold: float | None = None
    alert_class: str | None = None
    score_threshold: float = 0.5  # detections
    save: Path | None = None
    max_frames: int | None = None
    every: int = 1
    hop: int | None = None
    timeout_s: float = 5.0
    max_reconnects: int | None = None

    def validate(self) -> None:
        if self.task not in ("auto", "classify", "detect"):
            raise ConfigError(f"unknown --task '{self.task}'", "use auto, classify or detect")
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be at least 1", "use --every 1 to process every frame")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames {self.max_frames} must be at least 1", "omit it to run until the source ends")
        if self.alert_threshold is not None and not 0 <= self.alert_threshold <= 1:
            raise ConfigError(f"--alert-threshold {self.alert_threshold} is not a probability", "use a value between 0 and 1, e.g. 0.8")
        if self.top_k < 1:
            raise ConfigError(f"--top-k {self.top_k} must be at least 1", "use --top-k 1 or more")


class _Saver:
    """Annotated images (file sources) or one annotated video (video/live sources), plus
    predictions.jsonl for every result."""

    def __init__(self, out: Path, source_kind: str, label: str, fps: float | None) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.video = source_kind in ("video", "camera", "stream", "picamera")
        self.fps = fps or 10.0
        self.writer: Any = None
        self.video_path = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(label).stem or "stream").strip("_") + "_annotated.mp4")
        self.jsonl = (out / "predictions.jsonl").open("a")

    def add(self, frame: Frame, bgr: np.ndarray | None, record: dict[str, Any]) -> None:
        import cv2

        self.jsonl.write(json.dumps(record) + "\n")
        if bgr is None:
            return
        if self.video:
            if self.writer is None:
                h, w = bgr.shape[:2]
                self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            self.writer.write(bgr)
        else:
            cv2.imwrite(str(self.out / (Path(frame.name).stem + ".jpg")), bgr)

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.release()


def run_infer(
    cfg: InferConfig,
    *,
    on_result: Callable[[dict[str, Any]], None] = lambda r: None,
    on_event: Callable[[dict[str, Any]], None] = lambda e: None,
    on_start: Callable[[dict[str, Any]], None] = lambda d: None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    from mltool.runtime import predict as P
    from mltool.runtime.interpreter import load_model

    cfg.validate()
    stop = stop or threading.Event()
    t_start = time.perf_counter()
    model = load_model(cfg.model, threads=cfg.threads)
    io = P.resolve_io(model, labels=cfg.labels, mean=cfg.mean, std=cfg.std, task=cfg.task)
    source = open_source(cfg.source, signal_window=io.window, hop=cfg.hop, rate=io.rate_hz,
                         timeout_s=cfg.timeout_s, max_reconnects=cfg.max_reconnects)
    if io.kind == "image" and source.kind == "signal":
        raise ConfigError(f"{cfg.model} takes images but {cfg.source} is a signal source", "pass an image/video/camera/stream source")
    alert_idx = P.alert_index(io, cfg.alert_class) if cfg.alert_threshold is not None else None
    saver = _Saver(Path(cfg.save), source.kind, source.label, source.fps) if cfg.save else None
    on_start({**P.describe(model, io), "source": source.label, "source_kind": source.kind})

    latencies: list[float] = []
    totals: list[float] = []
    processed = skipped = alerts = 0
    first_result_s: float | None = None
    stopped_by = "end of source"
    seen = 0
    try:
        for item in source:
            if stop.is_set():
                stopped_by = "signal"
                break
            if isinstance(item, SourceEvent):
                on_event({"event": item.kind, "source": source.label, "name": item.name,
                          "message": item.message, "timestamp": item.timestamp})
                continue
            seen += 1
            if (seen - 1) % cfg.every:
                skipped += 1
                continue
            t0 = time.perf_counter()
            x = P.preprocess_image(item.image, io) if item.image is not None else P.preprocess_signal(item.signal, io)
            t1 = time.perf_counter()
            outputs = P.feed(model, x, io)
            t2 = time.perf_counter()
            record: dict[str, Any] = {"source": source.label, "index": item.index, "name": item.name,
                                      "timestamp": round(item.timestamp, 6)}
            lines: list[str] = []
            dets = None
            if io.task == "detection":
                dets = P.detect(outputs, io, cfg.score_threshold)
                record["detections"] = [{"label": d.label, "score": d.score, "box": list(d.box), "class": d.index} for d in dets]
                lines = [f"{len(dets)} objects"] + [f"{d.label} {d.score:.2f}" for d in dets[:3]]
            else:
                preds = P.classify(outputs, io, cfg.top_k)
                record["predictions"] = [{"label": p.label, "score": p.score, "index": p.index} for p in preds]
                lines = [f"{preds[0].label} {preds[0].score:.2f}"]
                if alert_idx is not None:
                    score = float(P.class_scores(outputs)[alert_idx])
                    fired = score >= cfg.alert_threshold  # type: ignore[operator]
                    record["alert"] = {"class": io.label(alert_idx), "score": round(score, 6),
                                       "threshold": cfg.alert_threshold, "active": fired}
                    if fired:
                        alerts += 1
                        lines.append(f"ALERT {io.label(alert_idx)} {score:.2f}")
            t3 = time.perf_counter()
            record["latency_ms"] = round((t2 - t1) * 1000, 3)
            record["timings_ms"] = {"read": round(item.read_ms, 3), "preprocess": round((t1 - t0) * 1000, 3),
                                    "invoke": round((t2 - t1) * 1000, 3), "postprocess": round((t3 - t2) * 1000, 3)}
            latencies.append(t2 - t1)
            totals.append(t3 - t0 + item.read_ms / 1000)
            processed += 1
            if first_result_s is None:
                first_result_s = time.perf_counter() - t_start
            if saver is not None:
                bgr = P.annotate(item.image, lines, dets, alert=bool(record.get("alert", {}).get("active"))) if item.image is not None else None
                saver.add(item, bgr, record)
            on_result(record)
            if cfg.max_frames is not None and processed >= cfg.max_frames:
                stopped_by = "max frames"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        source.close()
        if saver is not None:
            saver.close()
    elapsed = time.perf_counter() - t_start
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "event": "summary", "model": str(cfg.model), "source": source.label, "frames": processed,
        "skipped": skipped, "dropped": source.stats.dropped, "errors": source.stats.errors,
        "reconnects": source.stats.reconnects, "alerts": alerts,
        "elapsed_s": round(elapsed, 3), "fps": round(processed / elapsed, 3) if elapsed > 0 else 0.0,
        "first_result_s": None if first_result_s is None else round(first_result_s, 4),
        "latency_ms": {"mean": round(float(lat.mean()), 3), "median": round(float(np.median(lat)), 3),
                       "p90": round(float(np.percentile(lat, 90)), 3)},
        "stopped_by": stopped_by, "saved_to": str(cfg.save) if cfg.save else None,
    }
