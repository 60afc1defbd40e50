"""Benchmark .tflite models like LiteRT's benchmark_model, side by side, or a sensor's sampling
(--source i2c:...: achieved rate and jitter, no model). No TensorFlow needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltool.cli._options import DelegateOpt, DelegateOptionOpt, InputShapeOpt, JsonOpt


def bench(
    models: Annotated[Optional[list[Path]], typer.Argument(help="One or more .tflite files (the first is the ratio baseline).", show_default=False)] = None,
    threads: Annotated[str, typer.Option("--threads", "-t", help="Thread counts to sweep, e.g. 1,2,4 (default: runtime default).")] = "",
    runs: Annotated[Optional[int], typer.Option("--runs", "-n", help="Steady-state invokes (default: >= 50 runs and >= 2 s).")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Steady-state duration instead of --runs (with --source: sampling time, default 5).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Invokes after the first, not timed.")] = 10,
    pipeline: Annotated[Optional[str], typer.Option("--pipeline", help="Also time the whole path from this source (read, decode, preprocess, invoke, postprocess).")] = None,
    pipeline_frames: Annotated[int, typer.Option("--pipeline-frames", help="Frames for --pipeline.")] = 100,
    input_shape: InputShapeOpt = None,
    delegate: DelegateOpt = None,
    delegate_option: DelegateOptionOpt = None,
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Measure a sensor instead of a model: i2c:BUS:ADDR?chip=...,rate=HZ (achieved rate, jitter p50/p99/max, late and missed samples).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Init time, first inference, steady-state latency (median, mean, p90, p99, min, std),
    throughput and peak RSS per model and thread count, with a ratio column. With --source
    i2c:..., how well the sensor keeps its sample rate instead (no model)."""
    from mltool.bench.timing import BenchConfig, run_bench
    from mltool.cli._output import print_json, stderr_console
    from mltool.errors import ConfigError
    from mltool.runtime.interpreter import parse_delegate_options, parse_shapes

    console = stderr_console()
    if source is not None:
        if models:
            raise ConfigError("--source measures a sensor without a model, but models were given",
                              "drop the models, or time a model on a source with --pipeline SRC")
        from mltool.bench.sensor import measure_sensor

        report = measure_sensor(source, seconds if seconds is not None else 5.0, log=lambda m: console.print(f"[dim]{m}[/dim]"))
        _render_sensor(console, report)
        if json_out:
            print_json(report)
        return
    if not models:
        raise ConfigError("no models given", "pass one or more .tflite files, or --source i2c:BUS:ADDR to measure a sensor")

    try:
        thread_list: list[int | None] = [int(t) for t in threads.split(",") if t.strip()] or [None]
    except ValueError:
        raise ConfigError(f"--threads '{threads}' is not a comma-separated list of numbers", "e.g. --threads 1,2,4") from None
    cfg = BenchConfig(models=list(models), threads=thread_list, runs=runs, seconds=seconds, warmup=warmup,
                      pipeline=pipeline, pipeline_frames=pipeline_frames, delegate=delegate,
                      delegate_options=parse_delegate_options(delegate_option), input_shape=parse_shapes(input_shape))
    result = run_bench(cfg, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    _render(console, result)
    if json_out:
        print_json(result)


def _render(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    rows = result["rows"]
    from rich import box

    # 13 columns: a light box keeps the table inside 120 columns
    t = Table(title=f"bench — {rows[0]['runtime']}", caption="times in ms; ratio = median vs the first model at the same threads",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    cols = ("model", "threads", "init", "first", "median", "mean", "p90", "p99", "min", "std", "inf/s", "RSS MiB", "ratio")
    for c in cols:
        if c == "model":  # names must stay readable: wrap, never elide
            t.add_column(c, justify="left", overflow="fold")
        else:
            t.add_column(c, justify="right")
    names = display_names([r["model"] for r in rows])
    for r in rows:
        t.add_row(names[r["model"]], str(r["threads"] or "default"), f"{r['init_ms']:.1f}", f"{r['first_ms']:.2f}",
                  *(f"{r['latency_ms'][k]:.3f}" for k in ("median", "mean", "p90", "p99", "min", "std")), f"{r['throughput_per_s']:.1f}", f"{r['peak_rss_mib']:.0f}",
                  f"{r['vs_first']:.2f}x")
    console.print(t)
    console.print(f"[dim]{rows[0]['runs']} timed runs after {rows[0]['warmup']} warmup; input filled once with random data[/dim]")
    for p in result.get("pipeline", []):
        s = p["stages_median_ms"]
        console.print(
            f"pipeline {names[p['model']]} on {p['source']} ({p['frames']} frames, {p['fps']:.1f} FPS): "
            + ", ".join(f"{k} {v:.3f} ms ({100 * p['share'][k]:.0f}%)" for k, v in s.items())
            + f"; total {p['total_median_ms']:.3f} ms, overhead beyond invoke {p['overhead_beyond_invoke_ms']:.3f} ms",
            soft_wrap=True,
        )


def display_names(paths: list[str]) -> dict[str, str]:
    """Short names that still tell models apart: the file name, or as many parent folders as it
    takes (two ``model_int8.tflite`` from different runs must not look the same)."""
    unique = list(dict.fromkeys(paths))
    depth = 1
    while True:
        names = {p: "/".join(Path(p).parts[-depth:]) for p in unique}
        if len(set(names.values())) == len(unique) or depth > max(len(Path(p).parts) for p in unique):
            return names
        depth += 1


def _render_sensor(console: Any, r: dict[str, Any]) -> None:
    j, rd = r["jitter_ms"], r["read_ms"]
    verdict = "[green]ok[/green]" if r["ok"] else f"[red]over the {100 * r['tolerance']:g}% tolerance[/red]"
    console.print(
        f"[bold]{r['source']}[/bold] ({r['chip']} on {r['device']}): {r['samples']} samples in {r['seconds']:g} s, "
        f"achieved {r['achieved_hz']} Hz of {r['rate_hz']:g}; jitter p50 {j['p50']:.3f} ms, p99 {j['p99']:.3f} ms, "
        f"max {j['max']:.3f} ms; late {r['late']}, missed {r['missed']} ({verdict}); bus read p50 {rd['p50']:.3f} ms, "
        f"max {rd['max']:.3f} ms; errors {r['errors']}, reopened {r['reconnects']}; "
        f"{'real-time priority' if r['realtime'] else 'normal priority (no real-time privilege)'}",
        soft_wrap=True,
    )
