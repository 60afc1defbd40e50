"""Export a model for other deployment systems: a Mender artifact (`mltool export mender`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mltool.cli._options import JsonOpt

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@app.callback()
def _group() -> None:
    """Export a model for other deployment systems: a Mender artifact (`mltool export mender`)."""


@app.command("mender")
def mender(
    model: Annotated[Path, typer.Argument(help="A .tflite model or a run directory.", show_default=False)],
    device_type: Annotated[str, typer.Option("--device-type", help="Mender device type the artifact is compatible with, e.g. raspberrypi4.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .mender file to write.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Model name on the device (default: the model's task, else its file name).")] = None,
    remote_dir: Annotated[str, typer.Option("--remote-dir", help="The device root (absolute: the Mender client runs as root).")] = "/home/pi/mltool",
    keep: Annotated[int, typer.Option("--keep", help="Releases to keep per model.")] = 3,
    artifact_name: Annotated[Optional[str], typer.Option("--artifact-name", help="Mender artifact name (default: NAME-RELEASE).")] = None,
    module_out: Annotated[Optional[Path], typer.Option("--module-out", help="Also write the `mltool` update module (install it on devices at /usr/share/mender/modules/v3/mltool).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a Mender artifact (type `mltool`): the update module installs it with the same release
    steps as `mltool deploy` (verify, probe, atomic switch, prune) and rolls back by switching back."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.deploy.mender import export_mender

    res = export_mender(model, device_type, out, name=name, root=remote_dir, keep=keep, artifact_name=artifact_name,
                        module_out=module_out)
    stderr_console().print(f"{res['artifact']}: {res['name']} release {res['release']} for {res['device_type']} "
                           f"(artifact {res['artifact_name']})" + (f"; update module {res['module']}" if res["module"] else ""),
                           markup=False, soft_wrap=True)
    if json_out:
        print_json(res)
