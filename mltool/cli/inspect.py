"""Describe any .tflite model: tensors, quantization, signatures, operators, embedded metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mltool.cli._options import DelegateOpt, DelegateOptionOpt, InputShapeOpt, JsonOpt


def inspect(
    model: Annotated[Path, typer.Argument(help="A .tflite file (from mltool or any other converter).", show_default=False)],
    input_shape: InputShapeOpt = None,
    delegate: DelegateOpt = None,
    delegate_option: DelegateOptionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show inputs/outputs (shape, shape signature, dtype, scale, zero point), signatures,
    operators, size, embedded mltool metadata, standard TFLite Metadata and Ultralytics metadata
    of a .tflite model; what kind of model it is (classifier, SSD, YOLO v5/v8/end-to-end, raw) and
    why; its quantization scheme read from the graph; and whether this machine's runtime can run
    it. Never needs TensorFlow."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.runtime.inspect import inspect_model
    from mltool.runtime.interpreter import parse_delegate_options, parse_shapes

    report = inspect_model(model, input_shape=parse_shapes(input_shape), delegate=delegate,
                           delegate_options=parse_delegate_options(delegate_option))
    _render(stderr_console(), report)
    if json_out:
        print_json(report)


def _render(console: Any, r: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    loaded = (f"loaded by {r['runtime']} in {r['load_ms']:.1f} ms" if r["runnable"]
              else f"[red]{r['runtime']} cannot run it here[/red]")
    console.print(f"[bold]{escape(r['path'])}[/bold]  {r['size_bytes']:,} bytes  schema v{r['schema_version']}  {loaded}")
    if not r["runnable"]:
        console.print(f"[red]{escape(r['runtime_error'])}[/red]", soft_wrap=True)
    for kind in ("inputs", "outputs"):
        t = Table(title=kind)
        for col in ("name", "shape", "signature", "dtype", "scale", "zero point"):
            t.add_column(col)
        for x in r[kind]:
            q = x.get("quantization") or {}
            scale = "-" if not q else (f"{q['scale']:.6g}" if "scale" in q else f"per-channel x{q['per_channel']}")
            t.add_row(escape(x["name"]), str(x["shape"]), str(x["shape_signature"]), x["dtype"], scale,
                      "-" if not q else str(q.get("zero_point", "-")))
        console.print(t)
    if r["dynamic_inputs"]:
        console.print(f"[yellow]dynamic inputs: {', '.join(r['dynamic_inputs'])} — infer/bench take --input-shape "
                      "(and --window for signals)[/yellow]")
    sigs = ", ".join(f"{s['key']}({', '.join(s['inputs'])}) -> {', '.join(s['outputs'])}" for s in r["signatures"]) or "none"
    console.print(f"signatures: {escape(sigs)}", soft_wrap=True)
    console.print(f"subgraphs: {r['subgraphs']}  tensors: {r['tensors']}  operators: {sum(r['operators'].values())}")
    console.print("  " + "  ".join(f"{k} x{v}" for k, v in r["operators"].items()), soft_wrap=True)
    if r["custom_operators"]:
        console.print(f"custom operators: {', '.join(r['custom_operators'])}")
    meta = r["mltool_metadata"]
    if meta:
        q = meta.get("quantization", {})
        labels = meta.get("labels") or []
        console.print(escape(f"mltool metadata: task {meta.get('task')}, quantization {q.get('mode')} (I/O {q.get('io')}), "
                             f"{len(labels)} labels [{', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}], "
                             f"normalization {meta.get('normalization')}, mltool {meta.get('mltool_version')}"), soft_wrap=True)
    else:
        console.print(f"mltool metadata: none (other metadata entries: {', '.join(r['metadata_entries']) or 'none'})")
    std = r["tflite_metadata"]
    if std:
        parts = [f"{k} {std[k]}" for k in ("name", "version", "author", "mean", "std", "color_space", "sample_rate",
                                           "channels", "labels", "label_file", "output_names") if k in std]
        console.print(escape("TFLite metadata: " + ", ".join(parts)), soft_wrap=True)
    fam = r.get("family")
    if fam:
        console.print(escape(f"family: {fam['family']} ({fam['task']}): {fam['evidence']}"), soft_wrap=True)
    q = r.get("quantization_scheme")
    if q:
        console.print(escape(f"quantization: {q['scheme']} ({q['evidence']}); {q['note']}"), soft_wrap=True)
    ultra = r.get("ultralytics_metadata")
    if ultra:
        names = ultra.get("names") or {}
        console.print(escape(f"Ultralytics metadata: task {ultra.get('task')}, imgsz {ultra.get('imgsz')}, {len(names)} names, "
                             f"version {ultra.get('version')}, args {ultra.get('args')}"), soft_wrap=True)
    for p in r["problems"]:
        console.print(f"[yellow]{escape(p)}[/yellow]", soft_wrap=True)
