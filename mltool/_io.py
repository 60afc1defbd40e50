"""Atomic file writes (a reader, or a crash, never sees half a file at the destination), and
whether a process that left files behind is still running."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp and mkdtemp
    use 0600/0700, which would leave models and runs unreadable to other users)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` if needed and prove it writable now, before any work is done: a read-only
    or mistyped output folder is one line at the start, not a traceback after minutes."""
    from mltool.errors import ConfigError, DataError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder", f"pass a folder to {option}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except PermissionError:
        raise DataError(f"{option} {path} is not writable (permission denied)", "choose a folder you can write to") from None
    except OSError as exc:
        raise DataError(f"{option} {path} cannot be written ({exc.strerror or exc})", "choose another folder") from None
    return path


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` is running (one of another user's counts; a zombie, finished but
    not yet reaped, does not)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
