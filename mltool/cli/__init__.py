"""Root of the ``mltool`` command line: registers one module per command, nothing else.

Commands are built lazily: Typer turns a function into a Click command by evaluating every
annotation of every option, about 20 ms per command; building all of them on every start cost
0.2 s (seconds on a Pi). Only the command being run is built; ``--help`` lists short help
from the modules' docstrings without building any.

The error boundary lives in :class:`_RootGroup` so that it applies both to the installed
console script and to Typer's ``CliRunner`` in tests:

* a :class:`~mltool.errors.MltoolError` prints one line (problem + fix) and exits 1;
* usage errors are Typer's and exit 2;
* ``MLTOOL_DEBUG=1`` lets the traceback through instead.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from mltool import __version__
from mltool._silence import debug
from mltool.errors import MltoolError

EXIT_INTERRUPTED = 130


# Options whose value is optional: given bare, they take this value (`--camera` = the device's camera).
OPTIONAL_VALUE_OPTIONS = {"--camera": "camera"}


# Options renamed so that one name means one thing in every command (docs/cli.md): the old
# names keep working (scripts, service units written by earlier deploys), with a note on stderr.
_SSH_RENAMED = {"--timeout": "--connect-timeout"}
RENAMED: dict[str, dict[str, str]] = {
    "infer": {"--timeout": "--stall-timeout"},
    "serve": {"--timeout": "--request-timeout", "--batch": "--max-batch"},
    "train": {"--limit": "--max-samples", **_SSH_RENAMED},
    "convert": {"--eval-limit": "--eval-samples"},
    "agent": {"--service": "--restart-unit"},
    "export": {"--output": "--out"},
    **{cmd: _SSH_RENAMED for cmd in ("deploy", "releases", "rollback", "logs", "tunnel")},
}


def rename_old_options(args: list[str]) -> list[str]:
    """``args`` with the old names of renamed options replaced by the new ones (a note on stderr)."""
    command = next((a for a in args if not a.startswith("-")), None)
    renamed = RENAMED.get(command or "", {})
    if not renamed:
        return args
    out = []
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in renamed:
            print(f"note: {name} is now {renamed[name]} (the old name still works)", file=sys.stderr)
            arg = renamed[name] + eq + value
        out.append(arg)
    return out


def normalize_optional_values(args: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in OPTIONAL_VALUE_OPTIONS:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or (nxt.startswith("-") and nxt != "-"):
                out.append(OPTIONAL_VALUE_OPTIONS[arg])
    return out


# name -> (module under mltool.cli, attribute, where its help text lives: module | function | typer)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("train", "train", "module"),
    "evaluate": ("evaluate", "evaluate", "module"),
    "convert": ("convert", "convert", "module"),
    "inspect": ("inspect", "inspect", "module"),
    "infer": ("infer", "infer", "module"),
    "bench": ("bench", "bench", "module"),
    "doctor": ("doctor", "doctor", "module"),
    "serve": ("serve", "serve", "module"),
    "deploy": ("deploy", "deploy", "function"),
    "releases": ("deploy", "releases", "function"),
    "rollback": ("deploy", "rollback", "function"),
    "logs": ("deploy", "logs", "function"),
    "tunnel": ("tunnel", "tunnel", "function"),
    "agent": ("agent", "agent", "module"),
    "export": ("export", "app", "typer"),
    "datasets": ("datasets", "app", "typer"),
}


def _help_of(name: str) -> tuple[object, str]:
    import importlib

    module, attr, where = COMMANDS[name]
    mod = importlib.import_module(f"mltool.cli.{module}")
    obj = getattr(mod, attr)
    text = mod.__doc__ if where == "module" else (obj.__doc__ if where == "function" else obj.info.help)
    return obj, text or ""


def _build(name: str) -> Any:
    from typer.models import CommandInfo

    obj, text = _help_of(name)
    if COMMANDS[name][2] == "typer":
        cmd = typer.main.get_command(obj)  # type: ignore[arg-type]
    else:
        cmd = typer.main.get_command_from_info(CommandInfo(name=name, callback=obj, help=text),  # type: ignore[arg-type]
                                               pretty_exceptions_short=True, rich_markup_mode=None)
    plain_metavars(cmd)
    return cmd


def plain_metavars(cmd: Any) -> None:
    """Help speaks the user's words, not Python's: ``N``, ``SECONDS``, ``PATH``, ``TEXT`` where
    Typer would show ``<int range>`` or ``<list[Path]>`` (an option's own metavar always wins)."""
    import typer._click as click

    for sub in getattr(cmd, "commands", {}).values():
        plain_metavars(sub)
    ctx = click.Context(cmd)
    for p in getattr(cmd, "params", []):
        if p.param_type_name == "argument":  # its NAME says it; no <type> after it
            p.metavar = p.metavar or p.name.upper()
            p.display_type_rich = lambda ctx: None
            continue
        if getattr(p, "is_flag", False) or getattr(p, "metavar", None) is not None or not hasattr(p, "display_type"):
            continue
        label = p.display_type(ctx).strip("<>")
        if label.startswith("int"):
            word = "N"
        elif label.startswith("float"):
            word = "SECONDS" if any(k in p.name for k in ("timeout", "seconds", "interval", "poll")) else "NUM"
        elif "path" in label.lower():
            word = "PATH"
        elif "|" in label:
            continue  # choices read well as they are
        else:
            word = "TEXT"
        p.metavar = word


class _RootGroup(TyperGroup):
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, normalize_optional_values(rename_old_options(list(args))))

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in COMMANDS:
            return None
        if name not in self.commands:
            self.commands[name] = _build(name)
        return self.commands[name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        from typer._click.utils import make_default_short_help

        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        rows = [(n, make_default_short_help(" ".join(_help_of(n)[1].split()), limit)) for n in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # type: ignore[override]
        import difflib

        try:
            return super().resolve_command(ctx, args)
        except typer._click.exceptions.UsageError as e:  # type: ignore[attr-defined]
            matches = difflib.get_close_matches(args[0], COMMANDS) if args else []
            if matches and "Did you mean" not in e.message:
                e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            with _sigterm_interrupts():
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


def _sigterm_interrupts() -> Any:
    """SIGTERM (systemd, ``docker stop``, CI) ends every command as Ctrl-C does: the command's own
    clean-up runs (a training run's ``.partial`` folder is removed) and it exits 130. Installed for
    the whole command, from before its first heavy import to after its last line of output, so no
    phase of any command is left with the default handler that would kill it mid-write. Commands
    with their own handling (infer, serve) install theirs inside and restore this one."""
    import contextlib
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed() -> Any:
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return installed()


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


_ROOT: Any = None  # the Click group, built once per process (its commands are built on first use)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    global _ROOT
    if argv is not None:
        sys.argv[1:] = argv
    if _ROOT is None:
        _ROOT = typer.main.get_command(app)
    _ROOT(prog_name="mltool")
