"""Run a .tflite model on images, video, cameras, streams or signals. No TensorFlow needed."""

from __future__ import annotations

import signal
import threading
import time
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
def infer(
    model: Annotated[Path, typer.Argument(help="A .tflite model (its embedded metadata supplies labels and preprocessing).", show_default=False)],
    source_arg: Annotated[Optional[str], typer.Argument(metavar="[SOURCE]", help="Same as --source.", show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Image, directory, glob, video, camera (the device's), camera index, /dev/videoN, picamera[:N], rtsp:// or http:// stream, .npy/.csv/.wav signal, - (stdin samples), or an I2C ADC: i2c:BUS:ADDR?chip=pcf8591|ads1115,channel=N (see README).")] = None,
    camera: CameraOpt = None,
    camera_size: CameraSizeOpt = None,
    camera_fps: CameraFpsOpt = None,
    camera_transform: CameraTransformOpt = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write annotated images/video and predictions.jsonl here.")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", "-n", help="Stop after N results.")] = None,
    every: Annotated[int, typer.Option("--every", help="Process every Nth frame.")] = 1,
    hop: Annotated[Optional[int], typer.Option("--hop", help="Signal window hop in samples (default: one window).")] = None,
    timeout: Annotated[float, typer.Option("--stall-timeout", help="Seconds without a frame before a camera/stream counts as stalled.")] = 5.0,
    max_reconnects: Annotated[Optional[int], typer.Option("--max-reconnects", help="Give up after N failed reopen attempts (default: never).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per result (and per event) on stdout.")] = False,
    mqtt: Any = None,
    predictor: Any = None,
) -> None:
    """Run MODEL on a source and print predictions live; Ctrl-C or SIGTERM stops with a summary."""
    from mltool.cli._output import stderr_console
    from mltool.errors import ConfigError
    from mltool.runtime.infer import InferConfig, run_infer
    from mltool.runtime.sources.camera import camera_options

    chosen = [s for s in (source_arg, source, camera) if s is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one source" if chosen else "no source given",
                          "pass SOURCE, --source SRC or --camera [N]")
    cfg = InferConfig(model=model, source=chosen[0], predictor=predictor, save=save, max_frames=max_frames, every=every,
                      hop=hop, timeout_s=timeout, max_reconnects=max_reconnects,
                      camera=camera_options(camera_size, camera_fps, camera_transform))
    console = stderr_console()
    reporter = None
    if mqtt is not None:
        reporter = mqtt_reporter(mqtt, console)
    stop = threading.Event()
    stopped: dict[str, str] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        stopped["by"] = signal.Signals(signum).name
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal) if threading.current_thread() is threading.main_thread() else None
    view = _View(console, json_out)
    hooks = {"on_result": view.result, "on_event": view.event, "on_start": view.start}
    if reporter is not None:
        hooks = {k: _both(f, getattr(reporter, k[3:])) for k, f in hooks.items()}
    mqtt_stats = None
    try:
        summary = run_infer(cfg, **hooks, stop=stop)
    finally:
        view.close()
        if reporter is not None:
            mqtt_stats = reporter.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary.mqtt = mqtt_stats
    if stopped.get("by"):
        summary.stopped_by = stopped["by"]
    elif summary.stopped_by == "interrupt":
        summary.stopped_by = "SIGINT"
    if json_out:
        from mltool.cli._output import print_json_line

        print_json_line(summary.as_dict())
    _render_summary(console, summary)
    if summary.frames == 0 and summary.errors:
        from mltool.errors import DataError

        raise DataError(f"no input from {summary.source} could be processed ({summary.errors} errors)",
                        "see the errors above")
    if summary.stopped_by in ("SIGINT", "SIGTERM"):
        from mltool.cli import EXIT_INTERRUPTED

        raise typer.Exit(EXIT_INTERRUPTED)  # one rule for every command: stopped by a signal, after the summary: 130


def _both(first: Any, second: Any) -> Any:
    def call(x: Any) -> None:
        first(x)
        second(x)

    return call


class _View:
    """Live status on a terminal; one line per result otherwise; JSON lines on stdout with --json."""

    def __init__(self, console: Any, json_out: bool) -> None:
        self.console = console
        self.json_out = json_out
        self.live: Any = None
        self.t0 = time.perf_counter()
        self.n = 0
        self.info: dict[str, Any] = {}
        self.last_line = ""

    def start(self, info: dict[str, Any]) -> None:
        self.info = info
        from rich.markup import escape

        delegate = f", delegate {info['delegate']}" if info.get("delegate") else ""
        family = f", {info['family']}" if info.get("task") == "detection" and info.get("family") else ""
        self.console.print(f"[dim]{escape(info['model'])} ({info['runtime']}{delegate}, input {info['input']} {info['input_dtype']}, "
                           f"{info['task']}{escape(family)}) on {info['source_kind']} {escape(info['source'])}[/dim]", soft_wrap=True)
        for note in info.get("notes", []):
            self.console.print(f"[yellow]{escape(note)}[/yellow]", soft_wrap=True)
        cam = info.get("camera")
        if cam:
            size = "x".join(map(str, cam["size"])) if cam.get("size") else "default size"
            self.console.print(f"[dim]camera {escape(cam['camera'])} ({escape(cam['name'])}, {cam['backend']}; {size}"
                               f"{', ' + str(cam['fps']) + ' fps' if cam.get('fps') else ''}"
                               f"{', ' + cam['transform'] if cam.get('transform') not in (None, 'none') else ''}): "
                               f"{escape(cam['reason'])}[/dim]", soft_wrap=True)
            if self.json_out:
                from mltool.cli._output import print_json_line

                print_json_line({"event": "camera", **cam})
        if self.console.is_terminal and info["source_kind"] in ("camera", "stream", "picamera", "video"):
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def result(self, result: Any) -> None:
        from mltool.cli._output import print_json_line

        r = result.as_dict()
        self.n += 1
        if self.json_out:
            print_json_line(r)
        if "detections" in r:
            top = ", ".join(f"{d['label']} {d['score']:.2f}" for d in r["detections"][:3]) or "nothing"
        elif "outputs" in r:
            from mltool.runtime.predictor import describe_tensors

            top = describe_tensors(result.outputs or {}, result.value)
        else:
            top = ", ".join(f"{p['label']} {p['score']:.3f}" for p in r["predictions"][:3])
        alert = r.get("alert")
        flag = f"  [bold red]ALERT {alert['class']} {alert['score']:.2f}[/bold red]" if alert and alert["active"] else ""
        sampling = r.get("sampling")
        if sampling is not None and not sampling["ok"]:
            flag += (f"  [yellow]TIMING: {sampling['late']} late, {sampling['missed']} missed of {sampling['samples']} "
                     f"samples (jitter max {sampling['jitter_ms']['max']:.1f} ms)[/yellow]")
        line = f"{r['name']}: {top}  ({r['latency_ms']:.2f} ms){flag}"
        if self.live is not None:
            fps = self.n / max(time.perf_counter() - self.t0, 1e-9)
            self.live.update(f"[bold]{self.info['source']}[/bold]  frame {r['index']}  {fps:.1f} FPS  "
                             f"{r['latency_ms']:.2f} ms\n{top}{flag}")
        else:
            self.console.print(line, soft_wrap=True)

    def event(self, e: dict[str, Any]) -> None:
        from mltool.cli._output import print_json_line

        if self.json_out:
            print_json_line(e)
        style = "red" if e["event"] in ("error", "lost") else "yellow"
        self.console.print(f"[{style}]{e['event']}: {e['message']}[/{style}]", soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _render_summary(console: Any, s: Any) -> None:
    lat = s.latency_ms
    console.print(
        f"[bold]{s.frames} results[/bold] in {s.elapsed_s:.2f}s ({s.fps:.1f}/s), invoke median {lat['median']:.2f} ms "
        f"(p90 {lat['p90']:.2f}), first result after {s.first_result_s if s.first_result_s is not None else '-'} s; "
        f"dropped {s.dropped}, skipped {s.skipped}, errors {s.errors}, reconnects {s.reconnects}"
        + (f", alerts {s.alerts}" if s.alerts else "") + f"; stopped by {s.stopped_by}",
        soft_wrap=True,
    )
    sm = s.sampling
    if sm is not None:
        j = sm["jitter_ms"]
        console.print(
            f"sampling: {sm['samples']} samples, achieved {sm['achieved_hz']} Hz of {sm['rate_hz']:g}, jitter p50 "
            f"{j['p50']:.3f} ms p99 {j['p99']:.3f} ms max {j['max']:.3f} ms, late {sm['late']}, missed {sm['missed']}, "
            f"windows flagged {sm['flagged_windows']}{'' if sm['realtime'] else '; normal priority (no real-time privilege)'}",
            soft_wrap=True,
        )
    if s.saved_to:
        console.print(f"saved to {s.saved_to}")
    m = s.mqtt
    if m:
        console.print(f"mqtt {m['broker']}: {m['published']} messages acknowledged, {m['events']} events, "
                      f"{m['pending']} pending in the outbox, {m['dropped']} dropped", soft_wrap=True)
