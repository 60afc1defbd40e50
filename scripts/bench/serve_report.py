#!/usr/bin/env python
"""Issue #11 measurements for `mltool serve`, side by side in one run:

1. Added latency of the HTTP path over a bare in-process invoke (p50, p99), one keep-alive
   client on loopback, for a Fashion-MNIST-sized int8 CNN (28x28x1) and MobileNetV2 int8.
   Target: p50 <= 1 ms added.
2. Throughput at 1, 4 and 16 concurrent keep-alive clients vs the bare-invoke ceiling on the
   same threads (2 interpreters, 1 thread each, in-process). Target: >= 90% at 4+ clients.
3. The same model behind Starlette + Uvicorn (pure-Python h11, asyncio loop: what a 32-bit
   Pi OS gets) and behind LitServe (its LitAPI around the same LiteRT interpreter; uvloop and
   httptools, its defaults), with mltool/peer ratios. Target: mltool ahead on both.
4. RSS of each idle server (LitServe: its whole process tree) and start-to-ready time.

Every server answers the same work: an OIP-style request with the model's int8 input tensor,
run on one of 2 interpreters, the output returned as JSON. The small model's tensor travels as a
JSON list (784 numbers) to all servers; MobileNetV2's (150,528 bytes) as binary tensor data
to mltool (the OIP binary extension) and as base64 inside JSON to the peers (which have no
binary form). The client is a minimal keep-alive socket client, so its own cost stays out of
the figures. Rounds are interleaved (this VM's speed swings 2x from minute to minute), and the
servers not being measured are frozen (SIGSTOP) meanwhile.

Usage: .venv/bin/python scripts/bench/serve_report.py [--small M.tflite] [--mobilenet M.tflite] [--seconds 3]
Models are made once into runs/bench/ if not given; LitServe, Starlette and Uvicorn are
installed into their own venv there (runs/bench/litserve-venv) on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1].parent
CACHE = ROOT / "runs" / "bench"
WORKERS = 2

PEER_APP = r'''
# LitServe starts its workers with spawn: everything they need is at module level, the rest under main.
import base64, os, queue, sys
import numpy as np
import litserve as ls
from ai_edge_litert.interpreter import Interpreter


def load():
    it = Interpreter(model_path=os.environ["PEER_MODEL"], num_threads=1)
    it.allocate_tensors()
    return it


def tensor(body, it):
    d = it.get_input_details()[0]
    inp = body["inputs"][0]
    if "b64" in inp:
        x = np.frombuffer(base64.b64decode(inp["b64"]), dtype=d["dtype"])
    else:
        x = np.asarray(inp["data"], dtype=d["dtype"])
    return x.reshape(d["shape"])


def run(it, x):
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    o = it.get_output_details()[0]
    return {"outputs": [{"name": o["name"], "datatype": "FP32", "shape": [int(s) for s in o["shape"]],
                         "data": it.get_tensor(o["index"]).astype(float).reshape(-1).tolist()}]}


class API(ls.LitAPI):
    def setup(self, device):
        self.it = load()

    def decode_request(self, request):
        return tensor(request, self.it)

    def predict(self, x):
        return run(self.it, x)

    def encode_response(self, output):
        return output


def starlette_app(workers):
    # Starlette + Uvicorn, pure-Python HTTP (h11) on the asyncio loop, interpreters in a pool
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pool = queue.Queue()
    for _ in range(workers):
        pool.put(load())

    def work(body):
        it = pool.get()
        try:
            return run(it, tensor(body, it))
        finally:
            pool.put(it)

    async def infer(request):
        return JSONResponse(await run_in_threadpool(work, await request.json()))

    async def health(request):
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/v2/models/m/infer", infer, methods=["POST"]), Route("/health", health)])


if __name__ == "__main__":
    kind, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind == "litserve":
        server = ls.LitServer(API(), accelerator="cpu", workers_per_device=workers, timeout=60, api_path="/v2/models/m/infer")
        server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
    else:
        import uvicorn

        uvicorn.run(starlette_app(workers), host="127.0.0.1", port=port, loop="asyncio", http="h11", log_level="warning", access_log=False)
'''


# --------------------------------------------------------------------------- models and peers


def mltool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltool", *args], capture_output=True, text=True)


def ensure_small() -> Path:
    out = CACHE / "fashion" / "model_int8.tflite"
    if out.exists():
        return out
    print("training a quick Fashion-MNIST CNN (real data, 3000 samples, 2 epochs) and converting it to int8...", file=sys.stderr)
    for cmd in (["train", "fashion-mnist", "--max-samples", "3000", "--epochs", "2", "--out", str(CACHE / "fashion")],
                ["convert", str(CACHE / "fashion"), "-q", "int8"]):
        r = mltool(*cmd)
        if r.returncode != 0:
            sys.exit(r.stderr[-2000:])
    return out


def ensure_mobilenet() -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from device_report import ensure_mobilenet as make

    return make(CACHE)


def peer_python() -> str:
    venv = CACHE / "litserve-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print("installing litserve, starlette, uvicorn, ai-edge-litert into runs/bench/litserve-venv ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "litserve", "ai-edge-litert", "numpy"], check=True)
    return str(py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Server:
    def __init__(self, name: str, argv: list[str], port: int, health: str, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{name} exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                status, _ = http_once(port, b"GET " + health.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            self.stop()
            sys.exit(f"{name} did not get ready: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        self.ready_s = time.perf_counter() - t0

    def pause(self, paused: bool) -> None:
        """SIGSTOP/SIGCONT the whole process tree: an idle peer's housekeeping (LitServe's workers
        poll their queues) must not take CPU from the one being measured on 2 cores."""
        os.killpg(self.proc.pid, 19 if paused else 18)

    def stop(self) -> None:
        os.killpg(self.proc.pid, 18)
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)


# --------------------------------------------------------------------------- a minimal client


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    n = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buf) < end + 4 + n:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    body = bytes(buf[end + 4 : end + 4 + n])
    del buf[: end + 4 + n]
    return status, body


def http_once(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return _read_response(s, bytearray())


class Client:
    """One keep-alive connection sending the same prebuilt request."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request, self.buf = request, bytearray()

    def call(self) -> float:
        t = time.perf_counter()
        try:
            self.sock.sendall(self.request)
            status, body = _read_response(self.sock, self.buf)
        except (ConnectionError, BrokenPipeError):  # the server closed an idle keep-alive connection
            self.sock.close()
            self.__init__(self.port, self.request)  # type: ignore[misc]
            t = time.perf_counter()
            self.sock.sendall(self.request)
            status, body = _read_response(self.sock, self.buf)
        if status != 200:
            raise RuntimeError(body[:300])
        return time.perf_counter() - t


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{h}\r\n").encode() + body


async def load(port: int, request: bytes, clients: int, seconds: float) -> float:
    """Completed requests per second with ``clients`` keep-alive connections."""
    done = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(n)
            if head[9:12] != b"200":
                raise RuntimeError(head)
            done += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- the bare reference


def interpreter(model: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    return it


def bare_call(it, x: np.ndarray) -> float:
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    t = time.perf_counter()
    it.set_tensor(inp, x)
    it.invoke()
    it.get_tensor(out)
    return time.perf_counter() - t


def bare_throughput(model: Path, x: np.ndarray, threads: int, seconds: float) -> float:
    its = [interpreter(model) for _ in range(threads)]
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            bare_call(its[i], x)
            counts[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- the report


def requests_for(model: Path, x: np.ndarray, dtype: str) -> tuple[bytes, bytes, bytes]:
    """(mltool request, peer request, mltool binary request) carrying the same tensor. The small
    tensor goes to everyone as a JSON list; the big one as binary to mltool (the OIP binary data
    extension) and base64-in-JSON to the peers (which have no binary form). The third request is
    always mltool's binary form."""
    shape = list(x.shape)
    header = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": dtype, "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    binary = post("/v2/models/m/infer", header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))})
    if x.size > 10000:
        theirs = post("/v2/models/m/infer", json.dumps({"inputs": [{"b64": base64.b64encode(x.tobytes()).decode()}]}).encode())
        return binary, theirs, binary
    body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": dtype, "data": x.reshape(-1).tolist()}]}).encode()
    return post("/v2/models/m/infer", body), post("/v2/models/m/infer", body), binary


def pct(v: list[float], q: float) -> float:
    return 1000 * float(np.percentile(v, q))


def report(model: Path, label: str, py_peer: str, seconds: float, rounds: int) -> dict:
    it = interpreter(model)
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    info = np.iinfo(d["dtype"])
    x = rng.integers(info.min, int(info.max) + 1, size=d["shape"]).astype(d["dtype"])
    dtype = {"int8": "INT8", "uint8": "UINT8"}[np.dtype(d["dtype"]).name]
    ours_req, peer_req, binary_req = requests_for(model, x, dtype)

    env = {"PYTHONPATH": str(ROOT)}
    app = CACHE / "serve_peer_app.py"
    app.write_text(PEER_APP)
    peer_env = {"PEER_MODEL": str(model)}
    servers = {}
    port = free_port()
    servers["mltool"] = Server("mltool", [sys.executable, "-m", "mltool", "serve", str(model), "--name", "m", "--port", str(port),
                                          "--workers", str(WORKERS), "--threads", "1", "--queue", "64"], port, "/v2/health/ready", env)
    port = free_port()
    servers["starlette"] = Server("starlette+uvicorn", [py_peer, str(app), "starlette", str(port), str(WORKERS)],
                                  port, "/health", peer_env)
    port = free_port()
    servers["litserve"] = Server("litserve", [py_peer, str(app), "litserve", str(port), str(WORKERS)], port, "/health",
                                 peer_env)
    reqs = {"mltool": ours_req, "starlette": peer_req, "litserve": peer_req}
    try:
        clients = {k: Client(s.port, reqs[k]) for k, s in servers.items()}
        clients["mltool-binary"] = Client(servers["mltool"].port, binary_req)
        for c in clients.values():
            for _ in range(50):
                c.call()
        time.sleep(1.0)
        rss = {k: tree_rss_mib(s.proc.pid) for k, s in servers.items()}
        lat: dict[str, list[float]] = {k: [] for k in ["bare", *clients]}
        n = 300 if x.size < 10000 else 60
        def only(name: str | None) -> None:
            for k, s in servers.items():
                if k != name:
                    s.pause(True)
            if name is not None:
                servers[name].pause(False)
                time.sleep(0.2)

        for _ in range(rounds):
            only(None)
            for _ in range(n):
                lat["bare"].append(bare_call(it, x))
            for k, c in clients.items():
                only(k.split("-")[0])
                for _ in range(n):
                    lat[k].append(c.call())
        tput: dict[int, dict[str, float]] = {}
        for conc in (1, 4, 16):
            only(None)
            tput[conc] = {"bare": bare_throughput(model, x, WORKERS, seconds)}
            for k, s in servers.items():
                only(k)
                tput[conc][k] = asyncio.run(load(s.port, reqs[k], conc, seconds))
    finally:
        for s in servers.values():
            s.stop()

    b50, b99 = pct(lat["bare"], 50), pct(lat["bare"], 99)
    print(f"\n== {label}: {model.name}, input {list(x.shape)} {dtype}, {WORKERS} workers x 1 thread ==")
    print(f"1. latency, one keep-alive client, {len(lat['bare'])} requests each, interleaved (ms)")
    print(f"   {'':<24}{'p50':>9}{'p99':>9}{'added p50':>11}{'added p99':>11}")
    print(f"   {'bare invoke':<24}{b50:>9.3f}{b99:>9.3f}")
    for k in clients:
        p50, p99 = pct(lat[k], 50), pct(lat[k], 99)
        flag = f"  ({'MET' if p50 - b50 <= 1.0 else 'MISSED'} <= 1 ms)" if k.startswith("mltool") else ""
        name = "mltool, binary tensor" if k == "mltool-binary" else (servers[k].name + (", JSON list" if k == "mltool" and x.size <= 10000 else ""))
        print(f"   {name:<24}{p50:>9.3f}{p99:>9.3f}{p50 - b50:>11.3f}{p99 - b99:>11.3f}{flag}")
    m50, l50 = pct(lat["mltool"], 50), pct(lat["litserve"], 50)
    print(f"   mltool/litserve latency p50: {m50 / l50:.2f}x (lower is better); mltool/starlette: {m50 / pct(lat['starlette'], 50):.2f}x")
    print(f"2./3. throughput, requests/s, {seconds:g} s per cell (bare = {WORKERS} threads invoking in-process)")
    print(f"   {'clients':<9}{'bare':>9}{'mltool':>9}{'starlette':>11}{'litserve':>10}{'mltool/bare':>13}{'mltool/litserve':>17}")
    for conc, row in tput.items():
        ratio = row["mltool"] / row["bare"]
        flag = f" ({'MET' if ratio >= 0.9 else 'MISSED'} >= 90%)" if conc >= 4 else ""
        print(f"   {conc:<9}{row['bare']:>9.0f}{row['mltool']:>9.0f}{row['starlette']:>11.0f}{row['litserve']:>10.0f}"
              f"{100 * ratio:>12.1f}%{row['mltool'] / row['litserve']:>16.2f}x{flag}")
    print("4. idle RSS (MiB, whole process tree) and start-to-ready (s)")
    for k, s in servers.items():
        print(f"   {s.name:<20}{rss[k]:>8.1f} MiB{s.ready_s:>8.2f} s")
    return {"latency": lat, "throughput": tput, "rss": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=Path, help="a Fashion-MNIST-sized int8 .tflite (default: trained once into runs/bench)")
    ap.add_argument("--mobilenet", type=Path, help="MobileNetV2 int8 .tflite (default: converted once into runs/bench)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput cell")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    small = args.small or ensure_small()
    mnv2 = args.mobilenet or ensure_mobilenet()
    py_peer = peer_python()
    print(f"cpu cores: {os.cpu_count()}; python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.2f}")
    report(small, "Fashion-MNIST-sized CNN int8", py_peer, args.seconds, args.rounds)
    report(mnv2, "MobileNetV2 224 int8", py_peer, args.seconds, max(2, args.rounds // 2))


if __name__ == "__main__":
    main()
