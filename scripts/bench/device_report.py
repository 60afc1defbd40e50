#!/usr/bin/env python
"""Issue #4 measurements, side by side in one run:

1. `mltool bench` median vs a bare LiteRT timing loop (same model, same threads), each in its
   own process, interleaved over several rounds so machine noise hits both alike. Target: within 3%.
2. MobileNetV2 224 int8 on a 640x480 video file: pipeline time per frame beyond invoke
   (read + decode + preprocess + postprocess). Target: at most 1.5 ms.
3. `mltool infer` start to first result on a small model (wall time of the whole command, and
   the first-result time mltool reports from process start of the library call).

Usage: .venv/bin/python scripts/bench/device_report.py [--small MODEL.tflite] [--rounds 5]
MobileNetV2 (random weights) is converted once into runs/bench/ if missing.
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


def mltool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltool", *args], capture_output=True, text=True)


def ensure_mobilenet(cache: Path) -> Path:
    out = cache / "mobilenet_v2_int8.tflite"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    from mltool._tf import import_tensorflow
    from mltool.data.synth import synthesize

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(cache / "mobilenet_v2.keras")
    if not (cache / "calib").exists():
        synthesize("fire", cache / "calib", per_class=32, seed=0)
    r = mltool("convert", str(cache / "mobilenet_v2.keras"), "-q", "int8", "--calib", str(cache / "calib"),
               "--calib-samples", "64", "--mean", "127.5", "--std", "127.5", "--out", str(cache), "--json")
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return cache / "mobilenet_v2_int8.tflite"


def ensure_video(cache: Path) -> Path:
    import cv2

    from mltool.data.synth import _add_flames, _scene

    path = cache / "scenes_640x480.mp4"
    if path.exists():
        return path
    rng = np.random.default_rng(1)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(150):
        img = _scene(rng, 96)
        if i % 2:
            img = _add_flames(rng, img)
        bgr = cv2.resize((img[..., ::-1] * 255).astype(np.uint8), (640, 480), interpolation=cv2.INTER_LINEAR)
        w.write(bgr)
    w.release()
    return path


def bare_loop(model: Path, threads: int, runs: int) -> float:
    """The reference: LiteRT's Interpreter by path, random input set once, time invoke()."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
    rng = np.random.default_rng(0)
    x = rng.integers(info.min, int(info.max) + 1, size=d["shape"]).astype(d["dtype"]) if info else rng.standard_normal(d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    for _ in range(11):
        it.invoke()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def bench_vs_bare(model: Path, threads: int, rounds: int, runs: int) -> tuple[float, float]:
    """Interleaved in one process: mltool's measure() (what every `mltool bench` worker runs)
    and the bare loop alternate, so this VM's speed swings hit both alike."""
    from mltool.bench.timing import measure

    ours, bare = [], []
    for _ in range(rounds):
        ours.append(measure(model, threads, runs, None, 10)["latency_ms"]["median"])
        bare.append(bare_loop(model, threads, runs))
    return float(np.median(ours)), float(np.median(bare))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=Path, help="a small .tflite (e.g. a Fashion-MNIST int8 model)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    cache = ROOT / "runs" / "bench"
    mnv2 = ensure_mobilenet(cache)
    video = ensure_video(cache)

    print("1. mltool bench timing vs a bare LiteRT loop, same process, interleaved (median of per-round medians)")
    print(f"   {'model':<28}{'threads':>8}{'mltool ms':>11}{'bare ms':>10}{'ratio':>8}")
    models = [(mnv2, 300)] + ([(args.small, 3000)] if args.small else [])
    for model, runs in models:
        for th in (1, 2):
            o, b = bench_vs_bare(model, th, args.rounds, runs if "mobilenet" not in model.name else 100)
            print(f"   {model.name:<28}{th:>8}{o:>11.4f}{b:>10.4f}{o / b:>8.3f}")

    print("\n2. MobileNetV2 224 int8, whole pipeline from a 640x480 MP4 (mltool bench --pipeline)")
    for th in (1, 2):
        r = mltool("bench", str(mnv2), "--threads", str(th), "--runs", "30", "--pipeline", str(video), "--pipeline-frames", "120", "--json")
        if r.returncode != 0:
            sys.exit(r.stderr[-2000:])
        p = json.loads(r.stdout)["pipeline"][0]
        s = p["stages_median_ms"]
        print(f"   threads {th}: read+decode {s['read']:.3f}  preprocess {s['preprocess']:.3f}  invoke {s['invoke']:.3f}  "
              f"postprocess {s['postprocess']:.3f}  -> overhead beyond invoke {p['overhead_beyond_invoke_ms']:.3f} ms/frame "
              f"({'MET' if p['overhead_beyond_invoke_ms'] <= 1.5 else 'MISSED'} <= 1.5 ms), {p['fps']:.1f} FPS")

    if args.small:
        print("\n3. mltool infer start to first result")
        img = cache / "one.png"
        from PIL import Image

        Image.new("L", (28, 28), 128).save(img)
        walls, firsts = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            r = mltool("infer", str(args.small), str(img), "--json")
            walls.append(time.perf_counter() - t0)
            firsts.append(json.loads(r.stdout.splitlines()[-1])["first_result_s"])
        print(f"   whole command (python start to exit), median of 5: {np.median(walls):.3f} s; "
              f"model load to first result inside it: {1000 * np.median(firsts):.1f} ms")


if __name__ == "__main__":
    main()
