"""Run directories: built under a hidden temporary name, renamed into place only when complete.

A run that fails or is interrupted therefore never leaves ``runs/train/<task>-N`` behind; a
process killed outright leaves only a hidden ``.partial-*`` folder, removed by the next run.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from mltool.errors import ConfigError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(parent: Path) -> None:
    if not parent.is_dir():
        return
    for p in parent.glob(".partial-*"):
        m = re.match(r"\.partial-.*-(\d+)-[^-]+$", p.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def start(parent: Path, task: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(parent)
    return Path(tempfile.mkdtemp(prefix=f".partial-{task}-{os.getpid()}-", dir=parent))


def check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output directory {out} already exists", "choose a new --out; runs are never overwritten")


def finish(tmp: Path, parent: Path, task: str, out: Path | None) -> Path:
    """Move the complete run into place: ``out`` or the next free ``<parent>/<task>-N``."""
    if out is not None:
        check_out_dir(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out) if out.parent.resolve() == tmp.parent.resolve() else shutil.move(str(tmp), str(out))
        return out
    n = next_index(parent, task)
    while True:
        target = parent / f"{task}-{n}"
        try:
            os.rename(tmp, target)  # fails if another run took the name meanwhile
            return target
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            n += 1


def next_index(parent: Path, task: str) -> int:
    pattern = re.compile(rf"^{re.escape(task)}-(\d+)$")
    taken = [int(m.group(1)) for p in parent.glob(f"{task}-*") if (m := pattern.match(p.name))]
    return max(taken, default=0) + 1


def abandon(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
