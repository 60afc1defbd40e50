#!/usr/bin/env python
"""Which mltool modules one frame of `infer` passes through, and how often it re-enters each.

Traces one steady-state frame (after a few warm frames) of ``run_infer`` on SOURCE with
``sys.setprofile``: every call whose code lives in a different mltool module from its caller
counts as one entry into that module. Prints the modules in order of first entry with their
entry counts, the number of distinct modules and the largest re-entry count.

Usage: .venv/bin/python scripts/bench/frame_trace.py MODEL SOURCE [--frame 3] [--alert 0.8] [--save DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = str(ROOT / "mltool") + "/"


def module_of(filename: str) -> str | None:
    return filename[len(PKG):] if filename.startswith(PKG) else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("source")
    ap.add_argument("--frame", type=int, default=3, help="which result to trace (0-based)")
    ap.add_argument("--alert", type=float, default=None, help="--alert-threshold for infer")
    ap.add_argument("--save", default=None, help="--save DIR for infer (annotated output)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from mltool.runtime.infer import InferConfig, run_infer

    entries: Counter[str] = Counter()
    order: list[str] = []
    state = {"n": 0}

    def profiler(frame, event, _arg):  # noqa: ANN001
        if event != "call":
            return
        callee = module_of(frame.f_code.co_filename)
        if callee is None:
            return
        caller = module_of(frame.f_back.f_code.co_filename) if frame.f_back is not None else None
        if caller != callee:
            entries[callee] += 1
            if callee not in order:
                order.append(callee)

    def on_result(_r: dict) -> None:
        state["n"] += 1
        if state["n"] == args.frame:
            sys.setprofile(profiler)
        elif state["n"] == args.frame + 1:
            sys.setprofile(None)

    from mltool.runtime.options import PredictorOptions

    run_infer(InferConfig(model=args.model, source=args.source, max_frames=args.frame + 2,
                          predictor=PredictorOptions(alert_threshold=args.alert), save=Path(args.save) if args.save else None),
              on_result=on_result)
    sys.setprofile(None)
    # the frame ends inside on_result, which lives in this script: drop the tracer's own entry
    report = {"modules": [{"module": m, "entries": entries[m]} for m in order],
              "distinct": len(order), "max_entries": max(entries.values(), default=0)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for m in order:
        print(f"{entries[m]:>4}  {m}")
    print(f"{report['distinct']} mltool modules for one frame; most entered: {report['max_entries']} times")


if __name__ == "__main__":
    main()
