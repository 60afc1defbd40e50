"""``serve(cfg)``: load the model, listen, follow new releases, drain on SIGTERM.

    from mltool.serve import ServeConfig, serve
    serve(ServeConfig(model="fire", host="0.0.0.0", source="picamera"),
          consumers=[lambda result: print(result.top)])     # live results, e.g. an MQTT reporter

The library call the CLI makes; it blocks until SIGTERM/SIGINT (or ``stop`` is set) and
returns a summary once the requests in flight have been answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mltool.errors import ConfigError, MltoolError
from mltool.layout import release_id
from mltool.serve.config import ModelRef, ServeConfig, check_name, make_predictor, resolve_model
from mltool.serve.engine import Engine


def _log(msg: str) -> None:
    print(f"[serve] {msg}", file=sys.stderr, flush=True)


class Reloader:
    """Follows the model file (a deployed model's ``current`` link): polls every ``poll_s``
    and on :meth:`trigger` (SIGHUP); loads, probes, then swaps. A failed release is recorded
    and not retried until the link moves again or SIGHUP asks."""

    def __init__(self, app: Any, ref: ModelRef, poll_s: float, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.app = app
        self.engine = app.engine
        self.ref = ref
        self.poll_s = poll_s
        self.on_event = on_event
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self._failed: tuple[str, str] | None = None  # (real path, release id) that failed
        self._thread = threading.Thread(target=self._run, name="serve-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self) -> None:
        self._force = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s if self.poll_s > 0 else None)
            if self._stop.is_set():
                return
            force, self._force = self._force, False
            self._wake.clear()
            try:
                self.check(force)
            except Exception as exc:  # never let the watcher die
                self._failure("?", f"{type(exc).__name__}: {exc}")

    def check(self, force: bool = False) -> None:
        cur = self.engine.release
        real = os.path.realpath(self.ref.watch)
        if not force and cur is not None and real == str(cur.path):
            return
        if not os.path.isfile(real):
            if self._failed != (real, ""):
                self._failed = (real, "")
                self._failure("", f"{self.ref.watch} points to {real}, which does not exist")
            return
        rid = release_id(real)
        if cur is not None and rid == cur.id:
            cur.path = Path(real)
            return
        if not force and self._failed == (real, rid):
            return
        try:
            new = self.engine.load(Path(real))
        except MltoolError as exc:
            self._failed = (real, rid)
            self._failure(rid, exc.one_line())
            return
        except Exception as exc:
            self._failed = (real, rid)
            self._failure(rid, f"{type(exc).__name__}: {exc}")
            return
        old = self.engine.swap(new)
        self.app.reload_state.succeeded()
        self._failed = None
        _log(f"reloaded {self.app.name}: release {old.id if old else '-'} -> {new.id}")
        self.on_event({"event": "reload", "model": self.app.name, "release": new.id, "previous": old.id if old else None,
                       "file": str(new.path), "task": new.first.task})

    def _failure(self, rid: str, message: str) -> None:
        self.app.reload_state.failed(rid or None, message)
        cur = self.engine.release
        _log(f"release {rid or '?'} of {self.app.name} failed its check; still serving {cur.id if cur else '-'}: {message}")
        self.on_event({"event": "reload_failed", "model": self.app.name, "release": rid or None,
                       "serving": cur.id if cur else None, "error": message})


def serve(cfg: ServeConfig, *, consumers: list[Callable[[Any], None]] | None = None,
          event_consumers: list[Callable[[dict[str, Any]], None]] | None = None,
          on_event: Callable[[dict[str, Any]], None] = lambda e: None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Serve ``cfg.model`` until stopped; ``on_event`` gets ready/reload/stopped records,
    ``consumers`` every live result and ``event_consumers`` every live source event (lost,
    reconnected...) when ``cfg.source`` is set."""
    from mltool.serve import protocols
    from mltool.serve.app import App
    from mltool.serve.http import HttpServer

    cfg.validate()
    ref = resolve_model(cfg.model, cfg.root, cfg.name)
    check_name(ref.name, "--name" if cfg.name else f"taken from {cfg.model}")
    t0 = time.perf_counter()
    live_kind: dict[str, Any] = {}

    def compatible(p: Any) -> None:
        if cfg.source and live_kind and (p.kind, p.input.window) != (live_kind["kind"], live_kind["window"]):
            raise ConfigError(f"{p.path} takes {p.kind} input of a different shape than the live source is fed",
                              "deploy a model with the same kind of input, or restart serve")

    engine = Engine(lambda path: make_predictor(path, cfg), workers=cfg.workers, queue_size=cfg.queue, batch=cfg.batch,
                    batch_wait_ms=cfg.batch_wait_ms, live_slot=cfg.source is not None, check=compatible)
    engine.swap(engine.load(ref.watch))
    first = engine.release.first  # type: ignore[union-attr]
    live_kind.update(kind=first.kind, window=first.input.window)
    app = App(cfg, engine, ref.name, log=_log)
    protocols.register(app)
    live = None
    if cfg.source is not None:
        from mltool.serve.live import LiveView

        live = LiveView(app, cfg.source, slot=cfg.workers, consumers=consumers, event_consumers=event_consumers)
        live.open()
    reloader = Reloader(app, ref, cfg.poll_s if ref.follows else 0.0, on_event)
    stop = stop or threading.Event()
    summary: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = HttpServer(app, max_body=cfg.max_body, read_timeout_s=cfg.read_timeout_s, keepalive_s=cfg.keepalive_s,
                            max_connections=cfg.max_connections, log=_log, on_protocol_error=lambda status: app.metrics.observe("unparsed", status, 0.0))
        try:
            port = await server.start(cfg.host, cfg.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc})",
                              "pick another --port (or --port 0 for a free one), or stop what is using it") from None
        stopping = asyncio.Event()
        signals = []
        if threading.current_thread() is threading.main_thread():
            for sig, fn in ((signal.SIGTERM, stopping.set), (signal.SIGINT, stopping.set), (signal.SIGHUP, reloader.trigger)):
                loop.add_signal_handler(sig, fn)
                signals.append(sig)
        def watch() -> None:
            stop.wait()
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop already ended

        threading.Thread(target=watch, name="serve-stop", daemon=True).start()
        engine.start()
        reloader.start()
        rel = engine.release
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        from mltool.serve.page import endpoints

        urls = [f"http://{a}:{port}" for a in reachable_addresses()] if cfg.host in ("0.0.0.0", "::", "") else []
        ready = {"event": "ready", "url": f"http://{host}:{port}", "urls": urls, "port": port,
                 "endpoints": [f"{m} {p}" for m, p, _ in endpoints(app.name)], "model": app.name, "release": rel.id if rel else None,
                 "file": str(rel.path) if rel else None, "follows": str(ref.watch) if ref.follows else None,
                 "workers": cfg.workers, "queue": cfg.queue, "batch": cfg.batch, "batchable": bool(rel and rel.batchable),
                 "api_key": cfg.api_key is not None, "live": cfg.source, "task": rel.first.task if rel else None,
                 "live_kind": live.kind if live is not None else None,
                 "camera": getattr(live._source, "camera", None) if live is not None else None, "startup_s": round(time.perf_counter() - t0, 3)}
        on_event(ready)  # before the live view starts: its consumers (MQTT) learn the release from it
        if live is not None:
            live.start(loop)
        await stopping.wait()
        app.draining = True
        if live is not None:
            await loop.run_in_executor(None, live.close)
        left = await server.drain(cfg.drain_s)
        for sig in signals:
            loop.remove_signal_handler(sig)
        stop.set()
        summary.update(event="stopped", model=app.name, release=engine.release.id if engine.release else None,
                       requests=sum(app.metrics.requests.values()), inferences=engine.inferences,
                       reloads=app.reload_state.reloads, reload_failures=app.reload_state.failures,
                       unfinished=left, live_frames=live.frames if live else None)

    try:
        asyncio.run(main())
    finally:
        reloader.stop() if reloader._thread.is_alive() else None
        engine.stop()
        if live is not None:
            live.close()
    on_event(summary)
    return summary


def reachable_addresses() -> list[str]:
    """This device's IPv4 addresses other machines can use (every interface but loopback): what
    to print instead of 0.0.0.0, which nobody can open. Read from the interfaces, no traffic sent."""
    import fcntl
    import struct

    out: list[str] = []
    try:
        names = [n for _, n in socket.if_nameindex() if n != "lo"]
    except OSError:
        names = []
    for name in names:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
        addr = socket.inet_ntoa(packed[20:24])
        if not addr.startswith("127.") and addr not in out:
            out.append(addr)
    return out
