"""A small HTTP/1.1 server on asyncio's protocol layer, standard library only.

Why not an ASGI stack: on a Raspberry Pi the server's own cost per request is what a user
waits for beyond the model, and 32-bit Pi OS has no uvloop/httptools wheels, so Uvicorn falls
back to h11 in pure Python. This server parses a request with a few ``bytes`` operations and
answers from the same callback (``scripts/bench/serve_report.py`` measures both stacks).

What it does: keep-alive and pipelined requests (answered in order), ``Content-Length`` and
chunked request bodies, ``Expect: 100-continue``, a body limit answered with 413 before the
body is read, a header limit (431), a read timeout for slow or stalled senders (408), an idle
timeout for keep-alive connections, close-delimited streaming responses (MJPEG, SSE) that
never buffer more than the socket's write buffer, and a drain on shutdown that lets the
requests in flight finish. A handler that raises answers 500; nothing a client sends can stop
the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

MAX_HEADER_BYTES = 16 * 1024
WRITE_HIGH_WATER = 256 * 1024


class HttpError(Exception):
    """Raised by handlers (and the parser) to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "body", "keep_alive", "received", "release")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.target = target
        path, _, self.query = target.partition("?")
        self.path = path
        self.version = version
        self.headers = headers
        self.body = b""
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        self.received = time.perf_counter()
        self.release: str | None = None  # the model release that answered, once one did

    def json(self) -> Any:
        if not self.body:
            raise HttpError(400, "the request has no body; send a JSON object")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON ({exc})") from None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers if headers is not None else []

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(), "application/json", headers)


class Stream:
    """A close-delimited streaming answer: ``produce(writer)`` sends parts until the client goes
    away or the server stops."""

    __slots__ = ("status", "content_type", "headers", "produce")

    def __init__(self, produce: Callable[[StreamWriter], Awaitable[None]], content_type: str,
                 headers: list[tuple[str, str]] | None = None, status: int = 200) -> None:
        self.produce = produce
        self.content_type = content_type
        self.headers = headers or []
        self.status = status


class StreamWriter:
    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn

    @property
    def closed(self) -> bool:
        return self._conn.closed or self._conn.server.stopping

    @property
    def congested(self) -> bool:
        """The client has not taken what was sent yet: skip a frame rather than queue it."""
        return self._conn.paused

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        self._conn.transport.write(data)  # type: ignore[union-attr]
        return True

    async def drained(self) -> None:
        await self._conn.wait_writable()


Handler = Callable[[Request], Awaitable["Response | Stream"]]
_date_cache: list[Any] = [0, ""]


def _date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True)
    return _date_cache[1]


def _head(status: int, headers: list[tuple[str, str]], content_type: str, length: int | None, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {_date()}", "Server: mltool"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(f"{k}: {v}" for k, v in headers)
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.request: Request | None = None
        self.need: int | None = None  # body bytes still to come (Content-Length)
        self.chunked = False
        self.chunks = bytearray()
        self.busy = False
        self.closed = False
        self.paused = False
        self._writable: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0  # when the request being read began

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[union-attr]
        self.server.connections.add(self)
        self._arm(self.server.keepalive_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def wait_writable(self) -> None:
        if self.paused and not self.closed:
            self._writable = self.loop.create_future()
            await self._writable

    def data_received(self, data: bytes) -> None:
        if not self.buf and self.request is None:
            self._started = time.monotonic()
            self._arm(self.server.read_timeout_s)
        self.buf += data
        if not self.busy:
            self._parse()
        elif len(self.buf) > MAX_HEADER_BYTES + self.server.max_body:
            self.transport.pause_reading()  # type: ignore[union-attr]  # a pipelining client far ahead

    # ------------------------------------------------------------------ timers
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        if self.busy or self.closed:
            return
        if self.buf or self.request is not None:  # a request started but did not arrive in time
            self._fail(408, f"the request did not arrive within {self.server.read_timeout_s:g} s")
        else:
            self.transport.close()  # type: ignore[union-attr]  # idle keep-alive connection

    # ------------------------------------------------------------------ parsing
    def _parse(self) -> None:
        while not self.busy and not self.closed:
            if self.request is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0 or end > MAX_HEADER_BYTES:
                    if len(self.buf) > MAX_HEADER_BYTES:
                        self._fail(431, f"request headers are larger than {MAX_HEADER_BYTES} bytes")
                    return
                try:
                    self._start(bytes(self.buf[:end]))
                except HttpError as exc:
                    self._fail(exc.status, exc.message)
                    return
                del self.buf[: end + 4]
            req = self.request
            assert req is not None
            if self.chunked:
                if not self._dechunk(req):
                    return
            elif self.need:
                if len(self.buf) < self.need:
                    return
                req.body = bytes(self.buf[: self.need])
                del self.buf[: self.need]
            self.request, self.need, self.chunked = None, None, False
            self._dispatch(req)

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise HttpError(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep or not k or k != k.strip():
                raise HttpError(400, "malformed header line")
            headers[k.decode("latin-1").lower()] = v.strip().decode("latin-1")
        req = Request(parts[0].decode("latin-1"), parts[1].decode("latin-1"), parts[2].decode("latin-1"), headers)
        te = headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked" or "content-length" in headers:
                raise HttpError(400, f"unsupported Transfer-Encoding '{te}'")
            self.chunked = True
        elif "content-length" in headers:
            cl = headers["content-length"]
            if not cl.isdigit():
                raise HttpError(400, f"invalid Content-Length '{cl}'")
            self.need = int(cl)
            if self.need > self.server.max_body:
                raise HttpError(413, f"the body is {self.need} bytes; this server accepts at most {self.server.max_body} (--max-body)")
        self.request = req
        if headers.get("expect", "").lower() == "100-continue" and (self.need or self.chunked):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def _dechunk(self, req: Request) -> bool:
        """Move complete chunks from the buffer into the body; True once the last chunk (and
        any trailers) arrived."""
        try:
            while True:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    if len(self.buf) > 1024:
                        raise ValueError("chunk size line too long")
                    return False
                size = int(bytes(self.buf[:eol]).split(b";")[0].strip(), 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                if size == 0:
                    end = self.buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        return False
                    del self.buf[: end + 4]
                    req.body = bytes(self.chunks)
                    self.chunks = bytearray()
                    return True
                if len(self.buf) < eol + 4 + size:
                    return False
                if self.buf[eol + 2 + size : eol + 4 + size] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                self.chunks += self.buf[eol + 2 : eol + 2 + size]
                if len(self.chunks) > self.server.max_body:
                    raise HttpError(413, f"the body is over {self.server.max_body} bytes (--max-body)")
                del self.buf[: eol + 4 + size]
        except ValueError as exc:
            self._fail(400, f"malformed chunked body ({exc})")
        except HttpError as exc:
            self._fail(exc.status, exc.message)
        return False

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close (its remaining bytes are unknown)."""
        if self.closed:
            return
        self.server.on_protocol_error(status)
        body = json.dumps({"error": message}).encode()
        self.transport.write(_head(status, [], "application/json", len(body), False) + body)  # type: ignore[union-attr]
        self.transport.close()  # type: ignore[union-attr]
        self.closed = True

    # ------------------------------------------------------------------ answering
    def _dispatch(self, req: Request) -> None:
        self.busy = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self.loop.create_task(self._answer(req))
        self.server.inflight.add(task)
        task.add_done_callback(self.server.inflight.discard)

    async def _answer(self, req: Request) -> None:
        try:
            resp = await self.server.handler(req)
        except Exception as exc:  # a bug in a handler must not take the connection down silently
            self.server.log(f"internal error on {req.method} {req.path}: {type(exc).__name__}: {exc}")
            resp = Response.json({"error": f"internal error ({type(exc).__name__})"}, 500)
        if self.closed:
            return
        keep = req.keep_alive and not self.server.stopping
        if isinstance(resp, Stream):
            self.transport.write(_head(resp.status, resp.headers, resp.content_type, None, False))  # type: ignore[union-attr]
            try:
                await resp.produce(StreamWriter(self))
            except Exception as exc:
                self.server.log(f"stream {req.path} ended: {type(exc).__name__}: {exc}")
            if not self.closed:
                self.transport.close()  # type: ignore[union-attr]
            return
        self.transport.write(_head(resp.status, resp.headers, resp.content_type, len(resp.body), keep) + resp.body)  # type: ignore[union-attr]
        if not keep:
            self.transport.close()  # type: ignore[union-attr]
            return
        self.busy = False
        self.transport.resume_reading()  # type: ignore[union-attr]
        if self.buf:
            self._started = time.monotonic()
            self._arm(self.server.read_timeout_s)
            self._parse()
        else:
            self._arm(self.server.keepalive_s)


class HttpServer:
    """Listen on ``host:port`` and answer every request with ``handler``."""

    def __init__(self, handler: Handler, *, max_body: int, read_timeout_s: float = 10.0, keepalive_s: float = 30.0,
                 log: Callable[[str], None] = lambda m: None, on_protocol_error: Callable[[int], None] = lambda s: None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self.log = log
        self.on_protocol_error = on_protocol_error
        self.connections: set[HttpConnection] = set()
        self.inflight: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: HttpConnection(self), host, port, reuse_address=True, backlog=512)
        return int(self._server.sockets[0].getsockname()[1])

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting, close idle connections, let requests in flight finish (up to
        ``timeout_s``), then close everything. Returns how many requests were still running
        when the timeout hit."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy and conn.transport is not None:
                conn.transport.close()
        pending = [t for t in self.inflight if not t.done()]
        left = len((await asyncio.wait(pending, timeout=timeout_s))[1]) if pending else 0
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        return left
