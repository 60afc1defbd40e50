#!/usr/bin/env python
"""Issue #5 measurements against real OpenSSH servers on loopback, side by side in one run:

1. Upload of a ~14 MB .tflite: mltool's SFTP upload throughput as a ratio to OpenSSH `scp` to
   the same server (interleaved rounds). Target: >= 0.6.
2. Unchanged redeploy: wall time of the whole `mltool deploy` command and bytes sent.
3. 10 hosts with --parallel 10 vs 1 host (each host its own sshd and device folder). Target: <= 3x.

Needs openssh-server (scripts/setup.sh installs it). Usage: .venv/bin/python scripts/bench/deploy_report.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer, keygen  # noqa: E402  (the same loopback sshd the tests use)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies for the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def big_model(path: Path) -> Path:
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(3500), keras.layers.Dense(2, activation="softmax")])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return path


def main() -> None:
    from mltool.deploy.host import DeployConfig, deploy_host, resolve_artifact
    from mltool.deploy.ssh import Session, SshOptions, parse_target

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        key = keygen(tmp / "key")
        kh = tmp / "known_hosts"
        model = big_model(tmp / "big.tflite")
        size = model.stat().st_size
        server = SshServer(tmp / "srv0", tmp / "key.pub").start()
        venv_root = tmp / "dev0" / "mltool"
        venv_root.mkdir(parents=True)
        (venv_root / "venv").symlink_to(Path(sys.prefix))
        common = ["--identity", str(key), "--known-hosts", str(kh)]

        # 1. raw upload: mltool's Session.put vs scp, same file, same server
        target = parse_target(server.target, identity=key)
        ours, theirs = [], []
        for i in range(5):
            t0 = time.perf_counter()  # connection included, as it is for scp
            with Session(target, known_hosts=kh, trust_new=True) as s:
                s.put(model, str(tmp / f"up{i}.bin"))
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(["scp", "-q", "-P", str(server.port), "-i", str(key), "-o", f"UserKnownHostsFile={kh}",
                            "-o", "StrictHostKeyChecking=yes", str(model), f"{target.user}@127.0.0.1:{tmp / f'scp{i}.bin'}"],
                           check=True)
            theirs.append(time.perf_counter() - t0)
        mo, ms = size / np.median(ours) / 2**20, size / np.median(theirs) / 2**20
        print(f"1. upload {size / 2**20:.1f} MiB, median of 5: mltool {mo:.1f} MiB/s, scp {ms:.1f} MiB/s "
              f"-> ratio {mo / ms:.2f} ({'MET' if mo / ms >= 0.6 else 'MISSED'} >= 0.6)")

        # 2. full deploy, then unchanged redeploy (whole command, python start included)
        def deploy_cmd() -> tuple[float, dict]:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "mltool", "deploy", server.target, str(model), *common,
                                "--remote-dir", str(venv_root), "--json"], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(p.stderr[-2000:])
            return time.perf_counter() - t0, json.loads(p.stdout)["hosts"][0]
        first_t, first = deploy_cmd()
        again = [deploy_cmd() for _ in range(3)]
        print(f"2. first deploy: {first_t:.2f} s wall, {first['bytes_sent']:,} bytes, {first['status']}; "
              f"unchanged redeploy: {np.median([a[0] for a in again]):.2f} s wall (median of 3; {np.median([a[1]['duration_s'] for a in again]):.2f} s "
              f"inside mltool), {again[0][1]['bytes_sent']} bytes, {again[0][1]['status']}")

        # 3. 10 hosts, parallel 10, vs 1 host: a fresh release each round (a small model)
        servers = [server] + [SshServer(tmp / f"srv{i}", tmp / "key.pub").start() for i in range(1, 10)]
        roots = []
        for i in range(10):
            r = tmp / f"fleet{i}" / "mltool"
            r.mkdir(parents=True)
            (r / "venv").symlink_to(Path(sys.prefix))
            roots.append(r)
        from mltool._tf import import_tensorflow

        tf = import_tensorflow()
        import keras

        def one(i: int, art, probe: bool = True):
            cfg = DeployConfig(ssh=SshOptions(identity=key, known_hosts=kh, trust_new_host=True), root=str(roots[i]), probe=probe)
            return deploy_host(servers[i].target, cfg, art)

        singles, fleets, singles_np, fleets_np, busy, cpu1, cpu10 = [], [], [], [], [], [], []
        for rnd in range(6):
            probe = rnd < 3
            keras.utils.set_random_seed(rnd)
            k = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
            path = tmp / f"round{rnd}.tflite"
            with open(path, "wb") as fh:
                from mltool._silence import silenced

                with silenced(stdout=True):
                    fh.write(tf.lite.TFLiteConverter.from_keras_model(k).convert())
            art = resolve_artifact(path, f"m{rnd}")
            c0 = time.process_time()
            t0 = time.perf_counter()
            res = one(0, art, probe)
            (singles if probe else singles_np).append(time.perf_counter() - t0)
            cpu1.append(time.process_time() - c0)
            assert res.status == "changed", res.message
            c0 = time.process_time()
            t0 = time.perf_counter()
            b0, a0 = cpu_jiffies()
            with ThreadPoolExecutor(10) as pool:  # what `--parallel 10` does
                results = list(pool.map(lambda i: one(i, art, probe), range(10)))
            (fleets if probe else fleets_np).append(time.perf_counter() - t0)
            b1, a1 = cpu_jiffies()
            busy.append((b1 - b0) / max(1, a1 - a0))
            cpu10.append(time.process_time() - c0)
            bad = [r for r in results if r.status not in ("changed", "unchanged")]
            assert not bad, bad[0].message
        s1, s10 = float(np.median(singles)), float(np.median(fleets))
        print(f"3. one host {s1:.2f} s, 10 hosts --parallel 10 {s10:.2f} s (median of 3) -> {s10 / s1:.2f}x "
              f"({'MET' if s10 / s1 <= 3 else 'MISSED'} <= 3x)")
        n1, n10 = float(np.median(singles_np)), float(np.median(fleets_np))
        print(f"   same with --no-probe (no LiteRT start on the 10 emulated devices, which share this machine's "
              f"{os.cpu_count()} cores with the controller): {n1:.2f} s vs {n10:.2f} s -> {n10 / n1:.2f}x")
        print(f"   machine CPU busy during the 10-host runs: {100 * float(np.median(busy)):.0f}% of all cores "
              f"(saturated means the emulated devices, not the rollout, set the pace)")
        print(f"   mltool's own CPU time: {1000 * float(np.median(cpu1)):.0f} ms for 1 host, "
              f"{1000 * float(np.median(cpu10)):.0f} ms for 10 hosts ({100 * float(np.median(cpu10)) / s10 / (os.cpu_count() or 1):.0f}% "
              f"of the machine during the 10-host run)")
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
