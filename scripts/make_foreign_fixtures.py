#!/usr/bin/env python
"""Make the foreign-model corpus in tests/data/foreign/: small .tflite files mltool did not
write, made the way other projects make theirs.

Stage 1 (this venv, TensorFlow): plain `tf.lite.TFLiteConverter` output — classifiers, an audio
classifier taking [1, 16000], a dynamic-length [1, -1] model, a [1, 128, 3] three-channel model,
and SSD detectors ending in the real TFLite_Detection_PostProcess op, written with their outputs
in the TF1 order (boxes, classes, scores, count; no signature, as tflite_convert wrote frozen
graphs) and in the TF2 Object Detection API order (scores, boxes, count, classes under opaque
StatefulPartitionedCall names, signature outputs output_0..3).

Stage 2 (a second venv with tflite-support 0.4.4, the library Model Maker uses; it needs
protobuf<4, so it cannot share TensorFlow's venv): the official metadata writers add standard
TFLite Metadata with normalisation and packed label files, as TF Hub / Model Maker models carry.

Usage:
    python3 -m venv /tmp/tfs && /tmp/tfs/bin/pip install tflite-support==0.4.4 "numpy<2" "protobuf<4"
    (Debian also needs libusb-1.0-0 for tflite-support's native module)
    .venv/bin/python scripts/make_foreign_fixtures.py --tfs-python /tmp/tfs/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "foreign"
CLASSES = ["cat", "dog", "bird", "fish", "horse"]
SOUNDS = ["silence", "hum", "click"]
OBJECTS = ["red thing", "green thing", "blue thing"]


def _tf():  # noqa: ANN202
    from mltool._tf import import_tensorflow

    return import_tensorflow()


def _convert(converter) -> bytes:  # noqa: ANN001
    from mltool._silence import silenced

    with silenced(stdout=True):
        return converter.convert()


def classifiers() -> None:
    tf = _tf()
    import keras

    keras.utils.set_random_seed(7)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    model = keras.Model(inp, out)
    (OUT / "base_classifier_float.tflite").write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)] for _ in range(50))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    (OUT / "base_classifier_uint8.tflite").write_bytes(_convert(conv))


def signals() -> None:
    tf = _tf()
    import keras

    keras.utils.set_random_seed(8)
    inp = keras.Input((16000,))
    x = keras.layers.Reshape((16000, 1))(inp)
    x = keras.layers.Conv1D(4, 16, strides=16, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(len(SOUNDS), activation="softmax")(x))
    (OUT / "base_audio_1x16000.tflite").write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))

    inp = keras.Input((None,))  # any number of samples: shape signature [-1, -1]
    x = keras.layers.Reshape((-1, 1))(inp)
    x = keras.layers.Conv1D(4, 9, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    (OUT / "audio_dynamic_length.tflite").write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))

    inp = keras.Input((128, 3))
    x = keras.layers.Conv1D(4, 5, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    (OUT / "signal_128x3.tflite").write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))


def _implements(num_classes: int) -> str:
    """The attributes TFLite's converter reads to emit its TFLite_Detection_PostProcess op."""
    attrs = {"max_detections": ("i", 5), "max_classes_per_detection": ("i", 1), "detections_per_class": ("i", 1),
             "use_regular_nms": ("b", "false"), "nms_score_threshold": ("f", 0.3), "nms_iou_threshold": ("f", 0.5),
             "num_classes": ("i", num_classes), "y_scale": ("f", 10.0), "x_scale": ("f", 10.0),
             "h_scale": ("f", 5.0), "w_scale": ("f", 5.0)}
    return " ".join(['name: "TFLite_Detection_PostProcess"']
                    + ['attr { key: "%s" value { %s: %s } }' % (k, t, v) for k, (t, v) in attrs.items()])


def detectors() -> None:
    """SSD heads on a 4x4 anchor grid: each cell scores the three classes by its mean colour
    (red, green, blue), so a picture with a coloured quadrant gives a known detection."""
    tf = _tf()
    from tensorflow.lite.python import schema_py_generated as schema

    n_anchors, n_cls = 16, len(OBJECTS)
    grid = np.linspace(0.125, 0.875, 4)
    anchors = np.array([[y, x, 0.25, 0.25] for y in grid for x in grid], np.float32)

    @tf.function(experimental_implements=_implements(n_cls))
    def postprocess(box_encodings, class_predictions, anchor_boxes):  # noqa: ANN001, ANN202
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    def heads(x):  # noqa: ANN001, ANN202
        cells = tf.reshape(tf.nn.avg_pool2d(x, 8, 8, "VALID"), [1, n_anchors, 3])
        logits = tf.concat([tf.zeros([1, n_anchors, 1]), (cells - 0.5) * 12.0], axis=-1)  # background + 3
        return postprocess(tf.zeros([1, n_anchors, 4]), tf.sigmoid(logits), tf.constant(anchors))

    class Tf1(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
        def serve(self, x):  # noqa: ANN001, ANN202
            return heads(x)  # boxes, classes, scores, count

    class Tf2(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
        def serve(self, x):  # noqa: ANN001, ANN202
            boxes, classes, scores, count = heads(x)
            return count, scores, classes, boxes  # signature output_0..3, as the TF2 OD API exports them

    def converted(module) -> schema.ModelT:  # noqa: ANN001
        conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
        conv.allow_custom_ops = True
        return schema.ModelT.InitFromPackedBuf(bytearray(_convert(conv)), 0)

    def pack(model: schema.ModelT) -> bytes:
        import flatbuffers

        b = flatbuffers.Builder(4096)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def post_outputs(model: schema.ModelT) -> list[int]:
        """The four output tensors of the TFLite_Detection_PostProcess op, in its own order."""
        sg = model.subgraphs[0]
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex].customCode
            if code in (b"TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess"):
                return list(op.outputs)
        raise SystemExit("no TFLite_Detection_PostProcess op in the converted model")

    # TF1: as tflite_convert wrote frozen graphs: no signature, outputs in the op's order and named after it.
    m = converted(Tf1())
    boxes, classes, scores, count = post_outputs(m)
    sg = m.subgraphs[0]
    sg.outputs = [boxes, classes, scores, count]
    for i, t in enumerate(sg.outputs):
        sg.tensors[t].name = "TFLite_Detection_PostProcess" + (f":{i}" if i else "")
    m.signatureDefs = []
    (OUT / "base_ssd_tf1_order.tflite").write_bytes(pack(m))

    # TF2 OD API: outputs scores, boxes, count, classes under opaque names; the signature's
    # output_0..3 (count, scores, classes, boxes) is the only thing that says which is which.
    m = converted(Tf2())
    boxes, classes, scores, count = post_outputs(m)
    sg = m.subgraphs[0]
    sg.outputs = [scores, boxes, count, classes]
    for i, t in enumerate(sg.outputs):
        sg.tensors[t].name = f"StatefulPartitionedCall:{i}"
    (OUT / "ssd_tf2_order.tflite").write_bytes(pack(m))

    # And straight from the converter, untouched: whatever order it picks, with its signature.
    conv = tf.lite.TFLiteConverter.from_concrete_functions([Tf1().serve.get_concrete_function()], Tf1())
    conv.allow_custom_ops = True
    (OUT / "ssd_converter_order.tflite").write_bytes(_convert(conv))


def label_files() -> None:
    (OUT / "labels_classifier.txt").write_text("\n".join(CLASSES) + "\n")
    (OUT / "labels_sounds.txt").write_text("\n".join(SOUNDS) + "\n")
    (OUT / "labels_objects.txt").write_text("\n".join(OBJECTS) + "\n")
    # Coral/TFLite detection style: ids with a gap, CRLF, BOM
    (OUT / "labels_objects_ids.txt").write_bytes("\ufeff0  red thing\r\n2  blue thing\r\n".encode())


STAGE2 = r"""
import json, sys
from tflite_support.metadata_writers import audio_classifier, image_classifier, object_detector, writer_utils
out = sys.argv[1]
def save(name, writer):
    with open(f"{out}/{name}", "wb") as fh:
        fh.write(writer.populate())
read = lambda n: writer_utils.load_file(f"{out}/{n}")
save("classifier_tfhub_style.tflite", image_classifier.MetadataWriter.create_for_inference(
    read("base_classifier_float.tflite"), [127.5], [127.5], [f"{out}/labels_classifier.txt"]))
save("classifier_modelmaker_uint8.tflite", image_classifier.MetadataWriter.create_for_inference(
    read("base_classifier_uint8.tflite"), [127.5], [127.5], [f"{out}/labels_classifier.txt"]))
save("audio_classifier_1x16000.tflite", audio_classifier.MetadataWriter.create_for_inference(
    read("base_audio_1x16000.tflite"), 16000, 1, [f"{out}/labels_sounds.txt"]))
save("ssd_tf1_order_metadata.tflite", object_detector.MetadataWriter.create_for_inference(
    read("base_ssd_tf1_order.tflite"), [0.0], [255.0], [f"{out}/labels_objects.txt"]))
print(json.dumps("ok"))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfs-python", required=True, help="python of a venv with tflite-support 0.4.4")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    classifiers()
    signals()
    detectors()
    label_files()
    proc = subprocess.run([args.tfs_python, "-c", STAGE2, str(OUT)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    (OUT / "base_classifier_float.tflite").rename(OUT / "classifier_plain_float.tflite")
    (OUT / "base_ssd_tf1_order.tflite").rename(OUT / "ssd_tf1_order.tflite")
    for f in ("base_classifier_uint8.tflite", "base_audio_1x16000.tflite"):
        (OUT / f).unlink()
    print(json.dumps(sorted(p.name for p in OUT.iterdir())))


if __name__ == "__main__":
    main()
