#!/usr/bin/env python
"""Measure what issue #2 asks for, side by side in one run:

* `mltool train fashion-mnist` (default CNN) vs `--arch dense` (the tutorial baseline):
  wall time and accuracy on the real 10,000-image test set;
* `mltool train digits`: held-out accuracy and wall time.

Usage: .venv/bin/python scripts/bench/train_accuracy.py [--quick]
(--quick: digits only, plus Fashion-MNIST with --limit 5000, for a smoke check)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"fashion-mnist/cnn": (0.915, 600.0), "digits/cnn": (0.95, 60.0)}


def run(task: str, extra: list[str], project: Path) -> dict:
    cmd = [sys.executable, "-m", "mltool", "train", task, "--project", str(project), "--json", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    s = json.loads(proc.stdout)
    return {
        "run": f"{task}/{s['arch']}", "wall_s": wall, "accuracy": s["metrics"]["accuracy"],
        "test_samples": s["metrics"]["test_samples"], "epochs": s["training"]["epochs_run"],
        "run_dir": s["run_dir"],
    }


def main() -> None:
    quick = "--quick" in sys.argv
    limit = ["--max-samples", "5000"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        rows = [
            run("digits", [], project),
            run("fashion-mnist", limit, project),
            run("fashion-mnist", ["--arch", "dense", *limit], project),
        ]
    base = next(r for r in rows if r["run"] == "fashion-mnist/dense")
    print(f"{'run':<22}{'test acc':>10}{'samples':>9}{'epochs':>8}{'wall s':>9}{'vs dense':>10}  target")
    for r in rows:
        rel = f"{100 * (r['accuracy'] - base['accuracy']):+.2f}pt" if r["run"].startswith("fashion") else ""
        tgt = TARGETS.get(r["run"])
        verdict = ""
        if tgt and not quick:
            ok = r["accuracy"] >= tgt[0] and r["wall_s"] <= tgt[1]
            verdict = f">= {100 * tgt[0]:.1f}% in <= {tgt[1]:.0f}s: {'MET' if ok else 'MISSED'}"
        print(f"{r['run']:<22}{100 * r['accuracy']:>9.2f}%{r['test_samples']:>9}{r['epochs']:>8}"
              f"{r['wall_s']:>9.1f}{rel:>10}  {verdict}")


if __name__ == "__main__":
    main()
