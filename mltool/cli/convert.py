"""Convert a trained model to TFLite, measure what quantization costs, and embed its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltool.cli._options import JsonOpt, SeedOpt, parse_floats


def convert(
    model: Annotated[Path, typer.Argument(help="Run directory from `mltool train`, a .keras file, or a SavedModel directory.", show_default=False)],
    quantize: Annotated[str, typer.Option("--quantize", "-q", help="none | float16 | dynamic | int8 | int16x8 | all")] = "none",
    io: Annotated[Optional[str], typer.Option("--io", help="int8 mode input/output type: int8 (default) | uint8 | float32.")] = None,
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Folder of representative images or signal files for int8/int16x8 calibration (default: the run's training data).")] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="Calibration samples to use.")] = 200,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: next to the source model).")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Exit 1 if any mode loses more than this many accuracy points.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names, one per line (models without mltool.json).")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="Input normalisation mean, e.g. 127.5 (models without mltool.json).")] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="Input normalisation std, e.g. 127.5 (models without mltool.json).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", "-t", help="Interpreter threads for the latency column.")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-samples", help="Evaluate on at most N held-out samples.")] = None,
    allow_legacy: Annotated[bool, typer.Option("--allow-legacy", help="Accept legacy .h5 files (only if you trust them).")] = False,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Convert to TFLite (float32, float16, dynamic, int8, int16x8 or all) and compare size,
    accuracy, agreement and latency with the source model on held-out data."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.convert.converter import ConvertConfig
    from mltool.convert.converter import convert as run_convert
    from mltool.convert.results import ConvertCheckError

    cfg = ConvertConfig(
        model=model, quantize=quantize, io=io, calib=calib, calib_samples=calib_samples, out=out,
        max_drop=max_drop, allow_legacy=allow_legacy, labels=labels, mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"), threads=threads, eval_limit=eval_limit, seed=seed,
    )
    console = stderr_console()
    try:
        result = run_convert(cfg, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    except ConvertCheckError as exc:  # files were written: show the comparison, then the error
        _render(console, exc.result)
        if json_out:
            print_json(exc.result.as_dict())
        raise
    _render(console, result)
    _next_steps(console, result)
    if json_out:
        print_json(result.as_dict())


def _next_steps(console: Any, result: Any) -> None:
    """What to run next, as Ultralytics prints after an export: the smallest model that runs."""
    import shlex

    runs = [m for m in result.modes if not m.error]
    if not runs:
        return
    best = next((m for m in runs if m.mode == "int8"), runs[-1])
    path = shlex.quote(str(best.path))
    console.print(f"next: mltool infer {path} IMAGE_OR_FOLDER    # or --camera", soft_wrap=True, markup=False)
    console.print(f"      mltool deploy pi@raspberrypi.local {path} --setup    # to a Raspberry Pi", soft_wrap=True, markup=False)


def _render(console: Any, result: Any) -> None:
    from rich.table import Table

    from mltool.cli._output import fmt_pct

    def size(n: int) -> str:
        return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"

    ref = result.reference
    table = Table(title=f"convert {result.source} — {result.eval_samples} eval samples, {result.runtime}")
    for col, just in (("mode", "left"), ("I/O", "left"), ("size", "right"), ("vs float32", "right"),
                      ("accuracy", "right"), ("drop", "right"), ("agreement", "right"), ("median ms", "right")):
        table.add_column(col, justify=just)
    table.add_row(ref["name"], "float32", size(ref["size_bytes"]), "", fmt_pct(ref["accuracy"]), "", "", "", style="dim")
    for m in result.modes:
        drop = "-" if m.drop_points is None else f"{m.drop_points:+.2f} pt"
        if m.error:
            table.add_row(m.mode, f"{m.input_dtype}/{m.output_dtype}", size(m.size_bytes), f"{m.size_vs_float32:.2f}x",
                          "[red]cannot run[/red]", "", "", "", style="red")
            continue
        table.add_row(
            m.mode, f"{m.input_dtype}/{m.output_dtype}", size(m.size_bytes), f"{m.size_vs_float32:.2f}x",
            fmt_pct(m.accuracy), drop, fmt_pct(m.agreement), f"{m.latency_ms['median']:.3f}",
        )
    console.print(table)
    console.print(f"evaluated on: {result.eval_data}")
    if result.calibration:
        console.print(f"calibrated with: {result.calibration}")
    for m in result.modes:
        console.print(f"wrote [bold]{m.path}[/bold]")
