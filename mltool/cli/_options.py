"""Option aliases shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same split, same metrics.")]


def parse_floats(value: Optional[str], name: str) -> Optional[list[float]]:
    """``--mean 127.5`` or ``--mean 123.7,116.3,103.5`` as a list of floats (None if not given)."""
    from mltool.errors import ConfigError

    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"{name} '{value}' is not a number or comma-separated numbers",
                          f"e.g. {name} 127.5 or {name} 0.485,0.456,0.406") from None
