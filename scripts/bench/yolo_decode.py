#!/usr/bin/env python
"""Issue #17 measurements, side by side in one run:

1. YOLO post-processing per frame (decode + NMS + un-letterbox, what `infer` does after invoke)
   on a [1, 84, 8400] output (YOLOv8/11 at 640, 80 classes): a sparse scene (5 objects) and a
   dense one (300 objects), each object seen by 3 overlapping anchors as real heads do. Beside
   it, the invoke time of a same-sized model (640x640x3 in, [1, 84, 8400] out: a YOLOv8n-shaped
   stand-in with random weights) and the post-processing's share of the frame.
   Target: <= 1.5 ms per frame.
2. `mltool infer` overhead beyond invoke for that model on a 640x480 video (read + decode +
   letterbox + postprocess), measured as `device_report.py` measures MobileNetV2
   (`mltool bench --pipeline`), float32 and int8.

Usage: .venv/bin/python scripts/bench/yolo_decode.py [--runs 200]
The stand-in models are converted once into runs/bench/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def scene(objects: int, rng: np.random.Generator, classes: int = 80, size: int = 640) -> np.ndarray:
    """A [1, 4 + classes, 8400] output, boxes normalised (as TFLite exports give them): low
    background scores everywhere, and ``objects`` objects on a grid, each predicted by 3 anchors
    with jittered boxes and falling scores (NMS keeps one per object)."""
    out = np.zeros((1, 4 + classes, 8400), np.float32)
    out[0, :4] = rng.uniform(0, 1, (4, 8400)) * [[1], [1], [0.2], [0.2]]
    out[0, 4:] = rng.uniform(0, 0.05, (classes, 8400))  # sigmoid outputs of empty cells
    cols = int(np.ceil(np.sqrt(objects * 4 / 3)))
    rows = int(np.ceil(objects / cols))
    cw, ch = size / cols, size / rows
    anchors = rng.choice(8400, objects * 3, replace=False)
    for k in range(objects):
        cx, cy = (k % cols + 0.5) * cw, (k // cols + 0.5) * ch
        w, h = cw * rng.uniform(0.5, 0.8), ch * rng.uniform(0.5, 0.8)
        cls = int(rng.integers(0, classes))
        for j, a in enumerate(anchors[3 * k : 3 * k + 3]):
            jit = rng.normal(0, 0.02, 4) * [w, h, w, h]
            out[0, :4, a] = (np.array([cx, cy, w, h]) + jit) / size
            out[0, 4 + cls, a] = 0.9 - 0.15 * j
    return out


def time_postprocess(out: np.ndarray, runs: int) -> tuple[float, int]:
    from mltool.runtime.detect import YoloHead, decode_yolo
    from mltool.runtime.labels import Labels
    from mltool.runtime.preprocess import Letterbox

    head = YoloHead("v8", 0, 80, "bench")
    labels = Labels.from_list([f"c{i}" for i in range(80)])
    box = Letterbox.fit(640, 480, 640, 640)
    n = 0
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        dets = decode_yolo(out, head, labels, 0.25, input_hw=(640, 640), source=box, iou=0.7, max_det=300)
        ts.append(time.perf_counter() - t)
        n = len(dets)
    return 1000 * float(np.median(ts)), n


def ensure_model(cache: Path, quant: str) -> Path:
    """A YOLOv8n-shaped stand-in: strided conv backbone to strides 8/16/32, an 84-channel head
    per scale, concatenated to [1, 84, 8400] (boxes and scores through a sigmoid, class logits
    biased low so that an ordinary frame has few candidates, as a trained model's)."""
    path = cache / f"yolo_standin_{quant}.tflite"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)

    def block(x, c, stride):
        x = layers.Conv2D(c, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("swish")(x)
        y = layers.Conv2D(c, 3, padding="same", activation="swish")(x)
        return layers.Add()([x, layers.Conv2D(c, 3, padding="same", activation="swish")(y)])

    inp = keras.Input((640, 640, 3))
    x = block(inp, 16, 2)
    x = block(x, 32, 2)
    p3 = block(x, 64, 2)
    p4 = block(p3, 128, 2)
    p5 = block(p4, 256, 2)
    heads = []
    for p in (p3, p4, p5):
        h = layers.Conv2D(64, 3, padding="same", activation="swish")(p)
        box = layers.Conv2D(4, 1, activation="sigmoid")(h)
        cls = layers.Conv2D(80, 1, bias_initializer=keras.initializers.Constant(-8.0), activation="sigmoid")(h)
        heads.append(layers.Reshape((-1, 84))(layers.Concatenate()([box, cls])))
    out = layers.Permute((2, 1))(layers.Concatenate(axis=1)(heads))
    model = keras.Model(inp, out)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant == "int8":
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, 640, 640, 3), dtype=np.float32)] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def invoke_ms(model: Path, threads: int, runs: int) -> float:
    from mltool.bench.timing import measure

    return float(measure(model, threads, runs, None, 3)["latency_ms"]["median"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cache = ROOT / "runs" / "bench"
    rng = np.random.default_rng(0)
    models = {q: ensure_model(cache, q) for q in ("float32", "int8")}
    inv = {q: invoke_ms(m, args.threads, 20) for q, m in models.items()}

    print(f"1. YOLO post-processing per frame, [1, 84, 8400] output, 640x480 source (median of {args.runs})")
    print(f"   {'scene':<34}{'kept':>6}{'post ms':>10}   share of frame (invoke float32 {inv['float32']:.1f} ms / int8 "
          f"{inv['int8']:.1f} ms, {args.threads} threads)")
    for name, objects in (("sparse: 5 objects x 3 anchors", 5), ("dense: 300 objects x 3 anchors", 300)):
        ms, kept = time_postprocess(scene(objects, rng), args.runs)
        shares = "  ".join(f"{q} {100 * ms / (ms + inv[q]):.1f}%" for q in inv)
        print(f"   {name:<34}{kept:>6}{ms:>10.3f}   {shares}   {'MET' if ms <= 1.5 else 'MISSED'} <= 1.5 ms")

    print("\n2. mltool infer on a 640x480 MP4, YOLO stand-in (mltool bench --pipeline: read+decode, letterbox, invoke, post)")
    from scripts.bench.device_report import ensure_video

    video = ensure_video(cache)
    for q, m in models.items():
        r = subprocess.run([sys.executable, "-m", "mltool", "bench", str(m), "--threads", str(args.threads), "--runs", "5",
                            "--pipeline", str(video), "--pipeline-frames", "60", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stderr[-2000:])
        p = json.loads(r.stdout)["pipeline"][0]
        s = p["stages_median_ms"]
        print(f"   {q:<8} read+decode {s['read']:.3f}  preprocess {s['preprocess']:.3f}  invoke {s['invoke']:.3f}  "
              f"postprocess {s['postprocess']:.3f}  -> overhead beyond invoke {p['overhead_beyond_invoke_ms']:.3f} ms/frame, "
              f"{p['fps']:.1f} FPS")


if __name__ == "__main__":
    main()
