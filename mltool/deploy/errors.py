from __future__ import annotations

from mltool.errors import MltoolError

EXIT_FAILED = 3  # some hosts failed
EXIT_UNREACHABLE = 4  # some hosts unreachable (none failed)
EXIT_PENDING = 5  # pull deploys: some devices have not answered yet (none failed); they converge when back


class DeployError(MltoolError):
    """The device answered, but the deploy (or a command) failed."""

    exit_code = EXIT_FAILED


class CommandTimeout(DeployError):
    """A command on the device did not answer within --command-timeout."""


class UnreachableError(MltoolError):
    """Could not connect or authenticate."""

    exit_code = EXIT_UNREACHABLE


class HostKeyError(UnreachableError):
    """Unknown or changed host key: refused."""
