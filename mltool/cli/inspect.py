"""Describe any .tflite model: tensors, quantization, signatures, operators, embedded metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mltool.cli._options import JsonOpt


def inspect(
    model: Annotated[Path, typer.Argument(help="A .tflite file (from mltool or any other converter).", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Show inputs/outputs (shape, dtype, scale, zero point), signatures, operators, size and
    embedded mltool metadata of a .tflite model. Never needs TensorFlow."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.runtime.inspect import inspect_model

    report = inspect_model(model)
    _render(stderr_console(), report)
    if json_out:
        print_json(report)


def _render(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]{r['path']}[/bold]  {r['size_bytes']:,} bytes  schema v{r['schema_version']}  "
                  f"loaded by {r['runtime']} in {r['load_ms']:.1f} ms")
    for kind in ("inputs", "outputs"):
        t = Table(title=kind)
        for col in ("name", "shape", "dtype", "scale", "zero point"):
            t.add_column(col)
        for x in r[kind]:
            q = x.get("quantization") or {}
            t.add_row(x["name"], str(x["shape"]), x["dtype"],
                      "-" if not q else f"{q['scale']:.6g}", "-" if not q else str(q["zero_point"]))
        console.print(t)
    sigs = ", ".join(f"{s['key']}({', '.join(s['inputs'])}) -> {', '.join(s['outputs'])}" for s in r["signatures"]) or "none"
    console.print(f"signatures: {sigs}")
    console.print(f"subgraphs: {r['subgraphs']}  tensors: {r['tensors']}  operators: {sum(r['operators'].values())}")
    console.print("  " + "  ".join(f"{k} x{v}" for k, v in r["operators"].items()))
    meta = r["mltool_metadata"]
    if meta:
        q = meta.get("quantization", {})
        labels = meta.get("labels") or []
        console.print(f"mltool metadata: task {meta.get('task')}, quantization {q.get('mode')} (I/O {q.get('io')}), "
                      f"{len(labels)} labels [{', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}], "
                      f"normalization {meta.get('normalization')}, mltool {meta.get('mltool_version')}")
    else:
        console.print(f"mltool metadata: none (other metadata entries: {', '.join(r['metadata_entries']) or 'none'})")
