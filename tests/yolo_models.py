"""Tiny YOLO-convention models built with Keras, whose outputs are known functions of the input.

Every model averages its (letterboxed, /255) input per colour channel and maps the three means
through one fixed affine layer to the whole YOLO output, so each box is a constant and each score
is a known multiple of a channel mean. The input is 64x64: 84 grid cells (8x8 + 4x4 + 2x2).

Predictions, in input pixels (x1, y1, x2, y2):

- A (8, 16, 40, 40), class 0, score = red mean
- B (10, 18, 42, 42), class 0, score = 0.8 x red mean: IoU 0.75 with A, dropped by NMS
- C (9, 17, 41, 41), class 1, score = 0.9 x red mean: IoU 0.87 with A, kept unless --agnostic
- D (44, 30, 60, 50), class 2, score = blue mean: below 0.25 for a red picture

A solid red 320x240 picture is letterboxed to 64x48 at y = 8 (grey bands above and below), so
the red mean is 0.75 + 0.25 x 114/255 and the boxes in the picture are 5 x (x, y - 8).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

SIZE = 64
CELLS = 84  # grid_cells(64, 64)
NAMES = ["red", "green", "blue"]
BOXES = {"A": (8, 16, 40, 40), "B": (10, 18, 42, 42), "C": (9, 17, 41, 41), "D": (44, 30, 60, 50)}
# score = coefficient x channel mean (0 red, 1 green, 2 blue), and class
SCORES = {"A": (1.0, 0, 0), "B": (0.8, 0, 0), "C": (0.9, 0, 1), "D": (1.0, 2, 2)}
RED_MEAN = 0.75 + 0.25 * 114 / 255
BLUE_MEAN = 0.25 * 114 / 255


def expected(width: int = 320, height: int = 240) -> dict[str, tuple[float, float, float, float]]:
    """Boxes A..D in a ``width`` x ``height`` picture's pixels (x1, y1, x2, y2), worked out
    independently of mltool: scale r, padding, then clipped."""
    r = min(SIZE / width, SIZE / height)
    left, top = (SIZE - round(width * r)) / 2, (SIZE - round(height * r)) / 2
    out = {}
    for k, (x1, y1, x2, y2) in BOXES.items():
        xs = [min(max((x - int(left)) / r, 0), width) for x in (x1, x2)]
        ys = [min(max((y - int(top)) / r, 0), height) for y in (y1, y2)]
        out[k] = (xs[0], ys[0], xs[1], ys[1])
    return out


def _affine(layout: str, pixels: bool, rows: int = 10) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(weights (3, n), bias (n,), output shape) of the layer producing a ``layout`` output."""
    nc = len(NAMES)
    scale = 1.0 if pixels else 1.0 / SIZE
    if layout == "v8":
        shape = (4 + nc, CELLS)
    elif layout == "v5":
        shape = (3 * CELLS, 5 + nc)
    else:
        shape = (rows, 6)
    w = np.zeros((3, *shape), np.float32)
    b = np.zeros(shape, np.float32)
    order = ["A", "B", "C", "D"] if layout != "end2end" else ["A", "C", "D"]  # end-to-end: NMS already applied
    for anchor, key in enumerate(order):
        x1, y1, x2, y2 = BOXES[key]
        coef, channel, cls = SCORES[key]
        if layout == "end2end":
            b[anchor, :4] = np.array([x1, y1, x2, y2]) * scale
            w[channel, anchor, 4] = coef
            b[anchor, 5] = cls
            continue
        xywh = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]) * scale
        if layout == "v8":
            b[:4, anchor] = xywh
            w[channel, 4 + cls, anchor] = coef
        else:
            b[anchor, :4] = xywh
            w[channel, anchor, 4] = coef  # objectness
            b[anchor, 5 + cls] = 1.0  # class probability
    return w.reshape(3, -1), b.reshape(-1), shape


def build(layout: str, *, nchw: bool = False, pixels: bool = False, quant: str | None = None, rows: int = 10) -> bytes:
    """A .tflite with a ``layout`` (v8 | v5 | end2end) output; ``quant``: None (float32),
    dynamic, float16, int8 (integer I/O) or int8-float-io."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    w, b, shape = _affine(layout, pixels, rows)
    inp = keras.Input((3, SIZE, SIZE) if nchw else (SIZE, SIZE, 3), name="images")
    means = keras.layers.GlobalAveragePooling2D(data_format="channels_first" if nchw else "channels_last")(inp)
    dense = keras.layers.Dense(w.shape[1])
    out = keras.layers.Reshape(shape)(dense(means))
    model = keras.Model(inp, out)
    dense.set_weights([w, b])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if quant in ("int8", "int8-float-io"):
        rng = np.random.default_rng(0)
        shape = (1, *model.input_shape[1:])
        solid = (1, 3, 1, 1) if nchw else (1, 1, 1, 3)  # solid colours: channel means over all of 0..1
        conv.representative_dataset = lambda: ([np.broadcast_to(rng.random(solid, dtype=np.float32), shape).copy()]
                                               for _ in range(64))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quant == "int8":
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def build_raw(kind: str) -> bytes:
    """Non-detector models: ``regression`` ([1, 1] = red mean x 2 + 1) or ``multi`` (two outputs:
    the three means [1, 3] and a [1, 2, 2] map of 1 + red mean)."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    inp = keras.Input((8, 8, 3), name="images")
    means = keras.layers.GlobalAveragePooling2D()(inp)
    if kind == "regression":
        dense = keras.layers.Dense(1, name="value")
        model = keras.Model(inp, dense(means))
        dense.set_weights([np.array([[2.0], [0.0], [0.0]], np.float32), np.array([1.0], np.float32)])
    else:
        dense = keras.layers.Dense(4)
        grid = keras.layers.Reshape((2, 2), name="grid")(dense(means))
        model = keras.Model(inp, {"means": keras.layers.Identity(name="means")(means), "grid": grid})
        dense.set_weights([np.array([[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32), np.ones(4, np.float32)])
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def add_metadata_entry(tflite: bytes, name: str, payload: bytes) -> bytes:
    """``tflite`` with one more metadata-list entry (as TFLite Metadata writers add theirs)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_metadata_with_file(file_name: str) -> bytes:
    """A minimal TFLite Metadata flatbuffer (identifier M001) naming ``file_name`` as the output's
    TENSOR_AXIS_LABELS file, as Ultralytics 8.0-8.3.116 wrote temp_meta.txt via tflite-support."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    fname = b.CreateString(file_name)
    b.StartObject(5)  # AssociatedFile
    b.PrependUOffsetTRelativeSlot(0, fname, 0)
    b.PrependInt8Slot(2, 2, 0)  # TENSOR_AXIS_LABELS
    assoc = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(assoc)
    files = b.EndVector()
    tname = b.CreateString("output")
    b.StartObject(8)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, tname, 0)
    b.PrependUOffsetTRelativeSlot(6, files, 0)
    tensor = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(tensor)
    outputs = b.EndVector()
    b.StartObject(7)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(3, outputs, 0)
    sg = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(sg)
    sgs = b.EndVector()
    mname = b.CreateString("yolo")
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, mname, 0)
    b.PrependUOffsetTRelativeSlot(3, sgs, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def append_zip(tflite: bytes, files: dict[str, str]) -> bytes:
    """``tflite`` with a zip archive of ``files`` appended, as Ultralytics and tflite-support pack them."""
    buf = io.BytesIO()
    buf.write(tflite)
    with zipfile.ZipFile(buf, "a") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def ultralytics_json(**extra: object) -> str:
    return json.dumps({"description": "Ultralytics YOLO11n model (test double)", "author": "tests", "task": "detect",
                       "stride": 32, "batch": 1, "imgsz": [SIZE, SIZE], "names": {str(i): n for i, n in enumerate(NAMES)},
                       "args": {"batch": 1, "half": False, "int8": False, "nms": False}, "channels": 3, **extra})


def legacy_literal() -> str:
    return str({"description": "Ultralytics YOLOv8n model", "author": "Ultralytics", "stride": 32, "task": "detect",
                "batch": 1, "imgsz": [SIZE, SIZE], "names": dict(enumerate(NAMES))})


def build_all(out: Path) -> dict[str, Path]:
    """Every fixture model, written under ``out``: name -> path."""
    models: dict[str, bytes] = {}
    models["v8_nhwc"] = append_zip(build("v8"), {"metadata.json": ultralytics_json()})
    models["v8_nchw"] = append_zip(build("v8", nchw=True), {"metadata.json": ultralytics_json()})
    models["v8_pixels_nometa"] = build("v8", pixels=True)
    models["v5_nhwc"] = append_zip(build("v5"), {"meta.txt": str({"stride": 32, "names": dict(enumerate(NAMES))})})
    legacy = add_metadata_entry(build("end2end"), "TFLITE_METADATA", tflite_metadata_with_file("temp_meta.txt"))
    models["e2e_nhwc_legacy"] = append_zip(legacy, {"temp_meta.txt": legacy_literal()})
    models["e2e_nchw_pixels"] = append_zip(build("end2end", nchw=True, pixels=True), {"metadata.json": ultralytics_json(end2end=True)})
    models["v8_int8"] = build("v8", quant="int8")
    models["v8_int8_float_io"] = build("v8", quant="int8-float-io")
    models["v8_dynamic"] = build("v8", quant="dynamic")
    models["v8_float16"] = build("v8", quant="float16")
    models["regression"] = build_raw("regression")
    models["multi"] = build_raw("multi")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in models.items():
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths
