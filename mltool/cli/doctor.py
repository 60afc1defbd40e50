"""Check this machine: TFLite runtime, Python, CPU, NumPy, cameras, and what to install."""

from __future__ import annotations

from typing import Annotated

import typer

from mltool.cli._options import JsonOpt


def doctor(
    no_camera_probe: Annotated[bool, typer.Option("--no-camera-probe", help="List /dev/video* without opening them.")] = False,
    train: Annotated[bool, typer.Option("--train", help="Also check the training side: TensorFlow and the devices it sees (imports TensorFlow: seconds).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Report the runtime found and its version, Python, CPU, NumPy, usable cameras, and the
    command to install whatever is missing. Exits 1 if something required is missing."""
    from rich.markup import escape
    from rich.table import Table

    from mltool.cli._output import print_json, stderr_console
    from mltool.runtime.doctor import run_doctor

    report = run_doctor(probe_cameras=not no_camera_probe)
    if train:
        _training_check(report)
    t = Table(title=f"mltool {report['mltool']} doctor")
    for col in ("check", "status", "detail", "fix"):
        t.add_column(col)
    colors = {"ok": "green", "warn": "yellow", "missing": "red", "info": "dim"}
    for c in report["checks"]:
        t.add_row(c["name"], f"[{colors[c['status']]}]{c['status']}[/]", escape(c["detail"]), escape(c["fix"] or ""))
    stderr_console().print(t)
    if json_out:
        print_json(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _training_check(report: dict) -> None:
    """The devices TensorFlow sees, as ``train --devices`` would use them (only with --train: the
    device path never imports TensorFlow)."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None:
        report["checks"].append({"name": "training devices", "status": "missing", "detail": "TensorFlow is not installed",
                                 "fix": "pip install 'mltool-edge[train]' (mltool-edge[train-gpu] on Linux x86_64 with an NVIDIA GPU)"})
        report["training"] = None
        report["ok"] = False
        return
    from mltool.train.devices import describe

    info = describe()
    report["training"] = info
    gpus = info["gpus"]
    detail = (f"TensorFlow {info['tensorflow']}: " + (", ".join(gpus) if gpus else "CPU only") +
              f" ({len(info['devices'])} device(s): {', '.join(d.removeprefix('/physical_device:') for d in info['devices'])})")
    fix = None
    if not gpus and not info["built_with_cuda"]:
        fix = "for NVIDIA GPUs on Linux x86_64: pip install 'mltool-edge[train-gpu]'"
    report["checks"].append({"name": "training devices", "status": "ok" if gpus else "info", "detail": detail, "fix": fix})
