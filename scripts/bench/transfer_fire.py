#!/usr/bin/env python
"""MobileNetV2 (alpha 0.35, --weights none) vs the fire tutorial's CNN on the synthetic fire
set at 96x96, side by side in one run (issue #13):

* held-out accuracy of each after the same wall-clock training budget (training stops after
  the epoch that would be followed by one overrunning it; early stopping still applies), rounds
  interleaved because this machine's speed swings;
* each converted to int8 (accuracy check against Keras, file size);
* `mltool bench` latency of both int8 files at 1 and 2 threads, each in its own process.

ImageNet weights cannot be downloaded here, so MobileNetV2 trains from scratch: the comparison
is the architecture at equal time, not transfer learning (with --weights imagenet it trains
only a head in phase 1, far faster per epoch).

Usage: .venv/bin/python scripts/bench/transfer_fire.py [--budget 150] [--rounds 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

ARCHS = {"fire-cnn": [], "mobilenetv2": ["alpha=0.35", "weights=none"]}


def budget_callback(seconds: float):
    import keras

    class Budget(keras.callbacks.Callback):
        """Stop at the end of an epoch when another one would overrun the budget. The first
        epoch's time includes building the graph, so it does not predict the next."""

        def __init__(self):
            super().__init__()
            self.t0 = time.monotonic()
            self.last = 0.0
            self.stopped = False

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.last = time.monotonic() - self.t_epoch if epoch > 0 else 0.0
            if time.monotonic() - self.t0 + self.last > seconds:
                self.model.stop_training = True
                self.stopped = True

    return Budget()


def train_one(arch: str, data: Path, out: Path, budget: float, seed: int) -> dict:
    from mltool.train.run import TrainConfig, train

    extra = {"alpha": 0.35, "weights": "none"} if arch == "mobilenetv2" else {}
    cfg = TrainConfig(task="fire", data=str(data), arch=arch, image_size=96, epochs=200, seed=seed, out=out, **extra)
    t0 = time.monotonic()
    cb = budget_callback(budget)
    res = train(cfg, callbacks=[cb])
    wall = time.monotonic() - t0
    return {"arch": arch, "seed": seed, "run": out, "wall_s": wall, "accuracy": res.metrics["accuracy"],
            "epochs": res.info.training["epochs_run"], "stopped_early": res.info.training["stopped_early"] and not cb.stopped,
            "params": res.info.params, "test_samples": res.metrics["test_samples"]}


def mltool(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mltool", *args, "--json"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        sys.exit(f"mltool {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per model and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", type=Path, help="fire dataset (default: a fresh `mltool datasets synth fire`)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        data = args.data
        if data is None:
            data = tmp_p / "fire"
            subprocess.run([sys.executable, "-m", "mltool", "datasets", "synth", "fire", str(data)], check=True,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        rows = []
        for rnd in range(args.rounds):
            order = list(ARCHS) if rnd % 2 == 0 else list(reversed(ARCHS))
            for arch in order:
                print(f"round {rnd + 1}: training {arch} for up to {args.budget:g} s", file=sys.stderr)
                row = train_one(arch, data, tmp_p / f"{arch}-{rnd}", args.budget, seed=rnd)
                conv = mltool("convert", str(row["run"]), "-q", "int8")
                m = conv["modes"][0]
                row.update(int8_path=m["path"], int8_accuracy=m["accuracy"], drop=m["drop_points"],
                           agreement=m["agreement"], int8_bytes=m["size_bytes"], keras_bytes=conv["reference"]["size_bytes"])
                rows.append(row)
        # latency: the first round's two models, side by side, each config in its own process
        firsts = [next(r for r in rows if r["arch"] == a) for a in ARCHS]
        bench = mltool("bench", *[r["int8_path"] for r in firsts], "--threads", "1,2", "--seconds", "3")
    lat = {(Path(b["model"]).parent.name.rsplit("-", 1)[0], b["threads"]): b for b in bench["rows"]}
    print(f"\nfire (synthetic, {rows[0]['test_samples']} held-out images) at 96x96; {args.budget:g} s training budget per "
          f"model and round; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end\n")
    head = (f"{'model':<12} {'round':>5} {'params':>10} {'epochs':>6} {'train s':>8} {'keras acc':>9} {'int8 acc':>9}"
            f" {'drop':>7} {'agree':>6} {'int8 size':>10} {'keras file':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['arch']:<12} {r['seed'] + 1:>5} {r['params']:>10,} {r['epochs']:>5}{'*' if r['stopped_early'] else ' '}"
              f" {r['wall_s']:>8.1f} {100 * r['accuracy']:>8.2f}% {100 * r['int8_accuracy']:>8.2f}% {r['drop']:>+6.2f}"
              f" {100 * r['agreement']:>5.1f}% {r['int8_bytes'] / 1024:>7.1f} KiB {r['keras_bytes'] / 2**20:>6.2f} MiB")
    print("(* early stopping ended it before the budget; drop = Keras accuracy - int8 accuracy in points)\n")
    print(f"{'int8 latency (mltool bench)':<28} {'1 thread':>10} {'2 threads':>10} {'2t speed-up':>12}")
    for a in ARCHS:
        one, two = lat[(a, 1)], lat[(a, 2)]
        print(f"{a:<28} {one['latency_ms']['median']:>8.3f}ms {two['latency_ms']['median']:>8.3f}ms {one['latency_ms']['median'] / two['latency_ms']['median']:>11.2f}x")
    a, b = (lat[("mobilenetv2", t)]["latency_ms"]["median"] / lat[("fire-cnn", t)]["latency_ms"]["median"] for t in (1, 2))
    print(f"{'mobilenetv2 / fire-cnn':<28} {a:>9.2f}x {b:>9.2f}x")


if __name__ == "__main__":
    main()
