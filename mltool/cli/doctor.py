"""Check this machine: TFLite runtime, Python, CPU, NumPy, cameras, and what to install."""

from __future__ import annotations

from typing import Annotated

import typer

from mltool.cli._options import JsonOpt


def doctor(
    no_camera_probe: Annotated[bool, typer.Option("--no-camera-probe", help="List /dev/video* without opening them.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Report the runtime found and its version, Python, CPU, NumPy, usable cameras, and the
    command to install whatever is missing. Exits 1 if something required is missing."""
    from rich.table import Table

    from mltool.cli._output import print_json, stderr_console
    from mltool.runtime.doctor import run_doctor

    report = run_doctor(probe_cameras=not no_camera_probe)
    t = Table(title=f"mltool {report['mltool']} doctor")
    for col in ("check", "status", "detail", "fix"):
        t.add_column(col)
    colors = {"ok": "green", "warn": "yellow", "missing": "red", "info": "dim"}
    for c in report["checks"]:
        t.add_row(c["name"], f"[{colors[c['status']]}]{c['status']}[/]", c["detail"], c["fix"] or "")
    stderr_console().print(t)
    if json_out:
        print_json(report)
    if not report["ok"]:
        raise typer.Exit(1)
