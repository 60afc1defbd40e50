"""The one inference path every protocol shares: releases, worker slots, a bounded queue.

A *slot* is one interpreter (a :class:`~mltool.runtime.predictor.Predictor`) and the lock its
thread holds while it runs: one per HTTP worker, plus one for the live loop. A *release* is a
model file loaded into every slot. Hot reload loads the new release beside the old one,
probes it, then takes every slot's lock and swaps: a request that is running finishes on the
old model, every later one runs on the new, and each answer names the release that produced it.

Requests become :class:`Job` objects in a bounded queue in front of the workers; a full queue
is refused at once (the HTTP layer answers 503 with Retry-After) instead of piling up. Jobs
that carry encoded images are first decoded by a decoder thread (its own bounded queue): a
request with large images keeps a decoder busy, never a worker, so requests without images
are not held up behind it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltool.errors import MltoolError, ModelError
from mltool.layout import release_id
from mltool.runtime.predictor import Predictor
from mltool.runtime.sources import Frame


@dataclass
class Release:
    id: str
    path: Path  # the real file (the `current` link resolved)
    predictors: list[Predictor]
    loaded_at: float = field(default_factory=time.time)
    batchable: bool = False  # the input's batch dimension may grow (micro-batching, OIP batches)

    @property
    def first(self) -> Predictor:
        return self.predictors[0]


class QueueFull(Exception):
    pass


class Job:
    """One request's work, run on a worker thread with that worker's predictor.

    ``frames`` jobs (decoded images or signal windows) can be micro-batched with others;
    anything else runs ``fn(predictor)`` alone."""

    __slots__ = ("fn", "frames", "decode", "future", "loop", "queued_at", "cancelled")

    def __init__(self, *, fn: Callable[[Predictor, Release], Any] | None = None,
                 decode: Callable[[Predictor], list[Frame]] | None = None) -> None:
        self.fn = fn
        self.decode = decode  # runs on the worker (decoding releases the GIL): predictor -> frames
        self.frames: list[Frame] | None = None
        self.future: asyncio.Future[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queued_at = 0.0
        self.cancelled = False


class Engine:
    """Loads releases into ``slots`` predictors and runs jobs on ``workers`` threads."""

    def __init__(self, make_predictor: Callable[[Path], Predictor], *, workers: int = 1, queue_size: int = 32,
                 batch: int = 1, batch_wait_ms: float = 2.0, live_slot: bool = False,
                 check: Callable[[Predictor], None] | None = None) -> None:
        self.make_predictor = make_predictor
        self.workers = workers
        self.slots = workers + (1 if live_slot else 0)
        self.locks = [threading.Lock() for _ in range(self.slots)]
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.decode_queue: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.decoders = 1
        self.batch = max(1, batch)
        self.batch_wait = batch_wait_ms / 1000
        self.check = check
        self.release: Release | None = None
        self.inferences = 0  # samples
        self.invokes = 0  # interpreter runs (fewer than samples when micro-batching)
        self.running = 0
        self._threads: list[threading.Thread] = []
        self._decoder_threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------------ releases
    def load(self, path: Path) -> Release:
        """Load ``path`` into a predictor per slot and probe it; raises MltoolError if it fails."""
        real = Path(os.path.realpath(path))
        rid = release_id(real)
        predictors = [self.make_predictor(real) for _ in range(self.slots)]
        try:
            batchable = probe(predictors[0])
            if self.check is not None:
                self.check(predictors[0])
        except MltoolError:
            for p in predictors:
                p.close()
            raise
        return Release(rid, real, predictors, batchable=batchable)

    def swap(self, new: Release) -> Release | None:
        """Make ``new`` current under every slot's lock (running jobs finish first)."""
        for lock in self.locks:
            lock.acquire()
        try:
            old, self.release = self.release, new
        finally:
            for lock in reversed(self.locks):
                lock.release()
        if old is not None:
            for p in old.predictors:
                p.close()
        return old

    def run_on_slot(self, slot: int, fn: Callable[[Predictor, Release], Any]) -> Any:
        """Run ``fn`` with slot ``slot``'s predictor of the current release (the live loop)."""
        with self.locks[slot]:
            rel = self.release
            assert rel is not None
            return fn(rel.predictors[slot], rel)

    # ------------------------------------------------------------------ workers
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, args=(i,), name=f"serve-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        for i in range(self.decoders):
            t = threading.Thread(target=self._decode_work, name=f"serve-decoder-{i}", daemon=True)
            t.start()
            self._decoder_threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._decoder_threads:
            self.decode_queue.put(None)
        for _ in self._threads:
            self.queue.put(None)
        for t in self._decoder_threads + self._threads:
            t.join(timeout)

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue ``job`` and return a future for its value; raises QueueFull at once when full."""
        loop = asyncio.get_running_loop()
        job.loop = loop
        job.future = loop.create_future()
        job.queued_at = time.perf_counter()
        try:
            (self.decode_queue if job.decode is not None and self._decoder_threads else self.queue).put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    @property
    def depth(self) -> int:
        return self.queue.qsize() + self.decode_queue.qsize()

    def _decode_work(self) -> None:
        """Decode image jobs (with the current release's input size), then queue them for a worker.
        The thread runs at a lower priority (nice +10): decoding is the work a client can make
        expensive, and must not take the CPU from the event loop and the workers."""
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 10)
        except (AttributeError, OSError):  # not Linux
            pass
        while True:
            job = self.decode_queue.get()
            if job is None:
                return
            if job.cancelled:
                continue
            rel = self.release
            try:
                job.frames = job.decode(rel.predictors[0]) if rel is not None else None  # type: ignore[misc]
            except Exception as exc:
                _settle(job, exc, None)
                continue
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                _settle(job, QueueFull(), None)

    def _work(self, slot: int) -> None:
        carry: Job | None = None  # a job taken while gathering a batch that could not join it
        while True:
            job, carry = (carry, None) if carry is not None else (self.queue.get(), None)
            if job is None:
                return
            jobs = [job]
            stop = False
            if self.batch > 1 and job.decode is not None:
                more, carry, stop = self._more(self.batch - 1)
                jobs += more
            with self._count_lock:
                self.running += len(jobs)
            try:
                self._run(slot, jobs)
            finally:
                with self._count_lock:
                    self.running -= len(jobs)
            if stop:
                return

    def _more(self, n: int) -> tuple[list[Job], Job | None, bool]:
        """Frame jobs already waiting (or arriving within the batch window), up to ``n``; the
        first other job met on the way, to run next; and whether the stop signal came."""
        out: list[Job] = []
        deadline = time.perf_counter() + self.batch_wait
        while len(out) < n:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return out, None, True
            if job.decode is None:
                return out, job, False
            out.append(job)
        return out, None, False

    def _run(self, slot: int, jobs: list[Job]) -> None:
        live = [j for j in jobs if not j.cancelled]
        current = self.release
        assert current is not None
        for j in live:  # decode outside the lock: only the input size is needed for it
            if j.decode is not None and j.frames is None:
                try:
                    j.frames = j.decode(current.predictors[slot])
                except Exception as exc:
                    _settle(j, exc, None)
        live = [j for j in live if j.decode is None or j.frames is not None]
        if not live:
            return
        with self.locks[slot]:
            rel = self.release
            assert rel is not None
            p = rel.predictors[slot]
            frame_jobs = [j for j in live if j.frames is not None]
            if frame_jobs:
                self._run_frames(p, rel, frame_jobs)
            for j in live:
                if j.fn is not None and j.frames is None:
                    try:
                        value = j.fn(p, rel)
                    except Exception as exc:
                        _settle(j, exc, rel)
                    else:
                        self._count(1, 1)
                        _settle(j, value, rel)

    def _run_frames(self, p: Predictor, rel: Release, jobs: list[Job]) -> None:
        frames = [f for j in jobs for f in j.frames]  # type: ignore[union-attr]
        try:
            if len(frames) > 1 and rel.batchable:
                results = p.predict_batch(frames, source="http")
            else:
                results = [p.predict_frame(f, source="http") for f in frames]
        except Exception as exc:
            # one bad job must not fail the others: run them alone to tell which one it was
            if len(jobs) == 1:
                _settle(jobs[0], ModelError(f"inference failed ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})",
                                            "check the input"), rel)
                return
            for j in jobs:
                self._run_frames(p, rel, [j])
            return
        self._count(len(frames), 1 if len(frames) > 1 and rel.batchable else len(frames))
        i = 0
        for j in jobs:
            n = len(j.frames)  # type: ignore[arg-type]
            _settle(j, results[i : i + n], rel)
            i += n

    def _count(self, samples: int, invokes: int) -> None:
        with self._count_lock:
            self.inferences += samples
            self.invokes += invokes


def _settle(job: Job, value: Any, rel: Release | None) -> None:
    loop, fut = job.loop, job.future
    if loop is None or fut is None:
        return

    def done() -> None:
        if fut.done():
            return
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result((value, rel.id if rel else None))

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:
        pass  # the loop is closed: the server is gone


def probe(p: Predictor) -> bool:
    """Run one inference on a blank input (the reload check); True if the batch dimension can
    grow. Raises ModelError when the model cannot run or answers NaN."""
    if p.kind == "image":
        h, w, _c = p.input.shape
        frame = Frame(0, "probe", time.time(), image=np.zeros((h, w, 3), np.uint8))
    else:
        frame = Frame(0, "probe", time.time(), signal=np.zeros((p.input.window or 1) * p.input.channels, np.float32))
    try:
        outputs = p.model.run_prepared(p.prepare(frame))
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{p.path} failed its probe inference ({str(exc).splitlines()[0][:160]})",
                         "the release stays unused; deploy a model that runs") from None
    if any(not np.all(np.isfinite(o)) for o in outputs):
        raise ModelError(f"{p.path} answered NaN/inf on a blank input", "the release stays unused; check the conversion")
    p.decode(outputs)
    details = p.model.interpreter.get_input_details()[0]
    sig = details.get("shape_signature")
    return sig is not None and len(sig) > 0 and int(sig[0]) == -1
