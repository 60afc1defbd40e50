"""The far side of ``mltool train --on``: a training job on this machine, started in its own
session (so it outlives the SSH session that asked for it), followed and stopped over SSH.

Layout under the remote dir (``--remote-dir``, default ``~/mltool``)::

    train/venv/                  mltool[train] (or [train-gpu]), set up by the first --on
    train/env.json               which mltool source and extra that venv holds
    train/data/<hash>/<name>/    datasets sent from the client, one folder per content hash
    train/jobs/<id>/             one job: job.json, log (JSON lines), pid, rc, run/ (only once complete)

Commands (``python -m mltool.train.remote_job COMMAND JOBDIR``)::

    start    spawn the run in its own session and return at once
    run      the run itself (what start spawns): events as JSON lines on stdout (the log)
    follow   stream the log from --offset until the run ends. With --lease S, stdin is the
             client's heartbeat: end of input (the connection dropped), a "stop" line (Ctrl-C)
             or S seconds of silence stop the run and remove the job
    stop     stop the run (SIGTERM: it removes its .partial folder, as on Ctrl-C) and remove the job

Nothing here imports TensorFlow except ``run``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mltool._io import pid_alive

STOP_GRACE_S = 60.0  # a stopped run has this long to clean up before it is killed


def _pid(jobdir: Path) -> int | None:
    try:
        return int((jobdir / "pid").read_text())
    except (OSError, ValueError):
        return None




def _rc(jobdir: Path) -> int | None:
    try:
        return int((jobdir / "rc").read_text())
    except (OSError, ValueError):
        return None


def start(jobdir: Path) -> dict[str, Any]:
    job = json.loads((jobdir / "job.json").read_text())
    env = {**os.environ, **job.get("env", {}), "PYTHONUNBUFFERED": "1"}
    with open(jobdir / "log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mltool.train.remote_job", "run", str(jobdir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=jobdir, env=env,
                                start_new_session=True)
    (jobdir / "pid").write_text(str(proc.pid))
    return {"pid": proc.pid}


def run(jobdir: Path) -> int:
    """Train as job.json says, writing events to stdout and the exit status to ``rc`` last."""
    import platform
    import traceback

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    from mltool.errors import MltoolError
    from mltool.train.progress import EventWriter, keras_callback

    writer = EventWriter(sys.stdout)
    rc = 0
    try:
        from mltool.train.run import TrainConfig, train

        job = json.loads((jobdir / "job.json").read_text())
        cfg = TrainConfig(**{**job["config"], "out": jobdir / "run", "project": jobdir})
        writer.emit("log", message=f"training on {platform.node()} in {jobdir}")
        result = train(cfg, progress=lambda n, steps: keras_callback(writer, n, steps),
                       log=lambda msg: writer.emit("log", message=msg))
        writer.emit("result", summary=result.summary())
    except MltoolError as exc:
        rc = exc.exit_code
        writer.emit("error", message=exc.one_line(), exit_code=rc)
    except KeyboardInterrupt:
        rc = 130
        writer.emit("error", message="interrupted", exit_code=rc)
    except BaseException as exc:  # noqa: BLE001 - reported to the client, which has no other way to see it
        traceback.print_exc()
        rc = 1
        writer.emit("error", message=f"{type(exc).__name__}: {exc}", exit_code=rc)
    finally:
        tmp = jobdir / "rc.tmp"
        tmp.write_text(str(rc))
        os.replace(tmp, jobdir / "rc")
    return rc


def stop(jobdir: Path, remove: bool = True) -> dict[str, Any]:
    """SIGTERM the run's process group, wait for it to clean up (kill it after a grace period),
    then remove the job folder."""
    pid = _pid(jobdir)
    killed = False
    if pid_alive(pid) and _rc(jobdir) is None:
        try:
            os.killpg(pid, signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        while pid_alive(pid) and _rc(jobdir) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid) and _rc(jobdir) is None:
            killed = True
            try:
                os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass
        while pid_alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.05)
    if remove:
        shutil.rmtree(jobdir, ignore_errors=True)
    return {"stopped": True, "killed": killed}


def follow(jobdir: Path, offset: int = 0, lease: float | None = None) -> int:
    """Copy the log to stdout from ``offset`` until the run ends; with a lease, stop the run when
    the client goes away (see the module docstring)."""
    state = {"stop": None, "beat": time.monotonic()}

    if lease:
        def heartbeat() -> None:
            stdin = sys.stdin.buffer
            while True:
                line = stdin.readline()
                if not line:
                    state["stop"] = state["stop"] or "the client's connection closed"
                    return
                state["beat"] = time.monotonic()
                if line.strip() == b"stop":
                    state["stop"] = "stopped by the client (Ctrl-C)"
                    return

        threading.Thread(target=heartbeat, daemon=True).start()

    out = sys.stdout.buffer
    pos = offset
    pending = b""

    def drain() -> None:
        nonlocal pos, pending
        try:
            with open(jobdir / "log", "rb") as fh:
                fh.seek(pos)
                data = fh.read()
        except OSError:
            return
        pos += len(data)
        pending += data
        if b"\n" in pending:
            complete, _, pending = pending.rpartition(b"\n")
            out.write(complete + b"\n")
            out.flush()

    def say(event: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(event).encode() + b"\n")
            out.flush()
        except OSError:
            pass

    while True:
        try:
            drain()
        except OSError:  # the client is gone (broken pipe)
            state["stop"] = state["stop"] or "the client's connection broke"
        if lease and state["stop"] is None and time.monotonic() - state["beat"] > lease:
            state["stop"] = f"no word from the client for {lease:g}s"
        if state["stop"] is not None and lease:
            result = stop(jobdir)
            say({"event": "stopped", "reason": state["stop"], **result})
            return 130
        rc = _rc(jobdir)
        if rc is None and not pid_alive(_pid(jobdir)):
            time.sleep(0.2)
            rc = _rc(jobdir)
            if rc is None:
                rc = -9  # died without a word: killed, or out of memory
        if rc is not None:
            drain()
            if pending:
                out.write(pending + b"\n")
            say({"event": "done", "rc": rc, "offset": pos})
            return 0
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mltool.train.remote_job")
    p.add_argument("command", choices=["start", "run", "follow", "stop"])
    p.add_argument("jobdir", type=Path)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--lease", type=float, default=None)
    a = p.parse_args(argv)
    jobdir = a.jobdir.expanduser()
    if a.command == "start":
        print(json.dumps(start(jobdir)), flush=True)
        return 0
    if a.command == "run":
        return run(jobdir)
    if a.command == "follow":
        return follow(jobdir, a.offset, a.lease)
    print(json.dumps(stop(jobdir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
