"""Domain errors. Each carries a one-line fix hint; the CLI prints both on one line and exits 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MltoolError(Exception):
    """Base class for errors the user can fix. ``hint`` says how."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f". Fix: {self.hint.rstrip('.')}"
        return " ".join(text.split())  # never more than one line


class ConfigError(MltoolError):
    """An option value, task or architecture name that cannot be used: a usage error (exit 2)."""

    exit_code = 2


class DataError(MltoolError):
    """A dataset, file or folder that is missing, empty or malformed."""


class ModelError(MltoolError):
    """A model file that cannot be loaded or used."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A hint listing valid choices, closest first."""
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    listing = ", ".join(choices)
    if close:
        return f"did you mean '{close[0]}'? Valid choices: {listing}"
    return f"valid choices: {listing}"
