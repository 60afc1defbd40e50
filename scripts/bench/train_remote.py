#!/usr/bin/env python
"""Issue #19 measurements, side by side in one run on this machine:

1. ``train --on`` overhead against a real OpenSSH server on loopback (the "remote" machine is this
   one, with its own remote dir): the same run as local ``mltool train`` (a fresh process each,
   TensorFlow's start included) and with ``--on``, for digits and a Fashion-MNIST subset. "Setup
   once" is what the first ``--on`` pays beyond later ones (here: sending the dataset; the venv
   reuses this environment unless ``--real-setup``, which times a real venv + pip install of
   mltool[train] from PyPI); "per run" is ``--on`` minus local for an unchanged dataset.
2. Fashion-MNIST ``cnn`` time to accuracy on 1 vs 2 logical CPU devices (``--devices 2``,
   MirroredStrategy). Two logical devices share the same cores: no gain is expected here.

Usage: .venv/bin/python scripts/bench/train_remote.py [--limit N] [--epochs E] [--real-setup]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer, keygen, stand_in_venv  # noqa: E402  (the same loopback sshd the tests use)

FASHION = Path("/usr/share/datasets/fashion-mnist")


def mltool(args: list[str], project: Path) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mltool", "train", *map(str, args), "--project", str(project), "--json"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"mltool train {' '.join(map(str, args))} failed: {p.stderr[-2000:]}")
    return wall, json.loads(p.stdout)


def time_to(run_dir: Path, target: float) -> float | None:
    """Seconds of training (summed epoch times) until val_accuracy first reaches ``target``."""
    total = 0.0
    for row in csv.DictReader((run_dir / "history.csv").open()):
        total += float(row["seconds"])
        if float(row["val_accuracy"]) >= target:
            return total
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=12000, help="Fashion-MNIST samples per source split (part 2)")
    ap.add_argument("--epochs", type=int, default=4, help="Fashion-MNIST epochs (part 2)")
    ap.add_argument("--target", type=float, default=0.85, help="val accuracy for time-to-accuracy (part 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved local / --on rounds per case (part 1)")
    ap.add_argument("--only", choices=["1", "2"], help="run only part 1 or part 2")
    ap.add_argument("--real-setup", action="store_true", help="also time a real first-use setup (pip installs TensorFlow)")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if a.only != "2":
            part1(a, Path(tmp))
        if a.only != "1":
            part2(a, Path(tmp))


def part1(a: argparse.Namespace, tmp: Path) -> None:
    from mltool.deploy.ssh import SshOptions
    from mltool.train.remote import TrainLayout, mark_ready

    key = keygen(tmp / "key")
    kh = tmp / "known_hosts"
    server = SshServer(tmp / "srv", tmp / "key.pub").start()
    try:
        root = tmp / "host" / "mltool"
        stand_in_venv(root / "train" / "venv", ROOT)
        opts = SshOptions(identity=key, known_hosts=kh, trust_new_host=True)
        with opts.session(server.target) as s:
            mark_ready(s, TrainLayout(str(root)), "train")
        on = ["--on", server.target, "--identity", key, "--known-hosts", kh, "--trust-new-host", "--remote-dir", root]

        print("1. train --on overhead (loopback sshd; wall seconds of the whole command, TensorFlow start included)")
        cases = [("digits", ["digits", "--epochs", "3"])]
        if FASHION.is_dir():
            cases.append(("fashion-mnist --limit 2000, 1 epoch", ["fashion-mnist", "--max-samples", "2000", "--epochs", "1",
                                                                "--data", FASHION]))
        for name, args in cases:
            first, fout = mltool([*args, *on], tmp / "remote")  # the first --on: sends the dataset
            local_t, on_t, steps = [], [], []
            for _ in range(a.rounds):  # interleaved: this machine is shared and noisy
                wall, lout = mltool(args, tmp / "local")
                local_t.append(wall)
                wall, aout = mltool([*args, *on], tmp / "remote")
                on_t.append(wall)
                t = aout["remote_timings"]
                steps.append(t["setup_s"] + t["fetch_s"])
            same = lout["metrics"] == fout["metrics"] == aout["metrics"]
            data = fout["ran_on"].get("data", {})
            local, again = statistics.median(local_t), statistics.median(on_t)
            print(f"  {name}: local {local:.1f}s | --on first {first:.1f}s (dataset {data.get('status', 'none')}, "
                  f"{data.get('bytes_sent', 0):,} bytes) | --on again {again:.1f}s "
                  f"(dataset {aout['ran_on'].get('data', {}).get('status', 'none')}); medians of {a.rounds} interleaved rounds")
            print(f"    setup once: {first - again:+.1f}s   per run: {again - local:+.1f}s wall ({again / local:.2f}x local); "
                  f"SSH steps outside training (connect, probe, data check, job start, fetch): "
                  f"{statistics.median(steps):.2f}s   metrics equal: {same}")
            print(f"    --on first, steps: {json.dumps(fout['remote_timings'])}")
            print(f"    --on again, steps: {json.dumps(aout['remote_timings'])}")
        if a.real_setup:
            fresh = tmp / "fresh" / "mltool"
            on_fresh = [*on[:-1], fresh]
            t0 = time.perf_counter()
            _, sout = mltool(["digits", "--epochs", "1", "--max-samples", "300", *on_fresh], tmp / "fresh-runs")
            print(f"  real first-use setup (venv + pip install mltool[train]) + a 1-epoch run: {time.perf_counter() - t0:.1f}s; "
                  f"env step {sout['remote_timings'].get('env_s')}s")
        else:
            print("  real first-use setup (venv + pip install of TensorFlow): not timed here (pass --real-setup)")
    finally:
        server.stop()


def part2(a: argparse.Namespace, tmp: Path) -> None:
    if not FASHION.is_dir():
        print("2. skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
        return
    print(f"2. Fashion-MNIST cnn, --limit {a.limit} (train {a.limit} -> {int(a.limit * 0.9)} after validation split, "
          f"test {min(a.limit, 10000)}), {a.epochs} epochs, batch 128, patience 0")
    base = ["fashion-mnist", "--arch", "cnn", "--max-samples", a.limit, "--epochs", a.epochs, "--patience", "0", "--data", FASHION]
    rows = []
    for devices in ("1", "2"):
        wall, out = mltool([*base, "--devices", devices], tmp / f"dev{devices}")
        tta = time_to(Path(out["run_dir"]), a.target)
        train_s = sum(float(r["seconds"]) for r in csv.DictReader((Path(out["run_dir"]) / "history.csv").open()))
        rows.append((devices, wall, train_s, tta, out["metrics"]["accuracy"], out["training"]["distribution"]))
    for devices, wall, train_s, tta, acc, dist in rows:
        tta = f"{tta:.1f}s" if tta is not None else f"not reached in {a.epochs} epochs"
        print(f"  --devices {devices}: {dist['strategy']} x{dist['replicas']} (per-replica batch {dist['per_replica_batch']}): "
              f"wall {wall:.1f}s, training {train_s:.1f}s, time to val acc >= {a.target:.2f}: {tta}, test accuracy {acc:.4f}")
    print(f"  2 logical / 1 device training time: {rows[1][2] / rows[0][2]:.2f}x (same cores: no gain expected)")


if __name__ == "__main__":
    main()
