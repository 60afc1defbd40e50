"""What `convert` found: per-mode results, the report it writes (convert.json), and the check
that turns an unrunnable mode or a too-large accuracy drop into an error."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mltool._io import atomic_write_text
from mltool.errors import MltoolError


@dataclass
class ModeResult:
    mode: str
    path: str
    size_bytes: int
    size_vs_float32: float
    input_dtype: str
    output_dtype: str
    accuracy: float | None
    drop_points: float | None
    agreement: float | None
    latency_ms: dict[str, float] | None  # {"median": ...}: the spelling infer and bench use
    convert_seconds: float
    error: str | None = None  # converted, but the runtime cannot run it


@dataclass
class ConvertResult:
    source: str
    source_kind: str
    source_sha256: str
    out_dir: str
    eval_samples: int
    eval_data: str
    calibration: str | None
    threads: int | None
    runtime: str
    reference: dict[str, Any]
    modes: list[ModeResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    def failed(self) -> list[ModeResult]:
        return [m for m in self.modes if m.error]

    def worst_drop(self) -> tuple[str, float] | None:
        drops = [(m.mode, m.drop_points) for m in self.modes if m.drop_points is not None]
        return max(drops, key=lambda t: t[1]) if drops else None


# --------------------------------------------------------------------------- data



def write_report(path: Path, result: ConvertResult, log: Callable[[str], None]) -> None:
    """convert.json: a second convert into the same folder adds its modes to the report and
    keeps the earlier ones it did not redo (and says so), instead of silently replacing it."""
    report = result.as_dict()
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError):
        earlier = None
    if isinstance(earlier, dict) and earlier.get("source_sha256") == result.source_sha256:
        redone = {m.mode for m in result.modes}
        kept = [m for m in earlier.get("modes", []) if isinstance(m, dict) and m.get("mode") not in redone]
        if kept:
            log(f"{path.name}: keeping the earlier results for {', '.join(m['mode'] for m in kept)}")
            report["modes"] = kept + report["modes"]
    elif isinstance(earlier, dict):
        log(f"{path.name}: replacing the report of a different source model ({earlier.get('source', '?')})")
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


class ConvertCheckError(MltoolError):
    """The files were written, but a mode cannot run or loses more accuracy than allowed.
    ``result`` holds the whole comparison."""

    def __init__(self, message: str, hint: str, result: ConvertResult) -> None:
        super().__init__(message, hint)
        self.result = result


def check_result(result: ConvertResult, max_drop: float | None) -> None:
    """Raise :class:`ConvertCheckError` if a mode cannot run, or loses more than ``max_drop`` points."""
    failed = result.failed()
    if failed:
        first = failed[0]
        raise ConvertCheckError(
            f"{', '.join(m.mode for m in failed)} converted but {result.runtime or 'the runtime'} cannot run it: {first.error}"
            f" (other modes were written to {result.out_dir})",
            "use another mode for this model; int16x8 support in LiteRT is incomplete for some layers", result,
        )
    if max_drop is not None:
        worst = result.worst_drop()
        if worst is not None and worst[1] > max_drop:
            raise ConvertCheckError(
                f"{worst[0]} loses {worst[1]:.2f} accuracy points, more than --max-drop {max_drop:g} (files were written to {result.out_dir})",
                "use a milder mode (dynamic, float16, int16x8), more --calib-samples, or a better calibration set", result,
            )


