"""Re-measure a trained run's saved model on its held-out test split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mltool.cli._options import JsonOpt


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory from `mltool train` (or its model.keras).", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Dataset folder, if it moved since training.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Reload a run's saved model (safe mode) and re-measure accuracy on its held-out test split."""
    from rich.table import Table

    from mltool.cli._output import fmt_pct, print_json, stderr_console
    from mltool.train.run import evaluate_run

    result = evaluate_run(run, data)
    console = stderr_console()
    table = Table(title=f"{result['task']} / {result['arch']} — {result['run_dir']}")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, pc in result["per_class"].items():
        table.add_row(name, fmt_pct(pc["precision"]), fmt_pct(pc["recall"]), fmt_pct(pc["f1"]), str(pc["support"]))
    console.print(table)
    console.print(
        f"[bold]test accuracy {fmt_pct(result['accuracy'])}[/bold] on {result['samples']} held-out samples "
        f"(recorded at training: {fmt_pct(result['recorded_accuracy'])}); inference {result['seconds']:.2f}s"
    )
    if json_out:
        print_json(result)
