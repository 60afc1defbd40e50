#!/usr/bin/env python
"""The I2C sampling loop on the real clock, side by side in one run (issue #13).

No I2C bus exists here, so the ADCs are the test suite's register-level fakes
(tests/fake_i2c.py) behind smbus2's interface, with each bus transaction taking its time at
100 kHz (PCF8591 read: ~20 bits = 0.2 ms; ADS1115 register read: ~39 bits = 0.39 ms) as a
blocking sleep, like the kernel's ioctl. Everything else is mltool's real path: the sampling
thread on absolute deadlines, windowing, and for "infer" a real int8 ECG model classifying a
window every 1/10 s on the same stream.

For each chip at 360 Hz and 860 Hz: achieved rate, jitter (read time - deadline) p50/p99/max,
late and missed samples, and flagged windows, with real-time scheduling (the default, when
allowed) and without (rt=0: what a user without the privilege gets). Rounds are interleaved:
this machine's load swings from minute to minute.

Usage: .venv/bin/python scripts/bench/i2c_sampling.py [--seconds 4] [--rounds 2]
On a Raspberry Pi with a real ADC, the same figures come from:
    mltool bench --source 'i2c:1:0x48?chip=pcf8591,rate=360' --seconds 10
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

from tests.fake_i2c import FakeADS1115, FakeI2C, FakePCF8591, RealClock  # noqa: E402

BUS_S = {"pcf8591": 20 / 100_000, "ads1115": 39 / 100_000}


def ecg_model(tmp: Path) -> Path:
    """A real int8 ECG model (synthetic data, a few epochs: it only has to run)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "mltool"]
    subprocess.run([*run, "datasets", "synth", "ecg", str(tmp / "ecg"), "--count", "60"], check=True, env=env, capture_output=True)
    subprocess.run([*run, "train", "ecg", "--data", str(tmp / "ecg"), "--epochs", "3", "--out", str(tmp / "run")],
                   check=True, env=env, capture_output=True)
    subprocess.run([*run, "convert", str(tmp / "run"), "-q", "int8"], check=True, env=env, capture_output=True)
    return tmp / "run" / "model_int8.tflite"


def install_fake() -> None:
    import smbus2

    fake = FakeI2C(RealClock())
    fake.transaction_s = 0.0  # set per configuration
    fake.add(1, 0x48, FakePCF8591({0: lambda t: 1.65}))
    fake.add(1, 0x49, FakeADS1115({0: lambda t: 1.0}))
    smbus2.SMBus = fake.SMBus
    return fake


def idle(spec: str, seconds: float) -> dict:
    from mltool.bench.sensor import measure_sensor

    r = measure_sensor(spec, seconds)
    return {**r, "windows": None, "flagged": None}


def infer(spec: str, seconds: float, model: Path, rate: int) -> dict:
    """The same stream with the model classifying a 3600-sample window every rate/10 samples."""
    from mltool.runtime.predictor import Predictor
    from mltool.runtime.sources import open_source

    p = Predictor(model, threads=1)
    src = open_source(spec, signal_window=p.input.window, hop=rate // 10, rate=rate)
    windows = flagged = 0
    t_end = time.monotonic() + p.input.window / rate + seconds
    with p.stream(src) as stream:
        for res in stream:
            windows += 1
            flagged += not res.sampling.ok
            if time.monotonic() >= t_end:
                break
    s = src.sampling_summary()
    return {**s, "windows": windows, "flagged": flagged}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("training a small int8 ECG model for the inference load ... ", end="", flush=True, file=sys.stderr)
        model = ecg_model(Path(tmp))
        print("done", file=sys.stderr)
        fake = install_fake()
        configs = [(chip, rate, rt, load) for load in ("idle", "infer") for chip in ("pcf8591", "ads1115")
                   for rate in (360, 860) for rt in (1, 0)]
        results: dict[tuple, list[dict]] = {c: [] for c in configs}
        load_avg = os.getloadavg()
        for rnd in range(args.rounds):
            for c in configs:
                chip, rate, rt, load = c
                fake.transaction_s = BUS_S[chip]
                spec = f"i2c:1:{'0x48' if chip == 'pcf8591' else '0x49'}?chip={chip},rate={rate},rt={rt}"
                print(f"round {rnd + 1}/{args.rounds}: {chip} {rate} Hz rt={rt} {load}", file=sys.stderr)
                r = idle(spec, args.seconds) if load == "idle" else infer(spec, args.seconds, model, rate)
                results[c].append(r)
    print(f"\nI2C sampling on the real clock, fake ADCs with 100 kHz bus time; {os.cpu_count()} cores, load average "
          f"{load_avg[0]:.2f} at start; {args.rounds} interleaved rounds of {args.seconds:g} s (+ one window for infer)")
    head = (f"{'chip':<8} {'rate':>5} {'priority':<9} {'load':<6} {'achieved Hz':>12} {'jitter p50':>10} {'p99':>7} {'max':>7}"
            f" {'late':>5} {'missed':>6} {'samples':>8} {'bus read':>8} {'flagged':>9}")
    print(head)
    print("-" * len(head))
    for c, runs in results.items():
        chip, rate, rt, load = c
        for r in runs:
            j = r["jitter_ms"]
            flagged = "-" if r["windows"] is None else f"{r['flagged']}/{r['windows']}"
            prio = ("rt" if r["realtime"] else "normal!") if rt else "normal"
            print(f"{chip:<8} {rate:>5} {prio:<9} {load:<6} {r['achieved_hz']:>12.3f} {j['p50']:>8.3f}ms {j['p99']:>5.3f}ms"
                  f" {j['max']:>5.2f}ms {r['late']:>5} {r['missed']:>6} {r['samples']:>8} {r['read_ms']['p50']:>6.3f}ms {flagged:>9}")
    print("\njitter = read time - deadline; late: > half a period after it; missed: a deadline passed unread "
          "(slot held). flagged: windows whose late + missed exceed 1%. 'normal!': rt asked but not granted.")
    if "--json" in sys.argv:
        print(json.dumps({" ".join(map(str, c)): runs for c, runs in results.items()}))


if __name__ == "__main__":
    main()
