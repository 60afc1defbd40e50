#!/usr/bin/env python
"""Issue #3 measurement: keras.applications.MobileNetV2(weights=None) at 224x224 through
`mltool convert --quantize all`, then float32 vs int8 invoke latency with 1 and 2 threads,
measured side by side (interleaved rounds) in one run.

Random weights are fine: this is about the converter path and latency, not accuracy.
Calibration uses 64 synthetic scene images (mltool datasets synth fire), normalised to [-1, 1].

Usage: .venv/bin/python scripts/bench/convert_mobilenet.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from mltool._tf import import_tensorflow
    from mltool.data.synth import synthesize
    from mltool.runtime.interpreter import load_model

    import_tensorflow()
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        model.save(tmp / "mobilenet_v2.keras")
        synthesize("fire", tmp / "calib", per_class=32, seed=0)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "mltool", "convert", str(tmp / "mobilenet_v2.keras"), "--quantize", "all",
             "--calib", str(tmp / "calib"), "--calib-samples", "64", "--mean", "127.5", "--std", "127.5", "--json"],
            capture_output=True, text=True,
        )
        wall = time.monotonic() - t0
        if not proc.stdout.strip():
            sys.exit(proc.stderr[-3000:])
        res = json.loads(proc.stdout)  # exit 1 with a table is fine: a mode the runtime refuses is reported
        print(f"mltool convert --quantize all: {wall:.1f}s wall, source {res['reference']['size_bytes'] / 2**20:.2f} MiB (.keras)")
        print(f"{'mode':<9}{'size MiB':>10}{'vs f32':>8}{'agree*':>8}{'convert s':>11}")
        for m in res["modes"]:
            agree = "runtime refuses it: " + m["error"] if m["error"] else f"{100 * m['agreement']:>7.1f}%"
            print(f"{m['mode']:<9}{m['size_bytes'] / 2**20:>10.2f}{m['size_vs_float32']:>8.2f} {agree}{m['convert_seconds']:>11.1f}")
        print("* top-1 agreement with Keras on the 64 calibration images (random weights: indicative only)")

        paths = {m["mode"]: m["path"] for m in res["modes"]}
        x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
        timings: dict[tuple[str, int], list[float]] = {}
        models = {(mode, th): load_model(paths[mode], threads=th) for mode in ("none", "int8") for th in (1, 2)}
        for lm in models.values():
            for _ in range(5):
                lm.run(x)
        for _ in range(args.rounds):  # interleave so that machine noise hits every configuration alike
            for key, lm in models.items():
                interp = lm.interpreter
                for _ in range(args.runs):
                    t = time.perf_counter()
                    interp.invoke()
                    timings.setdefault(key, []).append(time.perf_counter() - t)
        print(f"\ninvoke latency, median of {args.rounds}x{args.runs} runs ({models[('none', 1)].runtime} {models[('none', 1)].runtime_version})")
        print(f"{'threads':<9}{'float32 ms':>12}{'int8 ms':>10}{'int8/f32':>10}")
        for th in (1, 2):
            f = 1000 * float(np.median(timings[("none", th)]))
            q = 1000 * float(np.median(timings[("int8", th)]))
            print(f"{th:<9}{f:>12.2f}{q:>10.2f}{q / f:>10.2f}")
        f1, f2 = (1000 * float(np.median(timings[("none", t)])) for t in (1, 2))
        q1, q2 = (1000 * float(np.median(timings[("int8", t)])) for t in (1, 2))
        print(f"2 threads vs 1: float32 {f2 / f1:.2f}x, int8 {q2 / q1:.2f}x")


if __name__ == "__main__":
    main()
