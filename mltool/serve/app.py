"""The HTTP application: routing, API key, CORS, metrics, health and model metadata.

The protocol adapters (:mod:`mltool.serve.protocols`) and the live view
(:mod:`mltool.serve.live`) register their routes here; all of them reach the model through
:meth:`App.infer`, the one inference path (a job in the engine's bounded queue).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from mltool import __version__
from mltool.errors import ConfigError, DataError, MltoolError
from mltool.serve.config import ServeConfig
from mltool.serve.engine import Engine, Job, QueueFull
from mltool.serve.http import HttpError, Request, Response, StreamedResponse, shown
from mltool.serve.metrics import Metrics

RouteFn = Callable[..., Awaitable["Response | StreamedResponse"]]
PUBLIC = {"/v2/health/live", "/v2/health/ready"}


@dataclass
class ReloadState:
    """Hot reloads so far: what /v2/health/ready and the metrics report (kept by the Reloader)."""

    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    failed_release: str | None = None

    def succeeded(self) -> None:
        self.reloads += 1
        self.last_error = self.failed_release = None

    def failed(self, release: str | None, error: str) -> None:
        self.failures += 1
        self.failed_release, self.last_error = release, error
BROWSER = {"/", "/stream.mjpg", "/snapshot.jpg", "/events"}  # a browser can answer Basic auth itself
ALLOW_HEADERS = "Content-Type, Authorization, X-API-Key, Inference-Header-Content-Length"


class App:
    def __init__(self, cfg: ServeConfig, engine: Engine, name: str, *, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.name = name
        self.metrics = Metrics()
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.exact: dict[tuple[str, str], tuple[str, RouteFn]] = {}
        self.patterns: list[tuple[str, re.Pattern[str], str, RouteFn]] = []
        self.reload_state = ReloadState()
        self.draining = False
        self._key = cfg.api_key.encode() if cfg.api_key else None
        self.add("GET", "/v2/health/live", self.live)
        self.add("GET", "/v2/health/ready", self.ready)
        self.add("GET", "/v2", self.server_meta)
        self.add("GET", "/v2/models/{name}", self.model_meta)
        self.add("GET", "/v2/models/{name}/versions/{version}", self.model_meta)
        self.add("GET", "/v2/models/{name}/ready", self.model_ready)
        self.add("GET", "/v2/models/{name}/versions/{version}/ready", self.model_ready)
        self.add("GET", "/metrics", self.prometheus)
        self.add("GET", "/", self.index)  # the live view, when there is one, puts its page here instead
        m = self.metrics
        m.gauge("mltool_queue_depth", "gauge", "Requests waiting for a worker.", lambda: [({}, engine.depth)])
        m.gauge("mltool_queue_capacity", "gauge", "Size of the request queue (--queue).", lambda: [({}, cfg.queue)])
        m.gauge("mltool_inferences_total", "counter", "Samples run through the model by HTTP workers.", lambda: [({}, engine.inferences)])
        m.gauge("mltool_invokes_total", "counter", "Interpreter runs by HTTP workers (fewer than inferences when micro-batching).",
                lambda: [({}, engine.invokes)])
        m.gauge("mltool_model_release_info", "gauge", "The release answering requests (1).",
                lambda: [({"model": name, "release": engine.release.id if engine.release else ""}, 1)])
        m.gauge("mltool_model_loaded_timestamp_seconds", "gauge", "When the serving release was loaded.",
                lambda: [({}, engine.release.loaded_at if engine.release else 0)])
        m.gauge("mltool_reloads_total", "counter", "Releases swapped in while serving.", lambda: [({}, self.reload_state.reloads)])
        m.gauge("mltool_reload_failures_total", "counter", "Releases that failed the load-and-probe check (the old one kept serving).",
                lambda: [({}, self.reload_state.failures)])

    # ------------------------------------------------------------------ routing
    def add(self, method: str, template: str, fn: RouteFn) -> None:
        if "{" not in template:
            self.exact[(method, template)] = (template, fn)
            return
        rx = re.escape(template)
        for param in re.findall(r"\\\{(\w+)\\\}", rx):
            rx = rx.replace(f"\\{{{param}\\}}", f"(?P<{param}>[^/:]+)")
        self.patterns.append((method, re.compile(rx + "$"), template, fn))

    def _route(self, method: str, path: str) -> tuple[str, RouteFn | None, dict[str, str], bool]:
        """(route template, handler, path parameters, whether the path exists for another method)."""
        hit = self.exact.get((method, path))
        if hit is not None:
            return hit[0], hit[1], {}, True
        other = False
        for m, rx, template, fn in self.patterns:
            match = rx.match(path)
            if match:
                if m == method:
                    return template, fn, {k: unquote(v) for k, v in match.groupdict().items()}, True
                other = True
        other = other or any(p == path for (_m, p) in self.exact)
        return ("unmatched", None, {}, other)

    async def __call__(self, req: Request) -> Response | StreamedResponse:
        route, fn, params, exists = self._route(req.method, req.path)
        m = self.metrics
        m.inflight += 1
        served = False  # a route of ours answered an authorized request: only then is the release said
        try:
            if req.method == "OPTIONS":
                resp: Response | StreamedResponse = self._preflight(req)
                route = "OPTIONS"
            elif fn is None:
                what = f"{shown(req.method, 20)} {shown(req.path)}"
                raise HttpError(405 if exists else 404, f"{what} is not allowed" if exists else f"no route for {what}")
            else:
                if self._key is not None and route not in PUBLIC:
                    self._authorize(req, route)
                served = True
                resp = await fn(req, **params)
        except HttpError as exc:
            resp = Response.json({"error": exc.message}, exc.status, exc.headers)
        finally:
            m.inflight -= 1
        rid = req.release or (self.engine.release.id if self.engine.release is not None else None)
        if rid is not None and served and resp.status != 404:
            resp.headers.append(("X-Model-Release", rid))
        if self.cfg.cors_origins:
            self._cors(req, resp.headers)
        m.observe(route, resp.status, time.perf_counter() - req.received)
        if self.cfg.access_log:
            self.log(f'{shown(req.method, 20)} {shown(req.path)} {resp.status} {1000 * (time.perf_counter() - req.received):.2f}ms')
        return resp

    async def index(self, req: Request) -> Response:
        from mltool.serve.page import render_index

        rel = self.engine.release
        host = req.headers.get("host", "")
        base = f"http://{shown(host, 80)}/" if host and "/" not in host else ""
        return Response(200, render_index(self.name, rel.id if rel else "-", base).encode(), "text/html; charset=utf-8",
                        [("Cache-Control", "no-store")])

    # ------------------------------------------------------------------ security
    def _authorized(self, req: Request) -> bool:
        try:
            self._authorize(req, "")
        except HttpError:
            return False
        return True

    def _authorize(self, req: Request, route: str) -> None:
        if self._key is None:
            return
        given = req.headers.get("x-api-key")
        if given is None:
            scheme, _, cred = req.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                given = cred.strip()
            elif scheme.lower() == "basic":  # browsers: any user name, the key as password
                try:
                    given = base64.b64decode(cred.strip(), validate=True).decode().partition(":")[2]
                except (ValueError, UnicodeDecodeError):
                    given = None
        if given is None or not hmac.compare_digest(given.encode(), self._key):  # type: ignore[arg-type]
            challenge = 'Basic realm="mltool"' if route in BROWSER else 'Bearer realm="mltool"'
            raise HttpError(401, "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                            [("WWW-Authenticate", challenge)])

    def _allowed_origin(self, req: Request) -> str | None:
        origin = req.headers.get("origin")
        if origin is None:
            return None
        if "*" in self.cfg.cors_origins:
            return "*"
        return origin if origin in self.cfg.cors_origins else None

    def _cors(self, req: Request, headers: list[tuple[str, str]]) -> None:
        allowed = self._allowed_origin(req)
        if allowed is not None:
            headers.append(("Access-Control-Allow-Origin", allowed))
            headers.append(("Access-Control-Expose-Headers", "X-Model-Release, Retry-After"))
            if allowed != "*":
                headers.append(("Vary", "Origin"))

    def _preflight(self, req: Request) -> Response:
        headers = [("Allow", "GET, POST, OPTIONS")]
        if self.cfg.cors_origins and self._allowed_origin(req) is not None:
            headers += [("Access-Control-Allow-Methods", "GET, POST, OPTIONS"), ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                        ("Access-Control-Max-Age", "600")]
        return Response(204, b"", "", headers)

    # ------------------------------------------------------------------ the inference path
    async def infer(self, job: Job, req: Request | None = None) -> tuple[Any, str]:
        """Run ``job`` on a worker: (its value, the release that answered). A full queue is 503,
        an answer later than --timeout is 504, a bad input is 400."""
        if self.draining:
            raise HttpError(503, "the server is shutting down", [("Retry-After", "5")])
        try:
            fut = self.engine.submit(job)
        except QueueFull:
            raise HttpError(503, f"all workers are busy and the queue is full ({self.cfg.queue} waiting); retry shortly",
                            [("Retry-After", "1")]) from None
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.cfg.timeout_s, _expire, fut)
        try:
            value, rid = await fut
            if req is not None:
                req.release = rid
            return value, rid
        except asyncio.TimeoutError:
            job.cancelled = True
            raise HttpError(504, f"no answer within {self.cfg.timeout_s:g} s (--timeout)") from None
        except QueueFull:  # decoded, but the workers' queue was full by then
            raise HttpError(503, f"all workers are busy and the queue is full ({self.cfg.queue} waiting); retry shortly",
                            [("Retry-After", "1")]) from None
        except (DataError, ConfigError) as exc:
            raise HttpError(400, exc.one_line()) from None
        except MltoolError as exc:
            raise HttpError(500, exc.one_line()) from None
        finally:
            timer.cancel()

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise HttpError(404, f"model '{shown(name)}' is not served here; this server serves '{self.name}'")
        rel = self.engine.release
        if version is not None and rel is not None and version != rel.id:
            raise HttpError(404, f"version '{shown(version)}' of {name} is not loaded; the serving release is {rel.id}")

    # ------------------------------------------------------------------ health and metadata
    async def live(self, req: Request) -> Response:
        return Response.json({"live": True})

    async def ready(self, req: Request) -> Response:
        rel = self.engine.release
        ok = rel is not None and not self.draining
        body: dict[str, Any] = {"ready": ok, "model": self.name, "release": rel.id if rel else None}
        st = self.reload_state
        if st.last_error:
            body["reload"] = {"failed_release": st.failed_release, "failures": st.failures}
            if self._authorized(req):  # the reason names files on this device: not for anyone who asks
                body["reload"]["error"] = st.last_error
        if self.draining:
            body["reason"] = "shutting down"
        return Response.json(body, 200 if ok else 503)

    async def server_meta(self, req: Request) -> Response:
        return Response.json({"name": "mltool", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_meta(self, req: Request, name: str, version: str | None = None) -> Response:
        self.check_model(name, version)
        rel = self.engine.release
        assert rel is not None
        p = rel.first
        from mltool.serve.protocols import oip_datatype

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": oip_datatype(s), "shape": [-1 if rel.batchable and i == 0 else d
                                                                          for i, d in enumerate(s.shape)]} for s in specs]

        return Response.json({
            "name": self.name, "versions": [rel.id], "platform": "tflite", "inputs": tensors(p.model.inputs),
            "outputs": tensors(p.model.outputs),
            "parameters": {"release": rel.id, "task": p.task, "kind": p.kind, "labels": p.labels.names,
                           "runtime": f"{p.model.runtime} {p.model.runtime_version}", "file": str(rel.path),
                           "input_image": p.kind == "image"},
        })

    async def model_ready(self, req: Request, name: str, version: str | None = None) -> Response:
        self.check_model(name, version)
        ready = self.engine.release is not None and not self.draining
        return Response.json({"name": name, "ready": ready}, 200 if ready else 503)

    async def prometheus(self, req: Request) -> Response:
        return Response(200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())
