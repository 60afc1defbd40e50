"""Silence C/C++ libraries that write straight to file descriptors 1/2 (TensorFlow, LiteRT).

Python-level redirection cannot catch those writes, so the descriptors themselves are
pointed at a temporary file; on an unexpected exception the captured text (minus info lines) is
replayed to stderr so nothing useful is lost. ``MLTOOL_DEBUG=1`` disables all of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def debug() -> bool:
    """MLTOOL_DEBUG is on: tracebacks and library logs stay visible. The one place it is read."""
    return os.environ.get("MLTOOL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def silenced(stdout: bool = False) -> Iterator[None]:
    """Capture fd 2 (and fd 1 if ``stdout``) for the duration of the block."""
    if debug():
        yield
        return
    fds = [2] + ([1] if stdout else [])
    sys.stderr.flush()
    sys.stdout.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(sys.stderr) if stdout else contextlib.nullcontext():
                yield
        except BaseException as exc:
            _restore(saved)
            sink.seek(0)
            captured = sink.read().decode(errors="replace")
            if not _explained(exc):
                sys.stderr.write(_without_noise(captured))
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            _restore(saved)


def _explained(exc: BaseException) -> bool:
    """An mltool error already says what went wrong in one line: the library's log is noise then."""
    from mltool.errors import MltoolError

    return isinstance(exc, MltoolError)


def _without_noise(text: str) -> str:
    # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." and similar info lines
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("INFO: "))


def _restore(saved: dict[int, int]) -> None:
    for fd, dup in list(saved.items()):
        os.dup2(dup, fd)
        os.close(dup)
        del saved[fd]
