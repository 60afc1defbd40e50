"""Run directories and what they hold.

A run directory is built under a hidden temporary name and renamed into place only when
complete: a run that fails or is interrupted never leaves ``runs/train/<task>-N`` behind; a
process killed outright leaves only a hidden ``.partial-*`` folder, removed by the next run.
Its ``mltool.json`` is a :class:`RunInfo`, read and written only here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mltool._io import pid_alive
from mltool.errors import ConfigError
from mltool.runtime.metadata import InputSpec, Normalization


def clean_stale_partials(parent: Path) -> None:
    if not parent.is_dir():
        return
    for p in parent.glob(".partial-*"):
        m = re.match(r"\.partial-.*-(\d+)-[^-]+$", p.name)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def start(parent: Path, task: str) -> Path:
    from mltool._io import ensure_writable_dir, umask_mode

    ensure_writable_dir(parent, "--project")
    clean_stale_partials(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{task}-{os.getpid()}-", dir=parent))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


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


# --------------------------------------------------------------------------- mltool.json

RUN_FILE = "mltool.json"
FORMAT = "mltool.model/1"


@dataclass
class DatasetRecord:
    """Which data a run was trained on, and how it was split: enough to rebuild the exact split."""

    name: str
    source: str
    fingerprint: str
    synthetic: bool = False
    official_test_split: bool = False
    samples: dict[str, int] = field(default_factory=dict)
    limit: int | None = None
    val_split: float = 0.1
    test_split: float = 0.2
    image_size: int | None = None
    window: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RunInfo:
    """What ``mltool.json`` holds: the one description of a trained run, read by evaluate,
    convert (labels, normalisation, calibration data) and written into every converted model."""

    task: str
    kind: str
    arch: str
    params: int
    input: InputSpec
    normalization: Normalization
    output: dict[str, Any]
    classes: list[str]
    dataset: DatasetRecord
    seed: int
    training: dict[str, Any]
    metrics: dict[str, Any]
    files: dict[str, str]
    versions: dict[str, str]
    created: str
    ran_on: dict[str, Any] = field(default_factory=dict)  # host; for `train --on`: target, job, data sent

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "task": self.task, "kind": self.kind, "arch": self.arch, "params": self.params,
            "input": self.input.to_dict(), "normalization": self.normalization.to_dict(), "output": self.output,
            "classes": self.classes, "dataset": asdict(self.dataset), "seed": self.seed, "training": self.training,
            "metrics": self.metrics, "files": self.files, "versions": self.versions, "created": self.created,
            **({"ran_on": self.ran_on} if self.ran_on else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunInfo:
        return cls(
            task=d["task"], kind=d["kind"], arch=d["arch"], params=int(d.get("params") or 0),
            input=InputSpec.from_dict(d["input"]), normalization=Normalization.from_dict(d["normalization"]),
            output=d.get("output") or {}, classes=list(d["classes"]), dataset=DatasetRecord.from_dict(d["dataset"]),
            seed=int(d["seed"]), training=d.get("training") or {}, metrics=d.get("metrics") or {},
            files=d.get("files") or {"model": "model.keras"}, versions=d.get("versions") or {}, created=d.get("created") or "",
            ran_on=d.get("ran_on") or {},
        )

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / RUN_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def splits(self, data: str | Path | None = None) -> tuple[Any, Any]:
        """(Dataset, Splits): the exact train/val/test split this run used (same data, seed and
        options); a dataset whose content changed since is refused."""
        from mltool.data.tasks import load_task, prepare_splits
        from mltool.errors import DataError

        d = self.dataset
        source = data
        if source is None and d.source and Path(d.source).exists():
            source = d.source if self.task != "digits" else None
        ds = load_task(self.task, source, image_size=d.image_size, window=d.window or 3600)
        if ds.fingerprint != d.fingerprint:
            raise DataError(
                f"the {self.task} data at {ds.source} differs from the data the model was trained on",
                "pass --data with the original dataset (fingerprints differ)",
            )
        return ds, prepare_splits(ds, val_split=d.val_split, test_split=d.test_split, seed=self.seed, limit=d.limit)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run(path: str | Path) -> tuple[Path, RunInfo]:
    """(run directory, its RunInfo) for a run directory or a model file inside one."""
    from mltool.errors import ModelError

    p = Path(path).expanduser()
    run_dir = p if p.is_dir() else p.parent
    meta = run_dir / RUN_FILE
    if not p.exists():
        raise ModelError(f"{p} does not exist", "pass a run directory from `mltool train` (e.g. runs/train/digits-1)")
    if not meta.is_file():
        raise ModelError(f"{run_dir} has no {RUN_FILE}", "pass a complete run directory written by `mltool train`")
    try:
        d = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta} is not valid JSON ({exc})", "re-run `mltool train`; the file was edited or damaged") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelError(f"{meta} is not an mltool model description", f"expected format {FORMAT}")
    try:
        return run_dir, RunInfo.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{meta} is missing or has a malformed field ({exc})",
                         "re-run `mltool train`; the file was edited or damaged") from None
