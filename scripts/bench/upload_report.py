#!/usr/bin/env python
"""Upload throughput on a device without SFTP: mltool's exec-channel fallback (`cat > file` over
an SSH exec channel) against its SFTP upload and against scp, same file, same sshd, interleaved.

Two real OpenSSH servers on loopback from the same host keys and config, one without the sftp
subsystem (as Dropbear / BusyBox / trimmed devices are). Connection set-up is included in every
measurement, as it is for scp.

Usage: .venv/bin/python scripts/bench/upload_report.py [--mib 14] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer, keygen  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from mltool.deploy.ssh import Session, parse_target

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keygen(tmp / "key")
        blob = tmp / "model.bin"
        blob.write_bytes(os.urandom(args.mib << 20))
        kh = tmp / "known_hosts"
        with_sftp = SshServer(tmp / "sftp", tmp / "key.pub").start()
        without = SshServer(tmp / "nosftp", tmp / "key.pub", sftp=False).start()
        times: dict[str, list[float]] = {"sftp": [], "exec (no sftp)": [], "scp": []}
        try:
            for r in range(args.rounds):
                for name, server in (("sftp", with_sftp), ("exec (no sftp)", without)):
                    t0 = time.perf_counter()
                    with Session(parse_target(server.target, identity=tmp / "key"), known_hosts=kh, trust_new=True) as s:
                        s.put(blob, str(tmp / f"{name[:4]}{r}.bin"))
                        assert s.sftp_ok is (name == "sftp")
                    times[name].append(time.perf_counter() - t0)
                    assert (tmp / f"{name[:4]}{r}.bin").read_bytes() == blob.read_bytes()
                t0 = time.perf_counter()
                subprocess.run(["scp", "-q", "-P", str(with_sftp.port), "-i", str(tmp / "key"), "-o", f"UserKnownHostsFile={kh}",
                                "-o", "StrictHostKeyChecking=yes", str(blob), f"{with_sftp.target.split(':')[0]}:{tmp / f'scp{r}.bin'}"],
                               check=True)
                times["scp"].append(time.perf_counter() - t0)
        finally:
            with_sftp.stop()
            without.stop()
    rate = {k: args.mib / statistics.median(v) for k, v in times.items()}
    for k, v in rate.items():
        print(f"{k:<15} {v:7.1f} MiB/s  (median of {args.rounds}, {args.mib} MiB, connection included)")
    print(f"exec fallback / sftp: {rate['exec (no sftp)'] / rate['sftp']:.2f}x;  exec fallback / scp: "
          f"{rate['exec (no sftp)'] / rate['scp']:.2f}x")


if __name__ == "__main__":
    main()
