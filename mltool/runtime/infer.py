"""``run_infer()``: a model over a source, one result per frame/file/window, with a summary.

    from mltool.runtime.infer import InferConfig, run_infer
    summary = run_infer(InferConfig(model="model_int8.tflite", source="photos/"), on_result=lambda r: print(r.top))
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError
from mltool.runtime.options import PredictorOptions
from mltool.runtime.predictor import Result
from mltool.runtime.sources import SourceEvent
from mltool.runtime.sources.camera import CameraOptions


@dataclass
class InferConfig:
    model: str | Path
    source: str
    predictor: PredictorOptions = field(default_factory=PredictorOptions)  # how the model is run and read
    save: Path | None = None
    max_frames: int | None = None
    every: int = 1
    hop: int | None = None
    timeout_s: float = 5.0  # --stall-timeout
    max_reconnects: int | None = None
    camera: CameraOptions | None = None  # size, rate, transform of a camera source

    def validate(self) -> None:
        self.predictor.validate()
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be at least 1", "use --every 1 to process every frame")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames {self.max_frames} must be at least 1", "omit it to run until the source ends")
        if self.save is not None and Path(self.source).is_dir():
            src, out = Path(self.source).resolve(), Path(self.save).resolve()
            if out.is_relative_to(src):
                raise ConfigError(f"--save {self.save} is inside the source folder {self.source}: the next run over "
                                  "that folder would read the annotated images as inputs",
                                  f"save outside it, e.g. --save {Path(self.source).resolve().parent / (src.name + '-annotated')}")


@dataclass
class RunSummary:
    """What `run_infer` returns and `infer --json` prints last: one run, its counters and timings."""

    model: str
    source: str
    frames: int
    skipped: int
    dropped: int
    errors: int
    reconnects: int
    alerts: int
    elapsed_s: float
    fps: float
    first_result_s: float | None
    latency_ms: dict[str, float]  # mean, median, p90 of the model's invoke
    stopped_by: str  # end of source | max frames | SIGINT | SIGTERM | signal
    saved_to: str | None = None
    camera: dict[str, Any] | None = None  # which camera and why (camera sources)
    sampling: dict[str, Any] | None = None  # live sensors: rate, jitter, flagged windows
    mqtt: dict[str, Any] | None = None  # the MQTT reporter's counters, when --mqtt

    def as_dict(self) -> dict[str, Any]:
        d = {"event": "summary", **{k: v for k, v in self.__dict__.items() if v is not None or k in ("first_result_s", "saved_to")}}
        return d


class _Saver:
    """Annotated images (file sources) or one annotated video (video/live sources), plus
    predictions.jsonl for every result. Never writes over an input, and never twice to one name:
    a directory's structure is mirrored under ``out`` (``a/img.png`` and ``b/img.png`` stay apart)
    and a name that is taken gets a numbered suffix."""

    def __init__(self, out: Path, source: Any) -> None:
        from mltool._io import ensure_writable_dir

        self.out = ensure_writable_dir(Path(out), "--save")
        self.video = source.kind in ("video", "camera", "stream", "picamera")
        self.draft = getattr(source, "draft", None)
        self.fps = source.fps or 10.0
        self.writer: Any = None
        paths = list(getattr(source, "paths", [])) + ([source.path] if hasattr(source, "path") else [])
        self.inputs = {p.resolve() for p in paths}
        self.root = _common_root(paths) if len(paths) > 1 else None
        self.used: set[Path] = set()
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.label).stem or "stream").strip("_") or "stream"
        self.video_path = self._free(self.out / f"{stem}_annotated.mp4") if self.video else None
        self.jsonl = (self.out / "predictions.jsonl").open("a")

    def _free(self, candidate: Path) -> Path:
        stem, suffix, n = candidate.stem, candidate.suffix, 1
        while candidate.resolve() in self.inputs or candidate in self.used:
            n += 1
            candidate = candidate.with_name(f"{stem}_{n}{suffix}")
        self.used.add(candidate)
        return candidate

    def _image_path(self, name: str) -> Path:
        src = Path(name)
        rel = src.relative_to(self.root) if self.root is not None and src.is_relative_to(self.root) else Path(src.name)
        target = self.out / rel.parent / (rel.stem + ".jpg")
        if target.resolve() in self.inputs:
            target = target.with_name(rel.stem + "_annotated.jpg")
        target = self._free(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add(self, result: Result) -> None:
        import cv2

        self.jsonl.write(json.dumps(result.as_dict()) + "\n")
        if result.outputs is not None:
            self._tensors(result)
        bgr = result.annotated(self._full_size(result))
        if bgr is None:
            return
        if self.video:
            if self.writer is None:
                h, w = bgr.shape[:2]
                self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            self.writer.write(bgr)
        else:
            cv2.imwrite(str(self._image_path(result.name)), bgr)

    def _full_size(self, result: Result) -> np.ndarray | None:
        """The picture at its own size when the model was fed a reduced decode (a large JPEG,
        decoded at 1/2..1/8 for a small model input): what is saved is never shrunk."""
        if not self.draft or result.image is None:
            return None
        from mltool.runtime.decode import decode_image

        try:
            full = decode_image(Path(result.name))
        except Exception:
            return None  # read once already: if it cannot be read again, the reduced one is saved
        return full if full.shape[0] > result.image.shape[0] else None

    def _tensors(self, result: Result) -> None:
        """A raw result's outputs as .npy files beside the images: ``<name>.npy`` for a model
        with one output, ``<name>.<output>.npy`` otherwise (``<name>`` numbered by frame for videos)."""
        import numpy as np

        base = self._image_path(result.name) if not self.video else self.out / f"{self.video_path.stem}_{result.index:06d}.jpg"  # type: ignore[union-attr]
        self.used.discard(base)
        outs = result.outputs or {}
        for name, arr in outs.items():
            tag = "" if len(outs) == 1 else "." + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "output")
            path = self._free(base.with_name(base.stem + tag + ".npy"))
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arr[0] if arr.ndim > 1 and arr.shape[0] == 1 else arr)

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.release()


def _common_root(paths: list[Path]) -> Path:
    import os

    return Path(os.path.commonpath([str(p.parent.resolve()) for p in paths]))


def run_infer(
    cfg: InferConfig,
    *,
    on_result: Callable[[Result], None] = lambda r: None,
    on_event: Callable[[dict[str, Any]], None] = lambda e: None,
    on_start: Callable[[dict[str, Any]], None] = lambda d: None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Run ``cfg.model`` over ``cfg.source``: ``on_result`` gets each :class:`Result`,
    ``on_event`` each source event (as its JSON record); returns the :class:`RunSummary`."""
    from mltool.runtime.predictor import Predictor

    cfg.validate()
    stop = stop or threading.Event()
    t_start = time.perf_counter()
    predictor = Predictor(cfg.model, cfg.predictor)
    stream = predictor.stream(cfg.source, every=cfg.every, events=True, hop=cfg.hop, timeout_s=cfg.timeout_s,
                              max_reconnects=cfg.max_reconnects, camera=cfg.camera)
    source = stream.source
    try:  # a live source runs a thread from here on: close it whatever fails
        saver = _Saver(Path(cfg.save), source) if cfg.save else None
        on_start({**predictor.describe(), "source": source.label, "source_kind": source.kind,
                  "camera": getattr(source, "camera", None)})
    except BaseException:
        stream.close()
        raise

    latencies: list[float] = []
    processed = alerts = flagged = 0
    first_result_s: float | None = None
    stopped_by = "end of source"
    try:
        for item in stream:
            if stop.is_set():
                stopped_by = "signal"
                break
            if isinstance(item, SourceEvent):
                on_event(item.as_dict(source.label))
                continue
            latencies.append(item.timings.invoke)
            alerts += bool(item.alert and item.alert.active)
            flagged += bool(item.sampling is not None and not item.sampling.ok)
            processed += 1
            if first_result_s is None:
                first_result_s = time.perf_counter() - t_start
            if saver is not None:
                saver.add(item)
            on_result(item)
            if cfg.max_frames is not None and processed >= cfg.max_frames:
                stopped_by = "max frames"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        stream.close()
        if saver is not None:
            saver.close()
    elapsed = time.perf_counter() - t_start
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    sampling = getattr(source, "sampling_summary", None)
    return RunSummary(
        model=str(cfg.model), source=source.label, frames=processed, skipped=stream.skipped, dropped=source.stats.dropped,
        errors=source.stats.errors, reconnects=source.stats.reconnects, alerts=alerts, elapsed_s=round(elapsed, 3),
        fps=round(processed / elapsed, 3) if elapsed > 0 else 0.0,
        first_result_s=None if first_result_s is None else round(first_result_s, 4),
        latency_ms={"mean": round(float(lat.mean()), 3), "median": round(float(np.median(lat)), 3),
                    "p90": round(float(np.percentile(lat, 90)), 3)},
        stopped_by=stopped_by, saved_to=str(cfg.save) if cfg.save else None, camera=getattr(source, "camera", None) or None,
        # live sensors: the whole run's rate and jitter, and flagged windows
        sampling={**sampling(), "flagged_windows": flagged} if sampling is not None else None,
    )
