#!/usr/bin/env python
"""Start-up cost of the command line, median of N runs each, interleaved:

- `mltool --help` (the whole process), target < 0.3 s;
- `python -c "import mltool; mltool.Predictor"` (the Python API's device side, no TensorFlow);
- `python -c pass` (the interpreter alone, for reference).

Usage: .venv/bin/python scripts/bench/startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "mltool --help": [sys.executable, "-m", "mltool", "--help"],
    "import mltool; mltool.Predictor": [sys.executable, "-c", "import mltool; mltool.Predictor"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.runs):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:<36} median {statistics.median(ts) * 1000:6.0f} ms  (min {min(ts) * 1000:.0f} ms, {args.runs} runs)")


if __name__ == "__main__":
    main()
