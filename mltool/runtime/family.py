"""What kind of model a .tflite is, decided once from its tensors and metadata, with the evidence.

Families: ``classifier`` (one output of class scores), ``ssd`` (the four SSD-style outputs),
``yolo`` (Ultralytics v5, v8/v9/11 or end-to-end; see :func:`~mltool.runtime.detect.yolo_head`)
and ``raw`` (anything else: every output returned as tensors). The same decision serves
`infer`, `serve`, the Python Predictor and `inspect`; it works on the runtime's tensor specs
and on the flatbuffer's own tensor records alike (anything with ``name`` and ``shape``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mltool.runtime.classify import is_scores
from mltool.runtime.detect import YoloHead, detection_outputs, yolo_head
from mltool.runtime.model_io import image_layout

TASK_OF = {"classifier": "classification", "ssd": "detection", "yolo": "detection", "raw": "raw"}


@dataclass
class Family:
    name: str  # classifier | ssd | yolo | raw
    evidence: str
    ssd: dict[str, int] | None = None
    yolo: YoloHead | None = None

    @property
    def task(self) -> str:
        return TASK_OF[self.name]

    @property
    def label(self) -> str:
        """How `inspect` and `infer` name it: classifier, SSD, YOLO v8/v9/11, YOLOv5, YOLO end-to-end, raw."""
        if self.yolo is not None:
            return self.yolo.family
        return {"classifier": "classifier", "ssd": "SSD", "raw": "raw"}[self.name]

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"family": self.label, "task": self.task, "evidence": self.evidence}
        if self.yolo is not None:
            d["yolo"] = {"layout": self.yolo.layout, "classes": self.yolo.classes}
        return d


def input_hw(shape: tuple[int, ...] | list[int]) -> tuple[int, int] | None:
    """(height, width) of an image input of ``shape`` (NHWC or NCHW), else None."""
    layout = image_layout(list(shape))
    if layout == "NHWC":
        return int(shape[1]), int(shape[2])
    if layout == "NCHW":
        return int(shape[2]), int(shape[3])
    return None


def decide(inputs: list[Any], outputs: list[Any], names: list[list[str]] | None = None, meta: Any = None,
           ultralytics: dict[str, Any] | None = None, task: str = "auto") -> Family:
    """The family of a model with tensors ``inputs``/``outputs`` (``names``: other names for the
    outputs, see :func:`~mltool.runtime.detect.detection_outputs`; ``meta``: its
    :class:`~mltool.runtime.metadata.ModelMetadata`; ``ultralytics``: Ultralytics' own
    metadata). ``task`` forces classify, detect or raw; what cannot be forced says why in
    ``evidence`` of a ``raw`` family and the caller refuses it."""
    if task == "raw":
        return Family("raw", "--task raw: every output as a tensor")
    ssd = detection_outputs(outputs, names)
    if ssd is not None and task in ("auto", "detect"):
        roles = ", ".join(f"{r} = output {p}" for r, p in sorted(ssd.items(), key=lambda x: x[1]))
        return Family("ssd", f"four outputs {[list(o.shape) for o in outputs]}: {roles}", ssd=ssd)
    hw = input_hw(inputs[0].shape) if len(inputs) == 1 else None
    labels = getattr(meta, "labels", None) if meta is not None else None
    ultra = ultralytics or {}
    from_ultra = meta is not None and getattr(meta, "source", {}).get("kind") == "ultralytics"
    classes = len(labels) if labels and from_ultra else None
    end2end = ultra.get("end2end") if isinstance(ultra.get("end2end"), bool) else None
    if ultra.get("task") not in (None, "detect"):
        head = None
        why = f"the Ultralytics metadata says task {ultra.get('task')!r}, not detect"
    else:
        head = yolo_head(outputs, hw, classes, end2end)
        why = ""
    if head is not None and task in ("auto", "detect"):
        src = f"; metadata from {meta.source.get('file')}" if from_ultra else ""
        return Family("yolo", head.evidence + src, yolo=head)
    if task == "detect":
        return Family("raw", why or f"outputs {[list(o.shape) for o in outputs]} are neither the four SSD-style outputs "
                                    "(boxes, classes, scores, count) nor a YOLO output ([1, 4+nc, N], [1, N, 5+nc], [1, K, 6])")
    first = outputs[0] if outputs else None
    if first is not None and is_scores(tuple(first.shape)):
        single = int(first.shape[-1]) == 1 if first.shape else True
        says_classes = bool(labels) or (meta is not None and getattr(meta, "kind", None) == "classification"
                                        and getattr(meta, "source", {}).get("kind") != "tflite-metadata")
        if task == "classify" or not single or says_classes:
            return Family("classifier", f"first output {first.name} {list(first.shape)}: one score per class"
                          + (f" ({len(outputs)} outputs, the first read)" if len(outputs) > 1 else ""))
        if task == "auto" and single and len(outputs) == 1:
            return Family("raw", f"output {first.name} {list(first.shape)} is a single number and nothing names classes: "
                                 "a regression value")
    if task == "classify":
        return Family("raw", f"its first output {first.name if first else '?'} has shape "
                             f"{list(first.shape) if first else []}, not class scores ([1, N])")
    shapes = ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)
    return Family("raw", f"outputs {shapes}: not class scores, SSD or YOLO" + (f" ({why})" if why else ""))
