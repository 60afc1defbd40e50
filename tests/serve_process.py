"""`mltool serve` as a real process on loopback for tests and benchmarks: started with
``--port 0 --json``, ready when it prints its ready line, stopped with a signal."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path


class ServeProcess:
    def __init__(self, args: list, *, log: Path, env: dict[str, str] | None = None, timeout: float = 90.0,
                 python: str | None = None, prefix: list[str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(  # a prefix such as `prlimit --nofile=N` execs the server: same pid
            [*(prefix or []), python or sys.executable, "-m", "mltool", "serve", *map(str, args), "--port", "0", "--json"],
            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env={**os.environ, **(env or {})},
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.ready = self.events.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError(f"serve did not get ready: {self.stderr[-3000:]}") from None
        if self.ready.get("event") != "ready":
            raise RuntimeError(f"serve failed: {self.ready} {self.stderr[-3000:]}")
        self.url = self.ready["url"]
        self.port = self.ready["port"]

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.strip():
                ev = json.loads(line)
                self.lines.append(ev)
                self.events.put(ev)
        self.events.put({"event": "exited"})

    def wait_event(self, kind: str, timeout: float = 30.0) -> dict:
        while True:
            ev = self.events.get(timeout=timeout)
            if ev["event"] in (kind, "exited"):
                return ev

    def memory_mib(self, field: str = "VmRSS") -> float:
        """The server's resident memory now (VmRSS) or at its peak (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    @property
    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def png_1bit(width: int, height: int) -> bytes:
    """A black 1-bit PNG, written row by row (never the whole image in memory): a few KB for
    tens of megapixels (image bombs for serve's tests and scripts/bench/serve_attacks.py)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
