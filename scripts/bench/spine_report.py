#!/usr/bin/env python
"""The train-to-device spine, measured: does `mltool infer` feed a converted model exactly what
training fed the Keras model?

Makes an image folder of 480x360 JPEGs (synthetic fire / no-fire scenes, larger than the model
input), trains a 64x64 model on it, converts it to float32 and int8, then compares, file by file,
`mltool infer` (the device path: decode, resize, normalise, LiteRT) with the Keras model run on
the training loader's own arrays. Prints top-1 agreement and the largest probability difference.

Usage: .venv/bin/python scripts/bench/spine_report.py [--per-class 60] [--epochs 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_dataset(root: Path, per_class: int, seed: int = 0, size: tuple[int, int] = (480, 360)) -> Path:
    """``root/fire`` and ``root/no_fire`` of ``size`` JPEGs (quality 90)."""
    from PIL import Image

    from mltool.data.synth import _add_flames, _scene

    rng = np.random.default_rng(seed)
    w, h = size
    for cls in ("fire", "no_fire"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _scene(rng, max(w, h))
            if cls == "fire":
                img = _add_flames(rng, img)
            img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)[:h, :w]
            Image.fromarray((img * 255).astype(np.uint8)).save(root / cls / f"{cls}_{i:03d}.jpg", quality=90)
    return root


def mltool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mltool", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mltool {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc


def keras_probabilities(run_dir: Path, data: Path) -> dict[str, np.ndarray]:
    """The Keras model on the training loader's arrays, by file path."""
    from mltool._tf import load_keras_model
    from mltool.data.images import image_extensions, list_class_files
    from mltool.data.tasks import load_task
    from mltool.runtime.preprocess import normalize
    from mltool.train.rundir import read_run

    _, info = read_run(run_dir)
    ds = load_task("images", data, image_size=info.dataset.image_size)
    files, _, _ = list_class_files(data, image_extensions(), "images")
    x = normalize(ds.x_train, info.normalization.mean[0], info.normalization.std[0])
    probs = load_keras_model(run_dir / "model.keras").predict(x, verbose=0)
    return {str(f): p for f, p in zip(files, probs)}


def device_probabilities(model: Path, data: Path, classes: list[str]) -> dict[str, np.ndarray]:
    out = mltool("infer", str(model), str(data), "--json", "-k", str(len(classes)))
    probs = {}
    for line in out.stdout.splitlines():
        r = json.loads(line)
        if "predictions" in r:
            by_label = {p["label"]: p["score"] for p in r["predictions"]}
            probs[r["name"]] = np.array([by_label[c] for c in classes])
    return probs


def compare(reference: dict[str, np.ndarray], device: dict[str, np.ndarray]) -> dict[str, float]:
    assert set(reference) == set(device), "infer and the loader saw different files"
    ref = np.stack([reference[k] for k in sorted(reference)])
    dev = np.stack([device[k] for k in sorted(reference)])
    return {"files": len(ref), "top1_agreement": float(np.mean(ref.argmax(1) == dev.argmax(1))),
            "max_abs_diff": float(np.abs(ref - dev).max())}


def run(work: Path, per_class: int, epochs: int) -> dict[str, dict[str, float]]:
    data = make_dataset(work / "data", per_class)
    summary = json.loads(mltool("train", "images", str(data), "--image-size", "64", "--epochs", str(epochs),
                                "--out", str(work / "run"), "--json").stdout)
    run_dir = Path(summary["run_dir"])
    mltool("convert", str(run_dir), "-q", "none")
    mltool("convert", str(run_dir), "-q", "int8")
    reference = keras_probabilities(run_dir, data)
    return {mode: compare(reference, device_probabilities(run_dir / f"model_{mode}.tflite", data, summary["classes"]))
            for mode in ("float32", "int8")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for mode, r in run(work, args.per_class, args.epochs).items():
            print(f"{mode:>8}: {r['files']} files of 480x360 JPEG into a 64x64 model: top-1 agreement with Keras "
                  f"{100 * r['top1_agreement']:.2f}%, max |delta probability| {r['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
