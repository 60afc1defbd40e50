"""The one parser for sizes users type (``--max-body 10MB``, ``--mqtt-outbox-max 100000,64M``)."""

from __future__ import annotations

import re

from mltool.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg])?(i?b)?\s*$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}  # powers of 1024, as df and du count


def has_unit(text: str) -> bool:
    """Whether ``text`` is a size with a unit (``64MB``, ``512k``), not a bare number."""
    m = _SIZE.match(text)
    return bool(m and (m.group(2) or m.group(3)))


def parse_size(text: str, option: str) -> int:
    """``10MB``, ``10M``, ``10MiB``, ``512k``, ``1.5G`` or ``1048576`` (bytes) as bytes; anything
    else is a usage error naming ``option``."""
    m = _SIZE.match(text)
    if not m or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise ConfigError(f"{option} '{text}' is not a size", f"e.g. {option} 10MB or {option} 512KB (K, M, G: powers of 1024)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
