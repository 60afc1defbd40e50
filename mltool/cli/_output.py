"""Rendering: humans get Rich on stderr, machines get JSON on stdout (``--json``)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

_stderr: Console | None = None


def stderr_console() -> Console:
    """The console for progress, tables and logs. Re-created if stderr was swapped (tests)."""
    global _stderr
    if _stderr is None or _stderr.file is not sys.stderr:
        width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
        if width is None and not sys.stderr.isatty():
            width = 120  # logs and pipes: Rich's 80-column default squeezes the tables
        _stderr = Console(file=sys.stderr, width=width, highlight=False)
    return _stderr


def print_error(line: str) -> None:
    # Plain print: the error must be one line whatever the terminal width.
    print(f"Error: {line}", file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One compact JSON object per line on stdout (streams of results that can be piped)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths, without importing numpy here
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}%"
