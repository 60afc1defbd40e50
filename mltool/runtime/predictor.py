"""One object for "load a model, feed it a frame, get typed results".

    from mltool import Predictor

    p = Predictor("model_int8.tflite", threads=2)
    result = p("photo.jpg")                      # a path, an RGB uint8 array, or a signal window
    print(result.top.label, result.top.score, result.timings.invoke)
    for r in p.stream("clip.mp4"):               # any `mltool infer` source
        print(r.index, r.top)

`infer`, `bench --pipeline`, `serve` and MQTT reporting are all built on it. A Predictor holds
one interpreter and is not thread-safe: use one per thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError, DataError, ModelError
from mltool.runtime.classify import Classification, alert_index, is_scores, probabilities, top_k
from mltool.runtime.detect import Detection, decode, decode_yolo
from mltool.runtime.labels import Labels
from mltool.runtime.options import TASKS, PredictorOptions, check_options  # noqa: F401  (check_options: the old home)
from mltool.runtime.sources import Frame, SamplingStats, Source, SourceEvent
from mltool.runtime.sources.camera import CameraOptions

SCORE_THRESHOLDS = {"ssd": 0.5, "yolo": 0.25}  # default --score-threshold per family (YOLO's is Ultralytics')


@dataclass
class Timings:
    """Milliseconds per stage of one result."""

    read: float = 0.0
    preprocess: float = 0.0
    invoke: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.read + self.preprocess + self.invoke + self.postprocess

    def as_dict(self) -> dict[str, float]:
        return {"read": round(self.read, 3), "preprocess": round(self.preprocess, 3),
                "invoke": round(self.invoke, 3), "postprocess": round(self.postprocess, 3)}


@dataclass
class Alert:
    label: str
    score: float
    threshold: float
    active: bool

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.label, "score": round(self.score, 6), "threshold": self.threshold, "active": self.active}


@dataclass
class Result:
    """What the model made of one frame, file or signal window."""

    task: str  # classification | detection | raw
    classifications: list[Classification]
    detections: list[Detection]
    alert: Alert | None
    timings: Timings
    source: str
    index: int
    name: str
    timestamp: float
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB frame it came from
    sampling: SamplingStats | None = None  # live sensors: how the window was sampled (``.ok``)
    outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)  # task raw: every output, dequantized

    @property
    def value(self) -> float | None:
        """A raw model's single output number (a regression), else None."""
        if self.outputs is None or len(self.outputs) != 1:
            return None
        (v,) = self.outputs.values()
        return float(v.reshape(-1)[0]) if v.size == 1 else None

    @property
    def top(self) -> Classification | Detection | None:
        """The best detection or class (None for raw results)."""
        items = self.detections if self.task == "detection" else self.classifications
        return items[0] if items else None

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the source image, for mapping boxes to pixels."""
        return None if self.image is None else (int(self.image.shape[1]), int(self.image.shape[0]))

    def as_dict(self) -> dict[str, Any]:
        """The JSON record `mltool infer --json` prints."""
        d: dict[str, Any] = {"source": self.source, "index": self.index, "name": self.name,
                             "timestamp": round(self.timestamp, 6)}
        if self.task == "detection":
            d["detections"] = [{"label": x.label, "score": x.score, "box": list(x.box), "class": x.index} for x in self.detections]
        elif self.task == "raw":
            d["outputs"] = {k: tensor_json(v) for k, v in (self.outputs or {}).items()}
            if self.value is not None:
                d["value"] = round(self.value, 6)
        else:
            d["predictions"] = [{"label": c.label, "score": c.score, "index": c.index} for c in self.classifications]
            if self.alert is not None:
                d["alert"] = self.alert.as_dict()
        d["latency_ms"] = round(self.timings.invoke, 3)
        d["timings_ms"] = self.timings.as_dict()
        if self.sampling is not None:
            d["sampling"] = self.sampling.as_dict()
        return d

    def summary_lines(self) -> list[str]:
        """The short text drawn on annotated frames."""
        if self.task == "detection":
            return [f"{len(self.detections)} objects"] + [f"{d.label} {d.score:.2f}" for d in self.detections[:3]]
        if self.task == "raw":
            return [describe_tensors(self.outputs or {}, self.value)]
        top = self.classifications[0]
        lines = [f"{top.label} {top.score:.2f}"]
        if self.alert is not None and self.alert.active:
            lines.append(f"ALERT {self.alert.label} {self.alert.score:.2f}")
        return lines

    def annotated(self, image: np.ndarray | None = None) -> np.ndarray | None:
        """A BGR copy of the frame (or of ``image``, the same picture at another size: boxes are
        relative) with the results drawn on it (None for signals)."""
        image = self.image if image is None else image
        if image is None:
            return None
        from mltool.runtime.draw import annotate

        return annotate(image, self.summary_lines(), self.detections if self.task == "detection" else None,
                        alert=bool(self.alert and self.alert.active), strip_lines=4 if self.task == "detection" else 2)


def tensor_json(x: np.ndarray) -> Any:
    """A dequantized output as nested lists (values rounded to 6 decimals, as serve answers), the
    batch dimension dropped."""
    a = x[0] if x.ndim > 1 and x.shape[0] == 1 else x
    return np.round(a.astype(np.float64), 6).tolist()


def describe_tensors(outputs: dict[str, np.ndarray], value: float | None = None) -> str:
    """One short line for raw outputs: the value of a regression, else each output's shape and range."""
    if value is not None:
        return f"value {value:.4g}"
    parts = []
    for k, v in list(outputs.items())[:3]:
        rng = f" {float(v.min()):.3g}..{float(v.max()):.3g}" if v.size else ""
        parts.append(f"{k} {list(v.shape)}{rng}")
    return ", ".join(parts) + (f" (+{len(outputs) - 3} more)" if len(outputs) > 3 else "")


class Predictor:
    """A ``.tflite`` model ready to run: its input adapter, labels and output decoding decided once.

    ``labels`` (a file or a list), ``mean`` and ``std`` override what the model's metadata says,
    so models from elsewhere work too. ``task`` is ``auto`` (what the outputs say: SSD or YOLO
    detection, classification, else raw tensors), ``classify``, ``detect`` or ``raw``.
    ``score_threshold`` defaults to 0.5 for SSD and 0.25 for YOLO; ``iou``, ``max_det`` and
    ``agnostic`` steer YOLO's NMS.
    """

    def __init__(self, model: str | Path, options: PredictorOptions | None = None, **kwargs: Any) -> None:
        """``options`` (a :class:`~mltool.runtime.options.PredictorOptions`), or its fields as
        keyword arguments: ``Predictor("m.tflite", threads=2, top_k=5)``."""
        from mltool.runtime.family import decide
        from mltool.runtime.interpreter import load_model
        from mltool.runtime.model_io import input_adapter

        if options is not None and kwargs:
            raise ConfigError("give the Predictor options or keyword arguments, not both", "put them all in PredictorOptions")
        opts = options if options is not None else PredictorOptions.from_dict(kwargs)
        opts.validate()
        self.options = opts
        (threads, labels, mean, std, task, top_k, score_threshold, alert_threshold, alert_class, delegate, delegate_options,
         input_shape, window, iou, max_det, agnostic) = (
            opts.threads, opts.labels, opts.mean, opts.std, opts.task, opts.top_k, opts.score_threshold, opts.alert_threshold,
            opts.alert_class, opts.delegate, opts.delegate_options, opts.input_shape, opts.window, opts.iou, opts.max_det,
            opts.agnostic)
        shapes = [input_shape] if input_shape and isinstance(input_shape[0], int) else input_shape  # type: ignore[list-item]
        self.model = load_model(model, threads=threads, delegate=delegate, delegate_options=delegate_options,
                                input_shapes=shapes)  # type: ignore[arg-type]
        meta = self.model.description
        self.family = decide(self.model.inputs, self.model.outputs, self._output_names(), meta,
                             self.model.ultralytics[0] if self.model.ultralytics else None, task)
        yolo = self.family.name == "yolo"
        self.input = input_adapter(self.model, mean, std, shape_given=bool(shapes), letterbox=yolo,
                                   default_norm=([0.0], [255.0]) if yolo else None)
        if window is not None and self.input.kind == "signal":
            self._fix_window(window)
        self.notes = [*self.model.problems, *self.input.notes]
        if isinstance(labels, (str, Path)):
            self.labels = Labels.from_file(labels)
        elif labels is not None:
            self.labels = Labels.from_list(labels)
        else:
            self.labels = Labels.from_list(meta.labels if meta is not None and meta.labels else [])
        mapping = self.family.ssd
        if mapping is not None and labels is None and self.labels.name(0) == "???":
            # TF1 SSD label maps start with a background "???" line the class outputs skip
            self.labels = Labels.from_list(self.labels.names[1:])
        if task == "detect" and self.family.task != "detection":
            raise ConfigError(f"{self.model.path} is not a detector mltool can decode: {self.family.evidence}",
                              "use --task raw to get its outputs as tensors (or --task classify)")
        if task == "classify" and self.family.task != "classification":
            raise ConfigError(f"{self.model.path} is not a classifier: {self.family.evidence}",
                              "use --task raw to get its outputs as tensors (or --task detect)")
        self.task = self.family.task
        first = self.model.outputs[0]
        if self.task == "classification" and not is_scores(first.shape):  # defensive: decide() checked it
            raise ConfigError(f"{self.model.path}: first output {first.name} {list(first.shape)} is not class scores",
                              "use --task raw")
        self._detection = mapping
        self._yolo = self.family.yolo
        self.iou, self.max_det, self.agnostic = iou, max_det, agnostic
        self.top_k = top_k
        self.score_threshold = score_threshold if score_threshold is not None else SCORE_THRESHOLDS.get(self.family.name, 0.5)
        self._names = self._tensor_names()
        self.alert_threshold = alert_threshold
        n_classes = int(np.prod(first.shape))
        self.alert_index = alert_index(self.labels, alert_class, n_classes) if alert_threshold is not None else None
        if self.alert_index is not None and self.alert_index >= n_classes:
            raise ConfigError(f"the alert watches class {self.alert_index}, but {self.model.path} has {n_classes} outputs",
                              "pass --alert-class with one of the model's classes")

    def _fix_window(self, window: int) -> None:
        """A signal model run on windows of ``window`` samples (dynamic-length models are resized to it)."""
        if self.input.variable_length:
            shape = [1, window] if self.input.tensor_rank == 2 else [1, window, self.input.channels]
            self.model.resize_input(shape)
            self.input.spec = self.model.inputs[0]
            self.input.variable_length = False
            self.input.shape = (window, self.input.channels)
        elif window != self.input.window:
            raise ConfigError(f"--window {window} does not fit {self.model.path}, whose input takes {self.input.window} samples",
                              "drop --window (it is for models with a dynamic input length)")

    def _output_names(self) -> list[list[str]]:
        """Names for the outputs besides the tensors' own: the signature's, then the TFLite Metadata's."""
        out = []
        sigs = self.model.info.signatures
        if sigs and sigs[0].get("output_tensors"):
            by_tensor = dict(zip(sigs[0]["output_tensors"], sigs[0]["outputs"]))
            out.append([by_tensor.get(o.index) or "" for o in self.model.outputs])
        if self.model.standard is not None and self.model.standard.output_names:
            out.append(self.model.standard.output_names)
        return out

    def _tensor_names(self) -> list[str]:
        """One unique name per output, as the signature names them (else the tensor's own)."""
        sig = self._output_names()
        names = sig[0] if sig and len(sig[0]) == len(self.model.outputs) else []
        out: list[str] = []
        for k, o in enumerate(self.model.outputs):
            name = (names[k] if k < len(names) and names[k] else "") or o.name or f"output_{k}"
            out.append(name if name not in out else f"{name}_{k}")
        return out

    @property
    def output_names(self) -> list[str]:
        return list(self._names)

    # ------------------------------------------------------------------ what it is
    @property
    def kind(self) -> str:
        """image | signal"""
        return self.input.kind

    @property
    def path(self) -> Path:
        return self.model.path

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"model": str(m.path), "runtime": f"{m.runtime} {m.runtime_version}",
                "input": list(m.inputs[0].shape), "input_dtype": str(m.inputs[0].dtype),
                "task": self.task, "kind": self.kind, "labels": len(self.labels), "raw_pixels": self.input.raw_quantized,
                "family": self.family.label, "evidence": self.family.evidence, "layout": self.input.layout,
                "score_threshold": self.score_threshold if self.task == "detection" else None,
                "delegate": m.delegate, "notes": self.notes}

    # ------------------------------------------------------------------ running it
    def __call__(self, x: np.ndarray | str | Path, *, name: str | None = None) -> Result:
        """One result for an RGB uint8 image (H x W x 3), a signal window, or an image file."""
        t0 = time.perf_counter()
        if isinstance(x, (str, Path)):
            label = str(x)
            x = self._read(Path(x))
        else:
            label = name or "array"
        read_ms = (time.perf_counter() - t0) * 1000
        x = np.asarray(x)
        if self.kind == "image":
            frame = Frame(0, name or label, time.time(), image=x, read_ms=read_ms)
        else:
            frame = Frame(0, name or label, time.time(), signal=x.astype(np.float32).reshape(-1), read_ms=read_ms)
        return self.predict_frame(frame, source=label)

    def _draft(self) -> tuple[int, int] | None:
        """(W, H) of the model input: big JPEG files are decoded reduced to it, as training read them."""
        return (self.input.shape[1], self.input.shape[0]) if self.kind == "image" else None

    def _read(self, path: Path) -> np.ndarray:
        if self.kind == "image":
            from mltool.runtime.decode import decode_image

            return decode_image(path, self._draft())
        from mltool.runtime.decode import read_signal

        sig = read_signal(path, channels=self.input.channels)
        if self.input.window is not None and len(sig) != self.input.window:
            raise DataError(f"signal file {path} has {len(sig)} samples, the model takes windows of {self.input.window}",
                            "use Predictor.stream(path) to run every window of a longer recording")
        return sig

    def prepare(self, frame: Frame) -> np.ndarray:
        """The frame as the model's input tensor, (1, ...) in the tensor's own dtype."""
        return self.input.image(frame.image) if frame.image is not None else self.input.signal(frame.signal)  # type: ignore[arg-type]

    def decode(self, outputs: list[np.ndarray], size: tuple[int, int] | None = None
               ) -> tuple[list[Classification], list[Detection], Alert | None]:
        """One sample's dequantized outputs as classifications or detections, and the alert.
        ``size``: (width, height) of the picture the input was made from (YOLO boxes are mapped
        back through the letterbox; without it they are relative to the input itself)."""
        classes: list[Classification] = []
        dets: list[Detection] = []
        alert = None
        if self._detection is not None:
            dets = decode(outputs, self._detection, self.labels, self.score_threshold)
        elif self._yolo is not None:
            h, w = self.input.shape[0], self.input.shape[1]
            box = self.input.letterbox(*size) if size is not None else None
            dets = decode_yolo(outputs[self._yolo.output], self._yolo, self.labels, self.score_threshold, input_hw=(h, w),
                               source=box, iou=self.iou, max_det=self.max_det, agnostic=self.agnostic)
        elif self.task == "raw":
            pass
        else:
            probs = probabilities(outputs[0])
            classes = top_k(probs, self.labels, self.top_k)
            if self.alert_index is not None:
                score = float(probs[self.alert_index])
                alert = Alert(self.labels.name(self.alert_index), score, self.alert_threshold,  # type: ignore[arg-type]
                              score >= self.alert_threshold)  # type: ignore[operator]
        return classes, dets, alert

    def tensors(self, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One sample's dequantized outputs by name (copies: the interpreter reuses its buffers)."""
        return {n: np.array(o, np.float32) for n, o in zip(self._names, outputs)}

    def predict_frame(self, frame: Frame, source: str = "") -> Result:
        return self.predict_batch([frame], source)[0]

    def predict_batch(self, frames: list[Frame], source: str = "") -> list[Result]:
        """One result per frame. Several frames go through one invoke, which needs a model whose
        batch dimension can grow (``serve``'s micro-batching)."""
        t0 = time.perf_counter()
        xs = [self.prepare(f) for f in frames]
        t1 = time.perf_counter()
        outputs = self.model.run_prepared(xs[0] if len(xs) == 1 else np.concatenate(xs))
        t2 = time.perf_counter()
        results = []
        for i, frame in enumerate(frames):
            t = time.perf_counter()
            mine = outputs if len(frames) == 1 else [o[i : i + 1] for o in outputs]
            size = (frame.image.shape[1], frame.image.shape[0]) if frame.image is not None else None
            classes, dets, alert = self.decode(mine, size)
            tensors = self.tensors(mine) if self.task == "raw" else None
            timings = Timings(frame.read_ms, (t1 - t0) * 1000 / len(frames), (t2 - t1) * 1000, (time.perf_counter() - t) * 1000)
            results.append(Result(self.task, classes, dets, alert, timings, source, frame.index, frame.name,
                                  frame.timestamp, image=frame.image, sampling=frame.sampling, outputs=tensors))
        return results

    def stream(self, source: str | Source, *, every: int = 1, events: bool = False, hop: int | None = None,
               timeout_s: float = 5.0, max_reconnects: int | None = None, camera: CameraOptions | None = None) -> Stream:
        """Results for every frame of ``source`` (anything `mltool infer` takes, or an open
        :class:`~mltool.runtime.sources.Source`); with ``events=True`` also the source's events
        (errors, lost, reconnected, stalled). Use it as an iterator or a context manager."""
        if isinstance(source, str):
            from mltool.runtime.sources import open_source

            source = open_source(source, kind=self.kind, signal_window=self.input.window, channels=self.input.channels,
                                 hop=hop, rate=self.input.rate_hz, timeout_s=timeout_s, max_reconnects=max_reconnects,
                                 draft=self._draft(), camera=camera)
        if self.kind == "image" and source.kind == "signal":
            source.close()
            raise ConfigError(f"{self.model.path} takes images but {source.label} is a signal source",
                              "pass an image/video/camera/stream source")
        return Stream(self, source, every=every, events=events)

    def close(self) -> None:
        self.model.interpreter = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stream:
    """A Predictor over a source: iterate for results; ``skipped`` counts frames left out by
    ``every``; ``source.stats`` has the source's own counters. The one loop `infer` and `serve
    --source` share: a frame that fails alone (a bad picture, NaN scores) is an ``error`` event and
    the stream goes on; a model that cannot run at all ends it. ``run`` replaces how one frame is
    run (serve runs it on its engine's live slot, so a hot reload swaps the model under it)."""

    def __init__(self, predictor: Predictor | None, source: Source, *, every: int = 1, events: bool = False,
                 run: Any = None) -> None:
        if every < 1:
            raise ConfigError(f"--every {every} must be at least 1", "use --every 1 to process every frame")
        self.predictor = predictor
        self.source = source
        self.every = every
        self.events = events
        self.skipped = 0
        self.run = run or (lambda frame: predictor.predict_frame(frame, source=source.label))  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[Result | SourceEvent]:
        seen = 0
        for item in self.source:
            if isinstance(item, SourceEvent):
                if self.events:
                    yield item
                continue
            seen += 1
            if (seen - 1) % self.every:
                self.skipped += 1
                continue
            try:
                result = self.run(item)
            except ModelError:
                raise  # the model itself cannot run: every frame would fail
            except Exception as exc:  # this frame only (a bad picture, NaN scores): report it and go on
                from mltool._silence import debug

                if debug():
                    raise
                self.source.stats.errors += 1
                if self.events:
                    text = exc.one_line() if isinstance(exc, DataError) else f"{item.name}: {type(exc).__name__}: {str(exc)[:200]}"
                    yield SourceEvent("error", text, item.name)
                continue
            yield result

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
