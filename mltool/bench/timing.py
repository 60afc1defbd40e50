"""Timing core. ``measure()`` runs in whatever process calls it; ``run_bench()`` gives every
(model, threads) configuration a fresh worker process so that peak RSS belongs to that model
alone and one model's caches do not flatter the next.

Like benchmark_model: the input is filled once with random data of the right type, and the
steady-state loop times ``invoke()`` alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import ConfigError, ModelError


@dataclass
class BenchConfig:
    models: list[Path]
    threads: list[int | None] = field(default_factory=lambda: [None])
    runs: int | None = None
    seconds: float | None = None
    warmup: int = 10
    pipeline: str | None = None
    pipeline_frames: int = 100
    isolate: bool = True
    delegate: str | None = None
    delegate_options: dict[str, str] | None = None
    input_shape: list[list[int]] | None = None

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("no models given", "pass one or more .tflite files")
        for m in self.models:
            if not Path(m).is_file():
                raise ModelError(f"model file {m} does not exist", "check the path")
        if self.runs is not None and self.seconds is not None:
            raise ConfigError("--runs and --seconds both set the steady-state length", "pass one of them")
        if self.pipeline_frames < 1:
            raise ConfigError(f"--pipeline-frames {self.pipeline_frames} must be at least 1", "use --pipeline-frames 100")
        if self.runs is not None and self.runs < 1:
            raise ConfigError(f"--runs {self.runs} must be at least 1", "use --runs 100, for example")
        if self.seconds is not None and self.seconds <= 0:
            raise ConfigError(f"--seconds {self.seconds} must be positive", "use --seconds 5, for example")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup} cannot be negative", "use --warmup 10")
        for t in self.threads:
            if t is not None and t < 1:
                raise ConfigError(f"thread count {t} must be at least 1", "use --threads 1,2,4")


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _random_input(spec: Any, rng: np.random.Generator) -> np.ndarray:
    shape = [max(1, int(s)) for s in spec.shape]
    if np.issubdtype(spec.dtype, np.integer):
        info = np.iinfo(spec.dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(spec.dtype)
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.standard_normal(shape).astype(spec.dtype)


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s, dtype=np.float64) * 1000
    return {
        "median": round(float(np.median(a)), 4), "mean": round(float(a.mean()), 4),
        "p90": round(float(np.percentile(a, 90)), 4), "p99": round(float(np.percentile(a, 99)), 4),
        "min": round(float(a.min()), 4), "max": round(float(a.max()), 4), "std": round(float(a.std()), 4),
    }


def measure(model_path: str | Path, threads: int | None, runs: int | None, seconds: float | None, warmup: int,
            delegate: str | None = None, delegate_options: dict[str, str] | None = None,
            input_shape: list[list[int]] | None = None) -> dict[str, Any]:
    """Init, first inference, warmup, then steady state (``runs`` invokes, or ``seconds``; default
    at least 50 runs and 2 s). Returns stats in milliseconds and memory in MiB."""
    from mltool.runtime.interpreter import load_model

    rss_before = _rss_mib()
    t0 = time.perf_counter()
    model = load_model(model_path, threads=threads, delegate=delegate, delegate_options=delegate_options,
                       input_shapes=input_shape)
    init_s = time.perf_counter() - t0
    interp = model.interpreter
    rng = np.random.default_rng(0)
    for spec in model.inputs:
        interp.set_tensor(spec.index, _random_input(spec, rng))
    t0 = time.perf_counter()
    _invoke(model)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        interp.invoke()
    times: list[float] = []
    min_runs = runs if runs is not None else (1 if seconds is not None else 50)
    budget = seconds if seconds is not None else (None if runs is not None else 2.0)
    t_end = time.perf_counter() + budget if budget is not None else None
    clock = time.perf_counter
    while True:
        t = clock()
        interp.invoke()
        times.append(clock() - t)
        if runs is not None and len(times) >= runs:
            break
        if t_end is not None and len(times) >= min_runs and clock() >= t_end:
            break
    st = stats_ms(times)
    return {
        "model": str(model_path), "threads": threads, "runtime": f"{model.runtime} {model.runtime_version}",
        "size_bytes": model.info.size, "input": [list(s.shape) for s in model.inputs],
        "input_dtype": str(model.inputs[0].dtype),
        "init_ms": round(init_s * 1000, 3), "first_ms": round(first_s * 1000, 3), "warmup": warmup,
        "runs": len(times), "latency_ms": st,  # the same spelling as infer's summary and convert's modes
        "throughput_per_s": round(1000.0 / st["mean"], 2) if st["mean"] > 0 else None,
        "peak_rss_mib": round(_peak_rss_mib(), 1), "model_rss_mib": round(_rss_mib() - rss_before, 1),
    }


def _invoke(model: Any) -> None:
    """The first invoke, where a model that loads but cannot run fails: one line, not a traceback."""
    try:
        model.interpreter.invoke()
    except (ValueError, RuntimeError) as exc:
        raise model._fail("run", exc) from None


def _worker_cmd(model: Path, threads: int | None, cfg: BenchConfig) -> list[str]:
    args = {"model": str(model), "threads": threads, "runs": cfg.runs, "seconds": cfg.seconds, "warmup": cfg.warmup,
            "delegate": cfg.delegate, "delegate_options": cfg.delegate_options, "input_shape": cfg.input_shape}
    return [sys.executable, "-m", "mltool.bench.worker", json.dumps(args)]


def run_bench(cfg: BenchConfig, log: Any = lambda _m: None) -> dict[str, Any]:
    cfg.validate()
    rows: list[dict[str, Any]] = []
    for threads in cfg.threads:
        for model in cfg.models:
            log(f"benchmarking {model} with {threads or 'default'} thread(s)")
            if cfg.isolate:
                proc = subprocess.run(_worker_cmd(Path(model), threads, cfg), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise _worker_error(model, proc)
                row = json.loads(proc.stdout)
            else:
                row = measure(model, threads, cfg.runs, cfg.seconds, cfg.warmup, cfg.delegate, cfg.delegate_options,
                              cfg.input_shape)
            rows.append(row)
    for row in rows:  # ratio against the first model at the same thread count
        base = next(r for r in rows if r["threads"] == row["threads"])
        row["vs_first"] = round(row["latency_ms"]["median"] / base["latency_ms"]["median"], 4) if base["latency_ms"]["median"] else None
    result: dict[str, Any] = {"rows": rows}
    if cfg.pipeline is not None:
        result["pipeline"] = [measure_pipeline(m, cfg.pipeline, cfg.threads[0], cfg.pipeline_frames, delegate=cfg.delegate,
                                               delegate_options=cfg.delegate_options, input_shape=cfg.input_shape)
                              for m in cfg.models]
    return result


def _worker_error(model: Path, proc: subprocess.CompletedProcess) -> ModelError:
    """One line for a worker that failed: its own error line, or how it died."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    mine = [ln for ln in lines if ln.startswith("Error: ")]
    if mine:
        return ModelError(f"benchmark of {model} failed: {mine[-1].removeprefix('Error: ')}", "")
    if proc.returncode < 0:
        import signal as _signal

        name = _signal.Signals(-proc.returncode).name
        return ModelError(f"benchmark of {model} crashed the runtime ({name})",
                          "the runtime cannot run this model here; `mltool doctor` smoke-tests the runtime")
    return ModelError(f"benchmark of {model} failed: {lines[-1] if lines else f'exit {proc.returncode}'}", "")


def measure_pipeline(model: str | Path, source: str, threads: int | None, frames: int, **predictor_options: Any) -> dict[str, Any]:
    """Time the whole path per frame (read+decode, preprocess, invoke, postprocess) with the
    Predictor, exactly as `infer` runs it."""
    from mltool.runtime.predictor import Predictor

    stages: dict[str, list[float]] = {"read": [], "preprocess": [], "invoke": [], "postprocess": []}
    predictor = Predictor(model, threads=threads, **predictor_options)
    t0 = time.perf_counter()
    with predictor.stream(source) as stream:
        for result in stream:
            for k, v in result.timings.as_dict().items():
                stages[k].append(v)
            if len(stages["invoke"]) >= frames:
                break
    elapsed = time.perf_counter() - t0
    if not stages["invoke"]:
        raise ConfigError(f"the pipeline source {source} gave no frames", "pass a video, image folder or signal file")
    per_frame = np.asarray(stages["read"]) + np.asarray(stages["preprocess"]) + np.asarray(stages["invoke"]) + np.asarray(stages["postprocess"])
    med = {k: round(float(np.median(v)), 4) for k, v in stages.items()}
    total = float(np.median(per_frame))
    return {
        "model": str(model), "source": source, "frames": len(per_frame), "threads": threads,
        "stages_median_ms": med, "total_median_ms": round(total, 4),
        "overhead_beyond_invoke_ms": round(float(np.median(per_frame - np.asarray(stages["invoke"]))), 4),
        "share": {k: round(v / total, 4) if total else None for k, v in med.items()},
        "fps": round(len(per_frame) / elapsed, 3) if elapsed > 0 else 0.0,
    }
