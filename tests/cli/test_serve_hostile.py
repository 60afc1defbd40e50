"""`mltool serve` against one unauthenticated, hostile client (issue #18, items 1-9): raw sockets
for what no HTTP library would send, a real server process, its memory read from /proc. Each
case here took the server down, answered wrongly or leaked before."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.serve_process import png_1bit

KEY = "k" * 16
INFER = "/v2/models/digits/infer"


def _tensor(values: list | None = None, **extra) -> dict:
    inp = {"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": values if values is not None else [0.5] * 64}
    return {"inputs": [{**inp, **extra}]}


def _sock(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a refused request is answered, then closed)."""
    chunks = []
    while True:
        try:
            b = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with _sock(port, timeout) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _error(answer: bytes) -> str:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def _reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux, as root)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# --------------------------------------------------------------------------- 1. chunked sizes


def test_a_chunk_size_over_max_body_is_refused_before_its_bytes(serve, digits_int8):
    s = serve(digits_int8, "--max-body", "1MB", env={"MLTOOL_API_KEY": KEY})  # before authentication
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    with _sock(s.port) as sock:
        sock.sendall(head + b"FFFFFFFFFF\r\n" + b"a" * 65536)
        answer = _read_all(sock)
    assert _status(answer) == 413 and "over 1048576 bytes (--max-body)" in _error(answer)
    # the running total: two chunks of 400 KB fit, the third chunk's size line passes 1 MB
    part = b"64000\r\n" + b"b" * 0x64000 + b"\r\n"
    with _sock(s.port) as sock:
        sock.sendall(head + part + part + b"64000\r\n")
        answer = _read_all(sock)
    assert _status(answer) == 413
    assert requests.post(s.url + INFER, json=_tensor(), headers={"X-API-Key": KEY}).status_code == 200


# --------------------------------------------------------------------------- 2. unread answers


def test_a_client_that_never_reads_its_answers_costs_one_write_buffer(serve, digits_int8):
    s = serve(digits_int8)
    before = s.memory_mib()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.settimeout(0.2)
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000  # ~3 KB answered for every 36 bytes sent
    sent, end = 0, time.monotonic() + 4
    while time.monotonic() < end:
        try:
            sent += sock.send(burst)
        except socket.timeout:
            pass  # the server stopped reading: what it must do
    grown = s.memory_mib() - before
    t0 = time.monotonic()
    assert requests.get(f"{s.url}/v2/health/live", timeout=5).status_code == 200
    other_ms = (time.monotonic() - t0) * 1000
    sock.close()
    print(f"sent {sent / 1e6:.1f} MB of pipelined requests; server RSS +{grown:.1f} MiB; another client {other_ms:.1f} ms")
    assert sent < 32e6, sent  # the server stopped reading once its answers were not taken
    assert grown < 32, grown


# --------------------------------------------------------------------------- 3. image bombs


def _oip_images(blobs: list[bytes]) -> dict:
    return {"inputs": [{"name": "img", "shape": [len(blobs)], "datatype": "BYTES",
                        "data": [base64.b64encode(b).decode() for b in blobs]}]}


def test_image_bombs_are_refused_from_their_header_or_decoded_reduced(serve, digits_int8):
    s = serve(digits_int8)
    bomb = png_1bit(7800, 8000)  # 62 Mpx in about 8 KB
    assert len(bomb) < 16_000
    _reset_peak(s.proc.pid)
    base = s.memory_mib()
    r = requests.post(f"{s.url}/api/image", data=bomb, headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "is 7800x8000 (62 MP), more than mltool decodes (40 MP)" in r.json()["error"]
    # the largest allowed: decoded at 1 byte a pixel, reduced before its colour conversion
    r = requests.post(f"{s.url}/api/image", data=png_1bit(6300, 6300), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["predictions"] and (r.json()["width"], r.json()["height"]) == (6300, 6300)
    # a batch: a pixel budget for the request, counted from the headers before decoding
    twelve = png_1bit(4000, 3000)
    r = requests.post(s.url + INFER, json=_oip_images([twelve] * 10))
    assert r.status_code == 413 and "over 40 Mpx together (at inputs[0] (img)[3])" in r.json()["error"]
    r = requests.post(f"{s.url}/v1/models/digits:predict", json={"instances": [{"b64": base64.b64encode(bomb).decode()}] * 10})
    assert r.status_code == 400 and "instances[0] is 7800x8000 (62 MP)" in r.json()["error"]
    r = requests.post(s.url + INFER, json=_oip_images([twelve] * 3))
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"][0] == 3
    peak = s.memory_mib("VmHWM") - base
    print(f"peak RSS over the bombs: +{peak:.0f} MiB")
    assert peak < 100, peak  # before: 830 MB for the 62 Mpx PNG, 2.4 GB for the batch


def test_infer_refuses_the_same_image_bomb_with_bounded_memory(digits_int8, tmp_path):
    files = {"small.png": png_1bit(64, 64), "big.png": png_1bit(6300, 6300), "bomb.png": png_1bit(7800, 8000)}
    # The child's own peak (VmHWM, reset by exec), printed as it exits: ru_maxrss from wait4
    # would start at this (large) test process's size, inherited through fork.
    wrapper = ("import atexit, runpy, sys\n"
               "atexit.register(lambda: print([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0], file=sys.stderr))\n"
               "sys.argv = ['mltool', *sys.argv[1:]]\nrunpy.run_module('mltool', run_name='__main__')")
    runs = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        r = subprocess.run([sys.executable, "-c", wrapper, "infer", str(digits_int8), str(tmp_path / name), "--json"],
                           capture_output=True, text=True, timeout=120)
        runs[name] = (r.returncode, r.stdout, r.stderr, int(r.stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024)
    code, out, err, _ = runs["bomb.png"]
    assert code == 1 and "Traceback" not in err
    assert "bomb.png is 7800x8000 (62 MP), more than mltool decodes (40 MP)" in err
    code, out, err, _ = runs["big.png"]
    assert code == 0 and json.loads(out.splitlines()[0])["predictions"], err
    grown = {name: run[3] - runs["small.png"][3] for name, run in runs.items()}
    print(f"infer peak RSS over a 64x64 PNG (MiB): {grown}")
    assert grown["bomb.png"] < 20 and grown["big.png"] < 120, grown  # before: about +800 and +450


# --------------------------------------------------------------------------- 4. connection flood


def test_an_idle_connection_flood_never_locks_other_clients_out(serve, digits_int8):
    from mltool.deploy.service import render_unit
    from mltool.layout import DeviceLayout

    assert "LimitNOFILE=8192\n" in render_unit(DeviceLayout("~/mltool"), "digits", "serve --host 0.0.0.0", "/home/pi")
    s = serve(digits_int8, prefix=["prlimit", "--nofile=300:300"])
    regular = _sock(s.port)  # a keep-alive client that was answered before the flood keeps its connection
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    regular.sendall(live)
    assert regular.recv(65536).startswith(b"HTTP/1.1 200 ")
    flood = []
    try:
        for _ in range(400):  # more connections than the server may open files
            flood.append(_sock(s.port))
        t0 = time.monotonic()
        r = requests.get(f"{s.url}/v2/health/live", timeout=5)
        took = time.monotonic() - t0
        assert r.status_code == 200
        assert requests.post(s.url + INFER, json=_tensor(), timeout=5).status_code == 200
        regular.sendall(live)
        assert regular.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        regular.close()
        for c in flood:
            c.close()
    time.sleep(0.5)
    err = s.stderr
    print(f"answered in {took * 1000:.0f} ms behind 400 idle connections; stderr: {err[-400:]}")
    assert "Traceback" not in err and "cannot accept" not in err and len(err) < 1000
    assert err.count("connection limit (172) reached: closing the longest-idle connections") == 1
    assert took < 1


def test_a_failed_accept_is_logged_once_a_minute():
    import asyncio

    from mltool.serve.http import HttpServer, Response

    lines: list[str] = []

    async def handler(req):  # noqa: ANN001, ANN202
        return Response()

    async def main() -> None:
        srv = HttpServer(handler, max_body=1024, log=lines.append)
        await srv.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        for _ in range(1000):  # what asyncio reports on every failed accept() (EMFILE)
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        await srv.drain(1)
        assert srv.accept_errors == 1000

    asyncio.run(main())
    assert len(lines) == 1 and "cannot accept connections ([Errno 24] Too many open files)" in lines[0]
    assert "LimitNOFILE=" in lines[0]


# --------------------------------------------------------------------------- 5. trailers


def test_a_chunked_trailer_is_bounded_like_the_headers(serve, digits_int8):
    s = serve(digits_int8)
    body = json.dumps(_tensor()).encode()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
    ok = _raw(s.port, head + chunked + b"X-Checksum: 1\r\n\r\n")
    assert _status(ok) == 200
    with _sock(s.port) as sock:
        sock.sendall(head + chunked + b"X-Trailer: ")
        for _ in range(20):  # 20 KB of one trailer line, 1 KB a packet, never ended
            try:
                sock.sendall(b"a" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.01)
        answer = _read_all(sock)
    assert _status(answer) == 431 and "trailer is larger than 16384 bytes" in _error(answer)


# --------------------------------------------------------------------------- 6. digits that are not ASCII


def test_lengths_in_other_digits_are_400(serve, digits_int8):
    s = serve(digits_int8)
    answer = _raw(s.port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\nab".encode("latin-1"))
    assert _status(answer) == 400 and "invalid Content-Length" in _error(answer)
    body = json.dumps(_tensor()).encode()
    r = requests.post(s.url + INFER, data=body, headers={"Inference-Header-Content-Length": "\u00b2".encode("latin-1")})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    assert "Traceback" not in s.stderr


# --------------------------------------------------------------------------- 7. values that are not numbers


@pytest.mark.parametrize("value, says", [
    ("NaN", "has NaN, Infinity or a number beyond FP32's range"),
    ("Infinity", "has NaN, Infinity or a number beyond FP32's range"),
    ("1e39", "has NaN, Infinity or a number beyond FP32's range"),
    ("null", "must hold only numbers; it has null"),
    ("true", "must hold only numbers; it has true"),
    ('"1.5"', 'must hold only numbers; it has "1.5"'),
    ("1" * 4000, "must hold only numbers (in range)"),
])
def test_tensor_values_that_are_not_finite_numbers_are_400(serve_digits, value, says):
    s = serve_digits
    body = '{"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [' + "0.5, " * 63 + value + "]}]}"
    r = requests.post(s.url + INFER, data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("inputs[0] (x).data ") and says in r.json()["error"], r.text
    tfs = '{"instances": [[' + "0.5, " * 63 + value + "]]}"
    r = requests.post(f"{s.url}/v1/models/digits:predict", data=tfs)
    assert r.status_code == 400 and r.json()["error"].startswith("instances ") and says in r.json()["error"], r.text


@pytest.fixture(scope="module")
def serve_digits(digits_int8, tmp_path_factory):
    from tests.serve_process import ServeProcess

    p = ServeProcess([digits_int8], log=tmp_path_factory.mktemp("serve") / "serve.log")
    yield p
    p.stop()


def test_malformed_requests_are_400_naming_the_field(serve_digits):
    s = serve_digits
    url = s.url + INFER

    def err(resp) -> str:
        assert resp.status_code == 400, resp.text
        return resp.json()["error"]

    assert "nested too deeply" in err(requests.post(url, data=b"[" * 100_000))
    assert "inputs[0] (x).datatype ['FP32'] is not supported" in err(requests.post(url, json=_tensor(datatype=["FP32"])))
    assert "outputs must be a list of" in err(requests.post(url, json={**_tensor(), "outputs": [{"name": ["label"]}]}))
    assert "unknown output(s) nope" in err(requests.post(url, json={**_tensor(), "outputs": [{"name": "nope"}]}))
    assert "id must be a string" in err(requests.post(url, json={**_tensor(), "id": [[[]]]}))
    nested = {"inputs": [{"name": "img", "shape": [1], "datatype": "BYTES", "data": json.loads("[" * 900 + '"x"' + "]" * 900)}]}
    assert "is not valid base64" in err(requests.post(url, data=json.dumps(nested)))
    assert requests.post(url, json=_tensor()).status_code == 200
    assert "Traceback" not in s.stderr and "internal error" not in s.stderr


# --------------------------------------------------------------------------- 8. timeouts


def test_non_finite_times_are_usage_errors(cli, digits_int8):
    for args, says in ((["--request-timeout", "nan"], "--request-timeout nan must be a positive, finite number"),
                       (["--read-timeout", "nan"], "--read-timeout nan must be a positive"),
                       (["--read-timeout", "-1"], "--read-timeout -1 must be a positive"),
                       (["--fps", "nan"], "--fps nan must be a positive"),
                       (["--fps", "inf"], "--fps inf must be a positive"),
                       (["--max-connections", "0"], "--max-connections 0 must be at least 1")):
        r = cli(["serve", digits_int8, *args])
        assert r.exit_code == 2 and says in r.stderr, (args, r.stderr)


def test_read_timeout_is_a_stall_timeout_with_a_total_cap(serve, digits_int8):
    s = serve(digits_int8, "--read-timeout", "0.3")
    body = json.dumps(_tensor()).encode().ljust(30_000)  # JSON may end in spaces
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    with _sock(s.port, 10) as sock:  # a steady 10 KB/s upload: 3 s in all, never 0.3 s without a byte
        sock.sendall(head)
        for i in range(0, len(body), 1000):
            sock.sendall(body[i : i + 1000])
            time.sleep(0.1)
        answer = _read_all(sock)
    assert _status(answer) == 200, answer[:300]
    t0 = time.monotonic()
    with _sock(s.port, 10) as sock:  # stalls after its first kilobyte
        sock.sendall(head + body[:1000])
        answer = _read_all(sock)
    assert _status(answer) == 408 and "nothing arrived for 0.3 s (--read-timeout)" in _error(answer)
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    with _sock(s.port, 30) as sock:  # a byte every 0.1 s never stalls, but may not take forever
        sock.sendall(head)
        answer = b""
        for i in range(len(body)):
            try:
                sock.sendall(body[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if time.monotonic() - t0 > 20:
                break
        answer = _read_all(sock)
    assert _status(answer) == 408 and "took longer than 9 s to arrive (30 x --read-timeout)" in _error(answer)
    assert 8.5 < time.monotonic() - t0 < 15


# --------------------------------------------------------------------------- 9. the smaller ones


def test_ready_names_no_files_and_errors_say_no_release(serve, digits_int8, tmp_path):
    model = tmp_path / "models" / "digits"
    for rel, data in (("r1", digits_int8.read_bytes()), ("r2", b"TFL3 not a model at all")):
        (model / "releases" / rel).mkdir(parents=True)
        (model / "releases" / rel / "model.tflite").write_bytes(data)
    (model / "current").symlink_to("releases/r1")
    s = serve(model, "--poll", "0.2", env={"MLTOOL_API_KEY": KEY})
    (model / "next").symlink_to("releases/r2")
    os.replace(model / "next", model / "current")
    assert s.wait_event("reload_failed")["event"] == "reload_failed"
    public = requests.get(f"{s.url}/v2/health/ready")
    assert public.status_code == 200 and public.json()["reload"]["failures"] == 1
    assert "error" not in public.json()["reload"] and str(tmp_path) not in public.text
    keyed = requests.get(f"{s.url}/v2/health/ready", headers={"X-API-Key": KEY}).json()
    assert str(tmp_path) in keyed["reload"]["error"]

    assert "X-Model-Release" not in requests.get(f"{s.url}/v2/models/digits").headers  # 401
    assert "X-Model-Release" not in requests.get(f"{s.url}/nothing", headers={"X-API-Key": KEY}).headers  # 404
    assert "X-Model-Release" not in requests.get(f"{s.url}/v2/models/other", headers={"X-API-Key": KEY}).headers
    assert "X-Model-Release" in requests.get(f"{s.url}/v2/models/digits", headers={"X-API-Key": KEY}).headers
    long = requests.get(f"{s.url}/" + "a" * 16_000, headers={"X-API-Key": KEY})
    assert long.status_code == 404 and len(long.content) < 200 and long.json()["error"].endswith("a...")


@pytest.mark.parametrize("request_bytes, says", [
    (b"GET /v2 HTTP/1.1\r\nBad Header: x\r\n\r\n", "malformed header line"),
    (b"GET /v2 HTTP/1.1\r\n Folded: x\r\n\r\n", "malformed header line"),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "different Content-Length values"),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nabc", "different Content-Length values"),
    (b"POST /predict HTTP/1.1\r\nContent-Length: +2\r\n\r\nab", "invalid Content-Length"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", "chunk size '0x2' is not 1-16 hex digits"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0_2\r\nab\r\n0\r\n\r\n", "chunk size '0_2' is not 1-16 hex digits"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n", "is not 1-16 hex digits"),
    (b"GET /v2 HTTP/1.9\r\n\r\n", "HTTP version 'HTTP/1.9' is not supported"),
    (b"GET /v2 HTTP/2.0\r\n\r\n", "HTTP version 'HTTP/2.0' is not supported"),
])
def test_what_rfc_9112_refuses_is_400(serve_digits, request_bytes, says):
    answer = _raw(serve_digits.port, request_bytes)
    assert _status(answer) == 400 and says in _error(answer), answer


def test_model_names_must_be_addressable_and_are_percent_decoded(cli, serve, digits_int8):
    for name in ("a/b", "a:b", "a b", "a%b"):
        r = cli(["serve", digits_int8, "--name", name])
        assert r.exit_code == 2 and f"model name {name!r} (--name)" in r.stderr and "no URL could address it" in r.stderr, r.stderr
    s = serve(digits_int8, "--name", "digits-1")
    assert requests.post(f"{s.url}/v2/models/digits%2D1/infer", json=_tensor()).status_code == 200
    assert requests.get(f"{s.url}/v1/models/digits%2d1").status_code == 200


def test_ok_requests_still_pass_the_stricter_parser(serve_digits):
    """What the stricter parser must keep accepting: equal repeated lengths, chunk extensions,
    upper-case hex, HTTP/1.0."""
    body = json.dumps(_tensor()).encode()
    port = serve_digits.port
    same = f"POST {INFER} HTTP/1.1\r\nContent-Length: {len(body)}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    assert _status(_raw(port, same)) == 200
    ext = (f"POST {INFER} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len(body):X};name=v\r\n".encode()
           + body + b"\r\n0\r\n\r\n")
    assert _status(_raw(port, ext)) == 200
    assert _status(_raw(port, b"GET /v2/health/live HTTP/1.0\r\n\r\n")) == 200


def test_large_images_are_decoded_reduced_the_way_a_viewer_shows_them(tmp_path):
    """The reduction keeps the EXIF orientation, never goes below the model's input, and leaves
    images up to 4 Mpx as they are."""
    import numpy as np
    from PIL import Image

    from mltool.data.images import REDUCE_ABOVE, decode_image

    x = np.zeros((1200, 4000, 3), np.uint8)
    x[:, :2000] = (255, 0, 0)
    x[:, 2000:] = (0, 0, 255)
    img = Image.fromarray(x)
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the red half on top
    img.save(tmp_path / "wide.png", exif=exif)
    small = decode_image(tmp_path / "wide.png", (32, 32))
    assert small.shape == (2000, 600, 3) and small.shape[0] * small.shape[1] <= REDUCE_ABOVE
    assert tuple(small[10, 300]) == (255, 0, 0) and tuple(small[-10, 300]) == (0, 0, 255)
    assert decode_image(tmp_path / "wide.png").shape == (4000, 1200, 3)  # no model input: full size
    assert decode_image(tmp_path / "wide.png", (1500, 1500)).shape == (4000, 1200, 3)  # never below the input
    Image.fromarray(x[:1000, :1900]).save(tmp_path / "fits.png")
    assert decode_image(tmp_path / "fits.png", (32, 32)).shape == (1000, 1900, 3)
