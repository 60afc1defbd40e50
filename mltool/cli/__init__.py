"""Root of the ``mltool`` command line: registers one module per command, nothing else.

The error boundary lives in :class:`_RootGroup` so that it applies both to the installed
console script and to Typer's ``CliRunner`` in tests:

* a :class:`~mltool.errors.MltoolError` prints one line (problem + fix) and exits 1;
* usage errors are Typer's and exit 2;
* ``MLTOOL_DEBUG=1`` lets the traceback through instead.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from mltool import __version__
from mltool._silence import debug
from mltool.errors import MltoolError

EXIT_INTERRUPTED = 130


# Options whose value is optional: given bare, they take this value (`--camera` = camera 0).
OPTIONAL_VALUE_OPTIONS = {"--camera": "0"}


def normalize_optional_values(args: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in OPTIONAL_VALUE_OPTIONS:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or (nxt.startswith("-") and nxt != "-"):
                out.append(OPTIONAL_VALUE_OPTIONS[arg])
    return out


class _RootGroup(TyperGroup):
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, normalize_optional_values(list(args)))

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MltoolError as exc:
            if debug():
                raise
            from mltool.cli._output import print_error

            print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug():
                raise
            from mltool.cli._output import print_error

            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="mltool",
    cls=_RootGroup,
    help="Train a Keras model, convert it to TFLite, deploy it to a Raspberry Pi and run it there.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in tracebacks could include SSH passwords or keys: never show them.
    pretty_exceptions_show_locals=False,
    # Plain help and usage errors: Typer's Rich help formatting imports rich.markdown and
    # markdown-it and doubles `mltool --help` time (0.25 s -> 0.47 s here, far more on a Pi).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mltool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Show the version and exit.",
        callback=_version_callback, is_eager=True,
    ),
) -> None:
    """Train a Keras model, convert it to TFLite, deploy it to a Raspberry Pi and run it there."""


def _register() -> None:
    from mltool.cli import (
        bench,
        convert,
        datasets,
        deploy,
        doctor,
        evaluate,
        infer,
        inspect,
        serve,
        train,
        tunnel,
    )

    app.command("train", help=train.__doc__)(train.train)
    app.command("evaluate", help=evaluate.__doc__)(evaluate.evaluate)
    app.command("convert", help=convert.__doc__)(convert.convert)
    app.command("inspect", help=inspect.__doc__)(inspect.inspect)
    app.command("infer", help=infer.__doc__)(infer.infer)
    app.command("bench", help=bench.__doc__)(bench.bench)
    app.command("doctor", help=doctor.__doc__)(doctor.doctor)
    app.command("serve", help=serve.__doc__)(serve.serve)
    app.command("deploy", help=deploy.deploy.__doc__)(deploy.deploy)
    app.command("releases", help=deploy.releases.__doc__)(deploy.releases)
    app.command("rollback", help=deploy.rollback.__doc__)(deploy.rollback)
    app.command("logs", help=deploy.logs.__doc__)(deploy.logs)
    app.command("tunnel", help=tunnel.tunnel.__doc__)(tunnel.tunnel)
    app.add_typer(datasets.app, name="datasets")


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if argv is not None:
        sys.argv[1:] = argv
    app(prog_name="mltool")
