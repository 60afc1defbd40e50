#!/usr/bin/env python
"""Issue #18 measurements: what one hostile, unauthenticated client costs `mltool serve`.

For each attack a fresh server (a small int8 model, default limits, the open-files limit of a
default systemd service: 1,024) is started; one attacker process runs the attack for
``--seconds`` while one well-behaved keep-alive client sends OIP JSON tensor requests back to
back and times each. Printed side by side with an idle run (no attacker) of the same length:

* the server's peak RSS during the attack (VmHWM, reset after warm-up), and its ratio to idle
  (the mean of an idle run before the attacks and one after them);
* the other client's p50 / p99 latency, and the p99's ratio to idle; requests it got answered
  and how many failed (a reset connection is retried once, like any HTTP client);
* the server's CPU use during the run (100% = one core);
* "new conn": the slowest of the new clients that connect every 0.25 s and ask for
  /v2/health/live (or how many got no answer within 2 s);
* what the attacker saw (answers by status, bytes sent, connections made).

Targets: peak RSS under any single attack <= 2x idle; other clients' p99 <= 3x idle.

The attacker process is pinned to the last CPU: on loopback the sender's CPU also does the
receiving side of TCP, and an attacker on a real network spends its own machine's CPU, not
the device's. ``--no-pin`` lets it use every core (on a 2-core machine it then competes with
the server and the measured client for CPU, which is what most of the remaining p99 is).
The server and the measured client run at nice -10 (as root; the attacker at the priority the
bench was started with): this machine is shared, and a device runs its server alone.
``--no-boost`` leaves everything at one priority.

A server whose RSS passes ``--rss-guard`` MiB is stopped at once (the attack "won"); its line
says so. ``--pythonpath DIR`` runs the server from another copy of mltool (e.g. the code
before the fix: ``git archive <commit> mltool | tar -x -C DIR``) for a before/after table.

Usage: .venv/bin/python scripts/bench/serve_attacks.py [--model M.tflite] [--seconds 6] [--only a,b]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_report import Client, ensure_small, free_port, http_once, pct, post  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.serve_process import png_1bit  # noqa: E402  (the same image bombs the tests send)

ROOT = Path(__file__).resolve().parents[2]
NAME = "m"
PRIORITY_BOOST = [0]  # how much the server and the measured client were raised (nice), if at all


# --------------------------------------------------------------------------- payloads


def oip_images(blobs: list[bytes]) -> bytes:
    return json.dumps({"inputs": [{"name": "img", "shape": [len(blobs)], "datatype": "BYTES",
                                   "data": [base64.b64encode(b).decode() for b in blobs]}]}).encode()


# --------------------------------------------------------------------------- attacks (run in a child process)


class Tally:
    def __init__(self, q: mp.Queue) -> None:
        self.q = q
        self.codes: dict[str, int] = {}
        self.sent = 0
        self.connections = 0
        self.lock = threading.Lock()

    def code(self, answer: bytes) -> None:
        c = answer[9:12].decode("latin-1") if answer.startswith(b"HTTP/1.1 ") else ("reset" if not answer else "other")
        with self.lock:
            self.codes[c] = self.codes.get(c, 0) + 1

    def report(self) -> None:
        self.q.put({"codes": self.codes, "sent_mb": round(self.sent / 1e6, 1), "connections": self.connections})


def connect(port: int, t: Tally, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(("127.0.0.1", port))
    t.connections += 1
    return s


def read_answer(s: socket.socket) -> bytes:
    """One answer with a Content-Length body, or what came before the server closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            return buf
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head.lower() else 0
    while len(body) < n:
        b = s.recv(65536)
        if not b:
            break
        body += b
    return head + b"\r\n\r\n" + body


def repeat_request(port: int, request: bytes, stop, t: Tally) -> None:  # noqa: ANN001
    """The same request back to back on keep-alive connections, answers read."""
    s = None
    while not stop.is_set():
        try:
            if s is None:
                s = connect(port, t)
                s.settimeout(10)
            s.sendall(request)
            t.sent += len(request)
            answer = read_answer(s)
            t.code(answer)
            if b"connection: close" in answer.lower() or not answer:
                s.close()
                s = None
        except OSError:
            t.code(b"")
            if s is not None:
                s.close()
            s = None
            time.sleep(0.01)


def attack_chunked_huge(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 1: chunk size FFFFFFFFFF, then bytes as fast as loopback allows."""
    head = f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n".encode()
    send_until_answered(port, head, b"a" * 65536, 1, stop, t)


def send_until_answered(port: int, head: bytes, block: bytes, timeout: float, stop, t: Tally) -> None:  # noqa: ANN001
    """Connect, send ``head``, then ``block`` after ``block`` until the server answers (counted)
    or the attack ends; again and again."""
    while not stop.is_set():
        try:
            s = connect(port, t)
            s.settimeout(timeout)
            s.sendall(head)
            while not stop.is_set():
                s.sendall(block)
                t.sent += len(block)
                if select.select([s], [], [], 0)[0]:
                    t.code(s.recv(65536))
                    break
            s.close()
        except OSError:
            t.code(b"")


def pipeline(port: int, request: bytes, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 2: one connection, small receive buffer, the same request pipelined, never read."""
    burst = request * max(1, 65536 // len(request))
    while not stop.is_set():
        try:
            s = connect(port, t, rcvbuf=4096)
            s.settimeout(0.2)
            while not stop.is_set():
                try:
                    t.sent += s.send(burst)
                except socket.timeout:
                    pass
            s.close()
        except OSError:
            t.code(b"")
            time.sleep(0.05)


def attack_pipeline_404(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    pipeline(port, b"GET /" + b"a" * 16000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", stop, t)


def attack_pipeline_metrics(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    pipeline(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", stop, t)


def attack_image_bomb(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 3: a 62 Mpx 1-bit PNG (about 8 KB) as an upload."""
    png = png_1bit(7800, 8000)
    repeat_request(port, post("/api/image", png).replace(b"application/json", b"image/png"), stop, t)


def attack_image_max(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """The largest image still decoded: 39.7 Mpx, 1-bit."""
    png = png_1bit(6300, 6300)
    repeat_request(port, post("/api/image", png).replace(b"application/json", b"image/png"), stop, t)


def attack_image_batch(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 3: ten 62 Mpx PNGs in one OIP BYTES request (about 100 KB)."""
    repeat_request(port, post(f"/v2/models/{NAME}/infer", oip_images([png_1bit(7800, 8000)] * 10)), stop, t)


def attack_image_batch_max(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Ten 4 Mpx PNGs: the whole per-request budget (40 Mpx), decoded."""
    repeat_request(port, post(f"/v2/models/{NAME}/infer", oip_images([png_1bit(2000, 2000)] * 10)), stop, t)


def attack_conn_flood(port: int, stop, t: Tally, reopen: bool = False) -> None:  # noqa: ANN001
    """Issue item 4: 1,100 idle connections held open (``reopen``: each reopened as soon as the
    server closes it, a harsher variant the issue did not try)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import selectors

    sel = selectors.DefaultSelector()  # epoll: more than 1,024 descriptors
    open_now, opened = 0, 0
    while not stop.is_set():
        while open_now < 1100 and (reopen or opened < 1100) and not stop.is_set():
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_READ)
                open_now += 1
                opened += 1
                t.connections += 1
            except OSError:
                break
        for key, _ in sel.select(0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:  # closed by the server: open another
                t.code(b"")
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                open_now -= 1
            else:
                t.code(data)
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def attack_conn_churn(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    attack_conn_flood(port, stop, t, reopen=True)


def attack_trailer_x4(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 5: four connections whose chunked body ends `0\\r\\n` and whose trailer never
    ends, sent in small packets."""
    head = f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n".encode()

    threads = [threading.Thread(target=send_until_answered, args=(port, head + b"X-T: ", b"a" * 64, 2, stop, t))
               for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def attack_nested_json(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """Issue item 7: a 1 MB body of '['."""
    repeat_request(port, post(f"/v2/models/{NAME}/infer", b"[" * 1_000_000), stop, t)


def attack_slowloris(port: int, stop, t: Tally) -> None:  # noqa: ANN001
    """200 connections each sending one header byte a second (slow, never stalled)."""
    socks = []
    for _ in range(200):
        try:
            s = connect(port, t)
            s.sendall(b"GET /v2 HTTP/1.1\r\n")
            socks.append(s)
        except OSError:
            t.code(b"")
    while not stop.is_set():
        for s in list(socks):
            try:
                s.send(b"X")
                t.sent += 1
            except OSError:
                t.code(b"")
                socks.remove(s)
        stop.wait(1.0)
    for s in socks:
        s.close()


ATTACKS = {
    "chunked_huge": attack_chunked_huge,
    "pipeline_404": attack_pipeline_404,
    "pipeline_metrics": attack_pipeline_metrics,
    "image_bomb": attack_image_bomb,
    "image_max": attack_image_max,
    "image_batch": attack_image_batch,
    "image_batch_max": attack_image_batch_max,
    "conn_flood": attack_conn_flood,
    "conn_churn": attack_conn_churn,
    "trailer_x4": attack_trailer_x4,
    "nested_json": attack_nested_json,
    "slowloris": attack_slowloris,
}


def run_attack(name: str, port: int, stop, q: mp.Queue) -> None:  # noqa: ANN001
    os.nice(PRIORITY_BOOST[0])  # back to the priority the bench was started with
    t = Tally(q)
    try:
        ATTACKS[name](port, stop, t)
    finally:
        t.report()


# --------------------------------------------------------------------------- the server and the measuring client


class Server:
    def __init__(self, model: Path, pythonpath: str | None, nofile: int = 1024) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": pythonpath or str(ROOT)}
        argv = ["prlimit", f"--nofile={nofile}:{nofile}", sys.executable, "-m", "mltool", "serve", str(Path(model).resolve()),
                "--port", str(self.port), "--name", NAME]
        self.log = tempfile.TemporaryFile()  # not a pipe: a server that logs a lot must never block on it
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log, env=env,
                                     cwd=pythonpath or ROOT)  # `-m` puts the working directory first on sys.path
        self.log_lines = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"serve exited: {self.stop()[-2000:]}")
            try:
                if http_once(self.port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            self.stop()
            sys.exit("serve did not get ready")

    def memory(self, field: str) -> float:
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def http_once_timeout(port: int, request: bytes, timeout: float) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request)
        answer = read_answer(s)
        return int(answer[9:12]), answer


def measure(model: Path, attack: str | None, seconds: float, request: bytes, pythonpath: str | None, guard_mib: float,
            pin: bool = True) -> dict:
    server = Server(model, pythonpath)
    client = Client(server.port, request)
    for _ in range(50):  # warm-up
        client.call()
    can_reset = server.reset_peak()
    sampled = [server.memory("VmRSS")]
    ctx = mp.get_context("fork")
    stop, q = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=run_attack, args=(attack, server.port, stop, q), daemon=True) if attack else None
    if proc is not None:
        proc.start()
        if pin and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(proc.pid, {max(os.sched_getaffinity(0))})
        time.sleep(0.3)  # let the attack take hold before timing the other client
    lat: list[float] = []
    errors = 0
    guard_hit = False
    fresh: list[float] = []  # a new client: connect and get /v2/health/live, every 0.25 s (2 s at most)
    done = threading.Event()

    def newcomer() -> None:
        while not done.wait(0.25):
            t = time.perf_counter()
            try:
                status, _ = http_once_timeout(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", 2.0)
                fresh.append(time.perf_counter() - t if status == 200 else float("inf"))
            except (OSError, ValueError, IndexError):
                fresh.append(float("inf"))

    probe = threading.Thread(target=newcomer, daemon=True)
    probe.start()
    cpu0, t0 = server.cpu_s(), time.perf_counter()
    end = t0 + seconds
    last_sample = 0.0
    while time.perf_counter() < end:
        try:
            lat.append(client.call())
        except (OSError, RuntimeError, ValueError, IndexError):
            errors += 1
            try:
                client = Client(server.port, request)
            except OSError:
                time.sleep(0.01)
        now = time.perf_counter()
        if now - last_sample > 0.05:
            last_sample = now
            rss = server.memory("VmRSS")
            sampled.append(rss)
            if rss > guard_mib:
                guard_hit = True
                break
    cpu = (server.cpu_s() - cpu0) / (time.perf_counter() - t0)
    done.set()
    probe.join(5)
    stop.set()
    seen: dict = {}
    if proc is not None:
        try:
            seen = q.get(timeout=15)
        except Exception:
            seen = {}
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    peak = server.memory("VmHWM") if can_reset else max(sampled)
    after = server.memory("VmRSS")
    err = server.stop()
    return {"attack": attack or "idle", "peak_mib": peak, "after_mib": after, "p50_ms": pct(lat, 50) if lat else float("nan"),
            "p99_ms": pct(lat, 99) if lat else float("nan"), "answered": len(lat), "errors": errors, "guard": guard_hit, "server_cpu": cpu,
            "new_ms": 1000 * max(fresh) if fresh else float("nan"), "new_failed": sum(f == float("inf") for f in fresh),
            "new_tries": len(fresh),
            "attacker": seen, "log_lines": err.count("\n"), "tracebacks": err.count("Traceback")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="a small int8 .tflite (default: a Fashion-MNIST CNN made once into runs/bench)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--only", help="comma-separated attacks (default: all)")
    ap.add_argument("--pythonpath", help="run the server from this copy of mltool")
    ap.add_argument("--rss-guard", type=float, default=3000.0, help="stop a server whose RSS passes this many MiB")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-pin", action="store_true", help="let the attacker run on every core (see the docstring)")
    ap.add_argument("--no-boost", action="store_true", help="run the server and the measured client at normal priority")
    args = ap.parse_args()
    model = args.model or ensure_small()
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    d = it.get_input_details()[0]
    x = np.zeros(d["shape"], d["dtype"]).tolist()
    datatype = {"int8": "INT8", "uint8": "UINT8", "float32": "FP32"}[str(d["dtype"].__name__)]
    request = post(f"/v2/models/{NAME}/infer", json.dumps({"inputs": [{"name": "x", "shape": [int(s) for s in d["shape"]],
                                                                        "datatype": datatype, "data": x}]}).encode())
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        sys.exit(f"unknown attack(s) {unknown}; known: {', '.join(ATTACKS)}")
    pin = not args.no_pin
    if not args.no_boost:
        try:
            os.nice(-10)  # the server (started from here) and the measured client; the attacker goes back
            PRIORITY_BOOST[0] = 10
        except PermissionError:
            pass
    print(f"model {model} ({datatype} input {[int(v) for v in d['shape']]}); {args.seconds:g} s per run; server from "
          f"{args.pythonpath or ROOT}; open-files limit 1024; attacker "
          f"{'pinned to CPU ' + str(max(os.sched_getaffinity(0))) if pin else 'on every CPU'} of {os.cpu_count()}; "
          f"server and measured client {'at nice -10 relative to the attacker' if PRIORITY_BOOST[0] else 'at normal priority'}",
          flush=True)
    rows = [measure(model, None, args.seconds, request, args.pythonpath, args.rss_guard, pin)]
    for name in names:
        rows.append(measure(model, name, args.seconds, request, args.pythonpath, args.rss_guard, pin))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    rows.append({**measure(model, None, args.seconds, request, args.pythonpath, args.rss_guard, pin), "attack": "idle (again)"})
    # the baseline: the mean of the idle runs before and after the attacks (this machine's noise moves either)
    idle = {k: (rows[0][k] + rows[-1][k]) / 2 for k in ("peak_mib", "p99_ms")}
    print(f"\n{'attack':<18}{'peak RSS':>10}{'x idle':>8}{'after':>8}{'p50 ms':>9}{'p99 ms':>9}{'x idle':>8}"
          f"{'answered':>10}{'failed':>8}{'srv CPU':>9}{'new conn':>10}  attacker saw")
    for r in rows:
        rss_x = r["peak_mib"] / idle["peak_mib"]
        p99_x = r["p99_ms"] / idle["p99_ms"]
        ok = "" if rss_x <= 2 and p99_x <= 3 and not r["new_failed"] else "  <-- over target"
        guard = f" (RSS guard {args.rss_guard:g} MiB hit: stopped)" if r["guard"] else ""
        newc = f"{r['new_failed']}/{r['new_tries']} lost" if r["new_failed"] else f"{r['new_ms']:.0f} ms"
        seen = r["attacker"]
        saw = ", ".join(f"{k}x{v}" for k, v in sorted(seen.get("codes", {}).items()))
        if seen:
            saw += f"; {seen.get('sent_mb', 0)} MB sent, {seen.get('connections', 0)} connections"
        if r["tracebacks"] or r["log_lines"] > 5:
            saw += f"; server log {r['log_lines']} lines, {r['tracebacks']} tracebacks"
        print(f"{r['attack']:<18}{r['peak_mib']:>8.1f}Mi{rss_x:>8.2f}{r['after_mib']:>8.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{p99_x:>8.2f}{r['answered']:>10}{r['errors']:>8}{100 * r['server_cpu']:>8.0f}%{newc:>10}  {saw}{guard}{ok}")
    print(f"\nx idle: against the mean of the two idle runs ({idle['peak_mib']:.1f} MiB, p99 {idle['p99_ms']:.2f} ms)")
    print("targets: peak RSS under any single attack <= 2x idle; other clients' p99 <= 3x idle")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
