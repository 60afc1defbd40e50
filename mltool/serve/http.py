"""A small HTTP/1.1 server on asyncio's protocol layer, standard library only.

Why not an ASGI stack: on a Raspberry Pi the server's own cost per request is what a user
waits for beyond the model, and 32-bit Pi OS has no uvloop/httptools wheels, so Uvicorn falls
back to h11 in pure Python. This server parses a request with a few ``bytes`` operations and
answers from the same callback (``scripts/bench/serve_report.py`` measures both stacks).

What it does: keep-alive and pipelined requests (answered in order), ``Content-Length`` and
chunked request bodies, ``Expect: 100-continue``, a body limit answered with 413 before the
body is read (for chunked bodies: as soon as a chunk size or the running total passes it), a
header and trailer limit (431), a stall timeout that resets whenever bytes arrive plus a total
cap per request (408), an idle timeout for keep-alive connections, close-delimited streaming
responses (MJPEG, SSE) that never buffer more than the socket's write buffer, and a drain on
shutdown that lets the requests in flight finish. A handler that raises answers 500; nothing a
client sends can stop the server.

What one client can hold is bounded before any authentication (docs/serve-limits.md): a
connection stops being read while its answers wait for the client to read them (asyncio's
``pause_writing``) or while it is far ahead of the server, so a pipelining client that never
reads costs one write buffer; every byte is scanned once; the number of connections is capped
below the open-files limit (the oldest idle connection makes room for a new one), and a
failed ``accept`` is logged once a minute, not once per attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

MAX_HEADER_BYTES = 16 * 1024  # the request line and headers; chunked trailers have the same limit
WRITE_HIGH_WATER = 256 * 1024
PIPELINE_BUFFER = 64 * 1024  # bytes read ahead of the request being answered before reading pauses
TOTAL_TIMEOUT_FACTOR = 30  # a request may take at most this many --read-timeouts in all, however steady
LINGER_BYTES = 64 * 1024  # read and dropped after a refusal, at most, so the refusal is not lost to a reset
ACCEPT_BURST = 8  # connections asyncio accepts in one go, before any of them is counted in
FD_RESERVE = 128  # open files kept for all but client connections: model, logs, camera, and accept bursts
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_CTL = bytes(range(0x21)) + b"\x7f"


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
        except RecursionError:
            raise HttpError(400, "the body's JSON is nested too deeply") from None
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


class StreamedResponse:
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


Handler = Callable[[Request], Awaitable["Response | StreamedResponse"]]
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


def shown(text: str, limit: int = 80) -> str:
    """A client-supplied string as an error message may quote it: printable, at most ``limit``
    characters."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


class HttpConnection(asyncio.Protocol):
    # chunked body states
    _SIZE, _DATA, _CRLF, _TRAILER = range(4)

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.request: Request | None = None
        self.need: int | None = None  # body bytes still to come (Content-Length)
        self.chunked = False
        self.chunks = bytearray()
        self.cstate = self._SIZE
        self.chunk_left = 0
        self.trailer_bytes = 0
        self.busy = False  # a request is being answered (or a stream produced)
        self.requests = 0  # requests read on this connection
        self.closed = False
        self.paused = False  # the transport's write buffer is over its high-water mark
        self._scanned = 0  # bytes of buf already searched for the end of the headers
        self._writable: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0  # when the request being read began
        self._progress = 0.0  # when its last bytes arrived
        self._paused_at = 0.0
        self._discard = 0  # bytes still read (and dropped) after a refusal

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[union-attr]
        self.server.admit(self)
        self._arm(self.server.keepalive_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.buf = bytearray()
        self.chunks = bytearray()

    def pause_writing(self) -> None:
        # The client does not read what it is sent: stop reading what it sends (its pipelined
        # requests would make more answers to pile up) until it has taken them.
        self.paused = True
        self._paused_at = time.monotonic()
        self.transport.pause_reading()  # type: ignore[union-attr]
        if not self.busy:
            self._arm(self.server.keepalive_s)

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if not self.busy and not self.closed:
            self._next()

    async def wait_writable(self) -> None:
        if self.paused and not self.closed:
            self._writable = self.loop.create_future()
            await self._writable

    def data_received(self, data: bytes) -> None:
        if self.closed:  # refused: discarded during the lingering close, a bounded amount
            self._discard -= len(data)
            if self._discard < 0:
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        now = time.monotonic()
        if not self.buf and self.request is None and not self.busy:
            self._started = now
            self._arm(self.server.read_timeout_s)
        self._progress = now
        self.buf += data
        if not self.busy and not self.paused:
            self._parse()
        if (self.busy or self.paused) and len(self.buf) > PIPELINE_BUFFER and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]  # a pipelining client far ahead

    # ------------------------------------------------------------------ timers
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(max(0.0, seconds), self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        if self.busy or self.closed:
            return
        srv, now = self.server, time.monotonic()
        if self.paused:  # answers wait for a client that does not read them
            left = self._paused_at + srv.keepalive_s - now
            if left > 0:
                self._arm(left)
            else:
                self.transport.abort()  # type: ignore[union-attr]
            return
        if self.buf or self.request is not None:  # a request started: it must keep coming
            total = srv.read_timeout_s * TOTAL_TIMEOUT_FACTOR
            deadline = min(self._progress + srv.read_timeout_s, self._started + total)
            if now < deadline:
                self._arm(deadline - now)
            elif now >= self._started + total:
                self._fail(408, f"the request took longer than {total:g} s to arrive ({TOTAL_TIMEOUT_FACTOR} x --read-timeout)")
            else:
                self._fail(408, f"the request stalled: nothing arrived for {srv.read_timeout_s:g} s (--read-timeout)")
        else:
            self.transport.close()  # type: ignore[union-attr]  # idle keep-alive connection

    @property
    def idle(self) -> bool:
        """Between requests: nothing read of the next one, nothing being answered."""
        return not self.busy and not self.buf and self.request is None

    # ------------------------------------------------------------------ parsing
    def _parse(self) -> None:
        while not self.busy and not self.closed and not self.paused:
            if self.request is None:
                end = self.buf.find(b"\r\n\r\n", max(0, self._scanned - 3), MAX_HEADER_BYTES + 4)
                if end < 0:
                    self._scanned = len(self.buf)
                    if len(self.buf) > MAX_HEADER_BYTES:
                        self._fail(431, f"request headers are larger than {MAX_HEADER_BYTES} bytes")
                    return
                try:
                    self._start(bytes(self.buf[:end]))
                except HttpError as exc:
                    self._fail(exc.status, exc.message)
                    return
                del self.buf[: end + 4]
                self._scanned = 0
            req = self.request
            assert req is not None
            if self.chunked:
                if not self._dechunk(req):
                    return
            elif self.need:
                if len(self.buf) < self.need:
                    return
                if len(self.buf) == self.need:  # the usual case: nothing pipelined behind it, one copy
                    req.body, self.buf = bytes(self.buf), bytearray()
                else:
                    req.body = bytes(self.buf[: self.need])
                    del self.buf[: self.need]
            self.request, self.need, self.chunked = None, None, False
            self._dispatch(req)

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or not parts[2].startswith(b"HTTP/"):
            raise HttpError(400, "malformed request line")
        if parts[2] not in _VERSIONS:
            raise HttpError(400, f"HTTP version '{shown(parts[2].decode('latin-1'), 20)}' is not supported; use HTTP/1.1 or HTTP/1.0")
        if len(parts[1].translate(None, _CTL)) != len(parts[1]):  # control characters (at C speed: targets may be 16 KB)
            raise HttpError(400, "malformed request target (control characters)")
        headers: dict[str, str] = {}
        lengths: set[str] = set()
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(k):
                raise HttpError(400, "malformed header line (RFC 9112: a header name is a token, directly followed by ':')")
            name, value = k.decode("latin-1").lower(), v.strip(b" \t").decode("latin-1")
            if name == "content-length":
                lengths.update(x.strip(" \t") for x in value.split(","))
            headers[name] = value
        req = Request(parts[0].decode("latin-1"), parts[1].decode("latin-1"), parts[2].decode("latin-1"), headers)
        te = headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked" or lengths:
                raise HttpError(400, f"unsupported Transfer-Encoding '{shown(te, 40)}'" if te != "chunked"
                                else "a request may not have both Transfer-Encoding and Content-Length")
            self.chunked = True
            self.chunks, self.cstate, self.trailer_bytes = bytearray(), self._SIZE, 0
        elif lengths:
            if len(lengths) > 1:
                raise HttpError(400, "the request has different Content-Length values")
            cl = lengths.pop()
            if not _DIGITS.fullmatch(cl):
                raise HttpError(400, f"invalid Content-Length '{shown(cl, 40)}' (digits 0-9 only)")
            self.need = int(cl)
            if self.need > self.server.max_body:
                raise HttpError(413, f"the body is {self.need} bytes; this server accepts at most {self.server.max_body} (--max-body)")
        self.request = req
        if headers.get("expect", "").lower() == "100-continue" and (self.need or self.chunked):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def _dechunk(self, req: Request) -> bool:
        """Move chunk data from the buffer into the body as it arrives (every byte is looked at
        once); True once the last chunk and the trailers arrived."""
        buf, limit = self.buf, self.server.max_body
        try:
            while True:
                if self.cstate == self._SIZE:
                    eol = buf.find(b"\r\n", 0, 1026)
                    if eol < 0:
                        if len(buf) > 1024:
                            raise ValueError("chunk size line too long")
                        return False
                    size_s = bytes(buf[:eol]).split(b";", 1)[0].rstrip(b" \t")
                    if not _HEX.fullmatch(size_s):
                        raise ValueError(f"chunk size '{shown(size_s.decode('latin-1'), 20)}' is not 1-16 hex digits")
                    size = int(size_s, 16)
                    del buf[: eol + 2]
                    if size == 0:
                        self.cstate = self._TRAILER
                    elif len(self.chunks) + size > limit:
                        raise HttpError(413, f"the body is over {limit} bytes (--max-body)")
                    else:
                        self.chunk_left, self.cstate = size, self._DATA
                elif self.cstate == self._DATA:
                    take = min(len(buf), self.chunk_left)
                    if take == 0:
                        return False
                    self.chunks += buf[:take]
                    del buf[:take]
                    self.chunk_left -= take
                    if self.chunk_left:
                        return False
                    self.cstate = self._CRLF
                elif self.cstate == self._CRLF:
                    if len(buf) < 2:
                        return False
                    if buf[:2] != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
                    del buf[:2]
                    self.cstate = self._SIZE
                else:  # trailer lines, until an empty one; a line's bytes are searched once
                    eol = buf.find(b"\r\n", max(0, self._scanned - 1), MAX_HEADER_BYTES + 2)
                    if eol < 0 or self.trailer_bytes + eol > MAX_HEADER_BYTES:
                        if self.trailer_bytes + len(buf) > MAX_HEADER_BYTES:
                            raise HttpError(431, f"the chunked body's trailer is larger than {MAX_HEADER_BYTES} bytes")
                        self._scanned = len(buf)
                        return False
                    del buf[: eol + 2]
                    self._scanned = 0
                    self.trailer_bytes += eol + 2
                    if eol == 0:
                        req.body = bytes(self.chunks)
                        self.chunks, self.cstate = bytearray(), self._SIZE
                        return True
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
        t = self.transport
        t.write(_head(status, [], "application/json", len(body), False) + body)  # type: ignore[union-attr]
        self.closed = True
        self.buf = bytearray()
        self.chunks = bytearray()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t.can_write_eof():  # type: ignore[union-attr]
            # A lingering close: closing with the client's bytes unread would send a reset that
            # can destroy the answer before the client reads it; so end our side, discard what
            # still comes (up to LINGER_BYTES, then stop reading) for a moment, then close.
            t.write_eof()  # type: ignore[union-attr]
            self._discard = LINGER_BYTES
            self.loop.call_later(1.0, t.abort)  # type: ignore[union-attr]
        else:
            t.close()  # type: ignore[union-attr]

    # ------------------------------------------------------------------ answering
    def _dispatch(self, req: Request) -> None:
        self.busy = True
        self.requests += 1
        conns = self.server.connections
        if conns.pop(self, False) is None:  # most recently active last: the first idle one is the one to close
            conns[self] = None
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
            self.server.log(f"internal error on {req.method} {shown(req.path)}: {type(exc).__name__}: {exc}")
            resp = Response.json({"error": f"internal error ({type(exc).__name__})"}, 500)
        if self.closed:
            return
        keep = req.keep_alive and not self.server.stopping
        if isinstance(resp, StreamedResponse):
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
        if self.paused:  # resume_writing carries on once the client has read
            self._arm(self._paused_at + self.server.keepalive_s - time.monotonic())
            return
        self._next()

    def _next(self) -> None:
        """Between requests: answer what is already buffered, and read on unless the client is
        far ahead of its answers."""
        if self.buf:
            self._started = self._progress = time.monotonic()
            self._arm(self.server.read_timeout_s)
            self._parse()
        else:
            self._arm(self.server.keepalive_s)
        if not self.closed and not self.paused and (not self.busy or len(self.buf) <= PIPELINE_BUFFER):
            self.transport.resume_reading()  # type: ignore[union-attr]


class HttpServer:
    """Listen on ``host:port`` and answer every request with ``handler``."""

    def __init__(self, handler: Handler, *, max_body: int, read_timeout_s: float = 10.0, keepalive_s: float = 30.0,
                 max_connections: int = 256, log: Callable[[str], None] = lambda m: None,
                 on_protocol_error: Callable[[int], None] = lambda s: None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self.max_connections = max_connections  # lowered to fit the open-files limit in start()
        self.log = log
        self.on_protocol_error = on_protocol_error
        self.connections: dict[HttpConnection, None] = {}  # least recently active first
        self.inflight: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.evicted = 0  # connections closed to make room for new ones
        self.refused = 0  # connections refused: every slot was answering a request
        self.accept_errors = 0
        self._said: dict[str, float] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.max_connections = max(1, min(self.max_connections, open_files_limit() - FD_RESERVE))
        # asyncio accepts up to `backlog` connections per wakeup before any reaches admit(): a
        # small number keeps that burst within FD_RESERVE; the kernel's queue is set back to 512
        self._server = await self.loop.create_server(lambda: HttpConnection(self), host, port, reuse_address=True,
                                                     backlog=ACCEPT_BURST)
        for sock in self._server.sockets:
            with socket.socket(fileno=os.dup(sock.fileno())) as raw:
                raw.listen(512)
        return int(self._server.sockets[0].getsockname()[1])

    def admit(self, conn: HttpConnection) -> None:
        """Count a new connection in; at the cap, close one that is not being answered: one
        already refused (in its lingering close) first, then an idle one that never sent a
        request, else the idle one quiet longest, else one still sending its request; or refuse
        the new one with 503 when every connection is being answered."""
        if len(self.connections) >= self.max_connections:
            victim = (next((c for c in self.connections if c.closed), None)  # refused, in its lingering close
                      or next((c for c in self.connections if c.idle and not c.requests), None)  # never sent a request
                      or next((c for c in self.connections if c.idle), None)
                      or next((c for c in self.connections if not c.busy), None))
            if victim is None:
                self.refused += 1
                self._say("refused", f"connection limit ({self.max_connections}) reached and every connection is being "
                                     "answered: refusing new ones with 503 (--max-connections)")
                body = b'{"error":"too many connections; retry shortly"}'
                conn.transport.write(_head(503, [("Retry-After", "1")], "application/json", len(body), False) + body)  # type: ignore[union-attr]
                conn.transport.close()  # type: ignore[union-attr]
                conn.closed = True
                return
            self.evicted += 1
            self._say("evicted", f"connection limit ({self.max_connections}) reached: closing the longest-idle connections "
                                 "to make room (--max-connections)")
            self.connections.pop(victim, None)
            victim.transport.abort()  # type: ignore[union-attr]
        self.connections[conn] = None

    def _say(self, what: str, message: str) -> None:
        """Log ``message`` at most once a minute."""
        now = time.monotonic()
        if now - self._said.get(what, -1e9) >= 60:
            self._said[what] = now
            self.log(message)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            self.accept_errors += 1  # asyncio retries the accept itself; one line a minute says it
            exc = context.get("exception")
            self._say("accept", f"cannot accept connections ({exc}); raise the open-files limit (LimitNOFILE= in the "
                                "systemd unit, ulimit -n) or lower --max-connections")
            return
        loop.default_exception_handler(context)

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


def open_files_limit() -> int:
    """The soft open-files limit, raised to the hard limit first (as most servers do)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 65536) if soft != resource.RLIM_INFINITY else 65536
        if soft == resource.RLIM_INFINITY or soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        return int(soft) if soft != resource.RLIM_INFINITY else 65536
    except ImportError:  # not POSIX
        return 1024
