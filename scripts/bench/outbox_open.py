#!/usr/bin/env python
"""Issue #18 item 15: what the outbox's open checks (PRAGMA quick_check, a write check) cost at
start, on a full outbox of the default bound (100,000 rows) and a small one, side by side with
the open without them (the same file, a plain sqlite3 connection doing what Outbox did before).

Usage: .venv/bin/python scripts/bench/outbox_open.py [--rows 100000] [--payload 300]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mltool.report.outbox import _SCHEMA, Outbox  # noqa: E402


def build(path: Path, rows: int, payload: int) -> None:
    box = Outbox(path, max_rows=rows + 10, max_bytes=1 << 34)
    body = b"x" * payload
    for start in range(0, rows, 1000):
        with box.batch():
            for _ in range(min(1000, rows - start)):
                box.put("mltool/cam/events", body, counters=("events",))
    box.close()


def open_plain(path: Path) -> None:
    """The open without the new checks: connect twice, WAL, schema, mirror."""
    dbs = []
    for _ in range(2):
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        dbs.append(db)
    dbs[0].executescript(_SCHEMA)
    dbs[0].execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox").fetchone()
    dbs[0].execute("SELECT key, id, size FROM outbox WHERE key IS NOT NULL ORDER BY id").fetchall()
    for db in dbs:
        db.close()


def open_checked(path: Path) -> None:
    Outbox(path).close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--payload", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        print(f"{'rows':>8} {'file MB':>8} {'open before ms':>15} {'open now ms':>12} {'ratio':>6}")
        for rows in (1_000, a.rows):
            path = Path(d) / f"o{rows}.sqlite"
            build(path, rows, a.payload)
            before, now = [], []
            for _ in range(a.repeat):  # alternate, so both see the same page cache
                t = time.perf_counter()
                open_plain(path)
                before.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                open_checked(path)
                now.append((time.perf_counter() - t) * 1000)
            b, n = statistics.median(before), statistics.median(now)
            print(f"{rows:>8} {path.stat().st_size / 1e6:>8.1f} {b:>15.1f} {n:>12.1f} {n / b:>6.2f}")


if __name__ == "__main__":
    main()
