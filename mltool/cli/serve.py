"""Serve a model over HTTP on the device (Open Inference Protocol v2, TF Serving, uploads), with a live view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltool.cli._options import (
    CameraFpsOpt,
    CameraOpt,
    CameraSizeOpt,
    CameraTransformOpt,
    mqtt_options,
    mqtt_reporter,
    predictor_options,
)


@mqtt_options
@predictor_options
def serve(
    model: Annotated[str, typer.Argument(help="A .tflite, or a deployed model's name or folder (~/mltool/models/NAME): its current release is followed and hot-reloaded.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0 picks a free one).")] = 8000,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in URLs (default: the deployed name, else the model's task, else the file name).")] = None,
    root: Annotated[str, typer.Option("--root", help="mltool's folder on this device, where deployed models live.")] = "~/mltool",
    workers: Annotated[int, typer.Option("--workers", help="Inference workers, each with its own interpreter.")] = 1,
    queue: Annotated[int, typer.Option("--queue", help="Requests that may wait for a worker; beyond that: 503 with Retry-After.")] = 32,
    batch: Annotated[int, typer.Option("--max-batch", help="Micro-batching: up to N image requests per invoke (models with a batch dimension).")] = 1,
    batch_wait: Annotated[float, typer.Option("--batch-wait", help="Milliseconds a worker waits to fill a batch.")] = 2.0,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body (e.g. 10MB, 512KB); larger ones get 413.")] = "10MB",
    timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds for an answer, queue wait included (504 after).")] = 30.0,
    read_timeout: Annotated[float, typer.Option("--read-timeout", help="Seconds a request may stall without a byte arriving (408 after; 30x this in all).")] = 10.0,
    max_connections: Annotated[int, typer.Option("--max-connections", help="Open client connections at most (kept below the open-files limit); beyond it an idle one is closed to make room.")] = 256,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="MLTOOL_API_KEY", show_envvar=True, show_default=False,
                                                   help="Require this key (X-API-Key or Authorization: Bearer). Prefer the environment variable or --api-key-file: a command-line value shows in ps.")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="Read the API key from this file.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Allow browsers on this origin (repeatable, or *). Off by default.")] = None,
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Live view: run continuously on this source (camera, stream, video, picamera...) and serve /, /stream.mjpg, /snapshot.jpg, /events.")] = None,
    camera: CameraOpt = None,
    camera_size: CameraSizeOpt = None,
    camera_fps: CameraFpsOpt = None,
    camera_transform: CameraTransformOpt = None,
    every: Annotated[int, typer.Option("--every", help="Live view: process every Nth frame.")] = 1,
    loop: Annotated[bool, typer.Option("--loop", help="Live view of a video file: play it again at its end (it plays at its own frame rate).")] = False,
    fps: Annotated[float, typer.Option("--fps", help="Live view: MJPEG frames per second per viewer, at most.")] = 10.0,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between checks of a deployed model's current release (0: only on SIGHUP).")] = 2.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="One line per request on stderr.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Lifecycle events (ready, reload, stopped) as JSON lines on stdout.")] = False,
    *,
    mqtt: Any = None,
    predictor: Any = None,
) -> None:
    """Serve MODEL over HTTP until SIGTERM (requests in flight are answered first); SIGHUP reloads."""
    from mltool.cli._output import print_json_line, stderr_console
    from mltool.errors import ConfigError
    from mltool.runtime.sources.camera import camera_options
    from mltool.serve.config import ServeConfig, read_api_key
    from mltool.serve.server import serve as run_serve
    from mltool.units import parse_size

    if source is not None and camera is not None:
        raise ConfigError("give --source or --camera, not both", "pass one live source")
    cfg = ServeConfig(model=model, host=host, port=port, name=name, root=root, workers=workers, queue=queue, batch=batch,
                      batch_wait_ms=batch_wait, max_body=parse_size(max_body, "--max-body"), timeout_s=timeout, read_timeout_s=read_timeout,
                      max_connections=max_connections,
                      api_key=read_api_key(api_key, api_key_file), cors_origins=list(cors_origin or []),
                      source=source if source is not None else camera,
                      camera=camera_options(camera_size, camera_fps, camera_transform), loop=loop, every=every, fps=fps, poll_s=poll,
                      access_log=access_log, predictor=predictor)
    console = stderr_console()
    reporter = None
    if mqtt is not None:
        if cfg.source is None:
            raise ConfigError("--mqtt reports what the live view sees", "add --source SRC or --camera [N]")
        reporter = mqtt_reporter(mqtt, console)
    if cfg.exposed and cfg.api_key is None:
        console.print(f"[yellow]warning: listening on {host} without an API key: anyone who can reach this device can use "
                      "the model. Set MLTOOL_API_KEY or --api-key-file, or keep the default 127.0.0.1 and use `mltool tunnel`.[/yellow]",
                      soft_wrap=True)

    def event(e: dict[str, Any]) -> None:
        kind = e.get("event")
        if reporter is not None and kind in ("ready", "reload"):  # results name the release that made them
            reporter.start({"model": e["file"], "release": e["release"], "source": cfg.source, "source_kind": e.get("live_kind"),
                            "task": e.get("task")})
        if reporter is not None and kind == "stopped":
            e["mqtt"] = reporter.close()
        if json_out:
            print_json_line(e)
        if kind == "ready":
            console.print(f"serving {e['model']} (release {e['release']}) on {e['url']}  workers {e['workers']}, queue {e['queue']}"
                          + (f", following {e['follows']}" if e["follows"] else "") + (f", live view of {e['live']} at {e['url']}/" if e["live"] else "")
                          + f"; ready in {e['startup_s']:.2f} s", soft_wrap=True)
            if e.get("urls"):
                console.print("reachable at " + ", ".join(e["urls"]) + f" ({e['url']} is every address of this device)",
                              soft_wrap=True, markup=False)
            if not e["live"]:
                console.print("endpoints: " + "; ".join(e["endpoints"]) + f"; a page at {(e['urls'] or [e['url']])[0]}/",
                              soft_wrap=True, markup=False)
            cam = e.get("camera")
            if cam:
                console.print(f"camera {cam['camera']} ({cam['name']}, {cam['backend']}): {cam['reason']}", soft_wrap=True, markup=False)
        elif kind == "stopped":
            console.print(f"stopped: {e['requests']} requests, {e['inferences']} inferences, {e['reloads']} reloads "
                          f"({e['reload_failures']} failed)" + (f", {e['unfinished']} unfinished" if e["unfinished"] else ""), soft_wrap=True)

    try:
        run_serve(cfg, on_event=event, consumers=[reporter.result] if reporter else None,
                  event_consumers=[reporter.event] if reporter else None)
    finally:
        if reporter is not None:
            reporter.close()  # a second close is a no-op
