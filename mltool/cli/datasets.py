"""Find local datasets and write synthetic ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mltool.cli._options import JsonOpt

app = typer.Typer(help="Find local datasets and write synthetic ones.", no_args_is_help=True, rich_markup_mode=None,
                  add_completion=False)


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """Show which datasets are available locally and where mltool looked."""
    from rich.table import Table

    from mltool.cli._output import print_json, stderr_console
    from mltool.data.tasks import describe_local

    rows = describe_local()
    table = Table(title="datasets")
    for col in ("name", "kind", "status", "samples", "location"):
        table.add_column(col)
    for r in rows:
        status = "[green]available[/green]" if r["available"] else "[red]missing[/red]"
        if r["synthetic"]:
            status += " [yellow](synthetic)[/yellow]"
        location = r["path"] or "not found in: " + ", ".join(r["searched"])
        table.add_row(r["name"], r["kind"], status, str(r["samples"] or "-"), location)
    stderr_console().print(table)
    if json_out:
        print_json(rows)


@app.command("synth")
def synth(
    name: Annotated[str, typer.Argument(help="fire | ecg", show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Argument(help="Where to write it (default: $MLTOOL_DATA/<name> or ~/.mltool/datasets/<name>).", show_default=False)] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Samples per class.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed writes the same dataset.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Write a clearly labelled SYNTHETIC fire or ECG dataset in the real datasets' folder layout."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.data.synth import synthesize
    from mltool.data.tasks import default_synth_dir

    result = synthesize(name, out_dir if out_dir is not None else default_synth_dir(name), per_class=count, seed=seed)
    counts = ", ".join(f"{k}: {v}" for k, v in result.counts.items())
    stderr_console().print(f"wrote SYNTHETIC {name} dataset to [bold]{result.out_dir}[/bold] ({counts})")
    if json_out:
        print_json(result.as_dict())


@app.command("samples")
def samples(
    task: Annotated[str, typer.Argument(help="A training task: digits, mnist, fashion-mnist, fire, ecg.", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write them to.", show_default=False)],
    count: Annotated[int, typer.Option("--count", "-n", help="How many.", min=1)] = 8,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Dataset folder (as for `mltool train`).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The --seed of the `mltool train` run: its test split is the one written.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Write held-out test samples (never trained on with the same --seed) as files named by their
    label, to try a model on: PNG pictures, or .npy windows for signal tasks."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.data.tasks import write_samples

    paths = write_samples(task, out_dir, count, data, seed=seed)
    stderr_console().print(f"wrote {len(paths)} {task} test samples to [bold]{out_dir}[/bold]")
    if json_out:
        print_json([str(p) for p in paths])
