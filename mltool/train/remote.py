"""``mltool train ... --on USER@HOST``: the same run on another machine, over deploy's SSH layer
(verified host keys, ~/.ssh/config, ProxyJump, timeouts).

1. **Environment**: ``REMOTE_DIR/train/venv`` with mltool from a wheel built here, installed with
   the ``train`` extra (``train-gpu``, i.e. ``tensorflow[and-cuda]``, where ``nvidia-smi`` finds a
   GPU). ``train/env.json`` records the hash of the mltool source it holds: the next run reuses
   it, a changed mltool is reinstalled (code only, seconds).
2. **Data**: the dataset folder is sent as one tar, by content hash, to ``train/data/<hash>/``; an
   unchanged dataset sends 0 bytes. ``--data host:PATH`` uses a folder already there.
3. **Run**: a job (``train/jobs/<id>``, see :mod:`mltool.train.remote_job`) in its own session;
   its progress events are streamed here over SSH and drawn as a local run draws them. While
   attached, a heartbeat keeps it alive: Ctrl-C or a dropped connection stops it, and its
   ``.partial`` folder and job are removed. ``--detach`` leaves it running; ``--attach`` resumes.
4. **Result**: the complete run folder comes back as a tar into a local ``.partial-*`` folder,
   renamed into place as a local run is; ``mltool.json`` adds ``ran_on`` (host, target, job).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shlex
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.errors import ConfigError, MltoolError

HEARTBEAT_S = 5.0
LEASE_S = 45.0  # the remote run stops after this long without a heartbeat (a silently dead link)
FORWARD_ENV_PREFIX = "MLTOOL_TEST_"  # test hooks (MLTOOL_TEST_PAUSE_AT) travel with the job


class RemoteRunError(MltoolError):
    """The remote run failed; its own one-line error is the message."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


@dataclass(frozen=True)
class TrainLayout:
    """Paths under the remote dir (already expanded: no ``~``)."""

    root: str

    @property
    def base(self) -> str:
        return f"{self.root}/train"

    @property
    def venv(self) -> str:
        return f"{self.base}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def env_file(self) -> str:
        return f"{self.base}/env.json"

    @property
    def data(self) -> str:
        return f"{self.base}/data"

    @property
    def jobs(self) -> str:
        return f"{self.base}/jobs"

    def job(self, job_id: str) -> str:
        return f"{self.jobs}/{job_id}"


def q(path: str) -> str:
    return shlex.quote(path)


# --------------------------------------------------------------------------- environment


def source_hash() -> str:
    """Hash of the mltool package this process runs (what a wheel built now would hold)."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",):
            h.update(str(p.relative_to(pkg)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


ENV_CHECK = r"""
import json, sys
try:
    import mltool, tensorflow
    print(json.dumps({"mltool": mltool.__version__, "tensorflow": tensorflow.__version__}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def mark_ready(session: Any, layout: TrainLayout, extra: str = "train", **info: Any) -> None:
    """Record that ``layout.venv`` holds this mltool source (with ``extra``)."""
    record = {"source": source_hash(), "extra": extra, "set_up": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
    session.run(f"mkdir -p {q(layout.base)} && printf '%s\\n' {q(json.dumps(record))} > {q(layout.env_file)}",
                what="record the training environment")


PROBE = ('printf "%s\\n" "$HOME"; hostname; uname -m; '
         '{{ nvidia-smi -L 2>/dev/null || true; }} | grep -c "^GPU"; '
         'test -x {python} && echo venv || echo no-venv; cat {env} 2>/dev/null')


def probe(session: Any, root: str) -> dict[str, Any]:
    """One round trip: the host's home (to expand ``~``), name, machine, GPUs (``nvidia-smi -L``),
    and whether the training venv exists and what it holds."""
    from mltool.deploy.ssh import qpath

    layout = TrainLayout(root)  # qpath keeps a leading ~/ for the host's shell to expand
    cmd = PROBE.format(python=qpath(layout.python), env=qpath(layout.env_file))
    lines = session.run(cmd, check=False, what="probe the training host").out.splitlines()
    home, hostname, machine, gpus, venv = (lines + [""] * 5)[:5]
    try:
        env = json.loads("\n".join(lines[5:]) or "{}")
    except ValueError:
        env = {}
    return {"home": home, "hostname": hostname, "machine": machine, "gpus": int(gpus) if gpus.isdigit() else 0,
            "venv": venv == "venv", "env": env if isinstance(env, dict) else {}}


def ensure_env(session: Any, layout: TrainLayout, log: Callable[[str], None], host: dict[str, Any]) -> dict[str, Any]:
    """Make ``layout.venv`` hold this mltool with TensorFlow; returns what was done."""
    from mltool.deploy.setup import build_wheel

    t0 = time.monotonic()
    label = session.target.label
    env, venv_ok = host["env"], host["venv"]
    has_gpu = host["gpus"] > 0
    extra = "train-gpu" if has_gpu and host["machine"] == "x86_64" else "train"
    if venv_ok and env.get("source") == source_hash() and env.get("extra") == extra:
        return {"state": "ready", "extra": extra, "gpu": has_gpu, "seconds": round(time.monotonic() - t0, 2)}
    code_only = venv_ok and env.get("extra") == extra and bool(env.get("source"))
    if not venv_ok:
        py = session.run("python3 -c 'import sys; print(sys.version_info >= (3, 10), sys.version.split()[0])'", check=False)
        if py.rc != 0 or not py.out.startswith("True"):
            raise DeployError(f"{label} has no Python 3.10+ ({(py.out.split() or ['no python3'])[-1]})",
                              "install python3 (3.10 or newer) and python3-venv there")
        log(f"setting up {layout.venv} on {label} (first use: installs TensorFlow, minutes)")
        session.run(f"mkdir -p {q(layout.base)} && python3 -m venv {q(layout.venv)}", what="create the training venv",
                    timeout=300)
    elif code_only:
        log(f"updating mltool in {layout.venv} on {label}")
    else:
        log(f"installing mltool[{extra}] in {layout.venv} on {label} (minutes)")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        remote_wheel = f"{layout.base}/{wheel.name}"
        session.put(wheel, remote_wheel)
    pip = f"{q(layout.python)} -m pip install -q --disable-pip-version-check"
    if code_only:
        session.run(f"{pip} --no-deps --force-reinstall {q(remote_wheel)}", what="pip install mltool", timeout=600)
    else:
        session.run(f"{pip} {q(remote_wheel + '[' + extra + ']')}", what=f"pip install mltool[{extra}]", timeout=3600)
    session.run(f"rm -f {q(remote_wheel)}", check=False)
    check = session.python(ENV_CHECK, interpreter=layout.python, what="check the training venv", timeout=300)
    versions = json.loads(check.out.strip().splitlines()[-1])
    if "error" in versions:
        raise DeployError(f"the training venv on {label} does not work: {versions['error']}",
                          f"remove {layout.venv} there and run again")
    mark_ready(session, layout, extra, **versions)
    return {"state": "updated" if code_only else "installed", "extra": extra, "gpu": has_gpu, **versions,
            "seconds": round(time.monotonic() - t0, 2)}


# --------------------------------------------------------------------------- data


def local_data_dir(task: str, data: str | None) -> Path | None:
    """The local dataset folder a run would read (sent with --on), or None (digits, a Keras download)."""
    from mltool.data.tasks import get_task, locate

    if task == "digits" and data is None:
        return None
    if data is not None:
        p = Path(data).expanduser()
        if not p.exists():
            raise ConfigError(f"--data {data} does not exist here",
                              "pass a local folder, or host:PATH for a folder already on the training host")
        return p.resolve()
    get_task(task)
    found = locate(task)
    return found.resolve() if found is not None else None


def manifest(path: Path) -> dict[str, str]:
    """SHA-256 of every file of a dataset file or folder, by its path from the folder's parent
    (so the paths start with the dataset's own name)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[str(f.relative_to(path.parent))] = h.hexdigest()
    return out


def tree_hash(files: dict[str, str]) -> str:
    """Content hash of a dataset (names and bytes), independent of where it lives."""
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()[:16]


# On the host (any Python 3): is this version there, and else the newest version of the same
# dataset (by name) to start from.
FIND_DATA = r"""
import json, os, sys
data, digest, name = sys.argv[1:4]
out = {"complete": os.path.exists(os.path.join(data, digest, ".complete")), "prev": None, "files": {}}
if not out["complete"] and os.path.isdir(data):
    best = None
    for d in os.listdir(data):
        m = os.path.join(data, d, "manifest.json")
        if d.startswith(".") or not os.path.exists(os.path.join(data, d, ".complete")) or not os.path.isfile(m):
            continue
        try:
            with open(m) as fh:
                man = json.load(fh)
        except ValueError:
            continue
        if man.get("name") == name and (best is None or os.path.getmtime(m) > best[0]):
            best = (os.path.getmtime(m), os.path.join(data, d), man.get("files") or {})
    if best is not None:
        out["prev"], out["files"] = best[1], best[2]
print(json.dumps(out))
"""

# On the host: the new version = the previous one hard-linked (no copy, no space), less the files
# that changed or went, plus the tar of those that changed or are new; renamed into place whole.
APPLY_DATA = r"""
import json, os, shutil, sys, tarfile
part, dest, prev, tar_path = sys.argv[1:5]
with tarfile.open(tar_path) as tar:
    meta = json.load(tar.extractfile(".mltool-sync.json"))
    name = meta["name"]
    if prev:
        src = os.path.join(prev, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(part, name), copy_function=os.link)
        elif os.path.exists(src):
            os.link(src, os.path.join(part, name))
    for rel in meta["delete"] + meta["send"]:
        p = os.path.join(part, rel)
        if os.path.lexists(p):
            os.unlink(p)
    members = [m for m in tar.getmembers() if m.name != ".mltool-sync.json"]
    try:
        tar.extractall(part, members=members, filter="data")
    except TypeError:  # Python without tar filters (< 3.10.12 / 3.11.4): the names were made here
        tar.extractall(part, members=members)
with open(os.path.join(part, "manifest.json"), "w") as fh:
    json.dump({"name": name, "files": meta["files"]}, fh)
open(os.path.join(part, ".complete"), "w").close()
os.unlink(tar_path)
try:
    os.rename(part, dest)
except OSError:  # another run put the same version there meanwhile
    if not os.path.exists(os.path.join(dest, ".complete")):
        raise
    shutil.rmtree(part)
"""


def sync_data(session: Any, layout: TrainLayout, local: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Make the host hold ``local``'s content; returns its path there. Unchanged: nothing is sent.
    Changed since a version the host has: only the files that changed or are new are sent."""
    t0 = time.monotonic()
    files = manifest(local)
    digest = tree_hash(files)
    dest = f"{layout.data}/{digest}"
    remote_path = f"{dest}/{local.name}"
    there = json.loads(session.python(FIND_DATA, layout.data, digest, local.name, interpreter=layout.python,
                                      what="look for the dataset").out.strip().splitlines()[-1])
    if there["complete"]:
        return {"status": "unchanged", "hash": digest, "remote_path": remote_path, "bytes_sent": 0, "files_sent": 0,
                "seconds": round(time.monotonic() - t0, 2)}
    prev: dict[str, str] = there["files"] if there["prev"] else {}
    send = [rel for rel, h in files.items() if prev.get(rel) != h]
    delete = [rel for rel in prev if rel not in files]
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / f"{digest}.tar"
        meta = json.dumps({"name": local.name, "files": files, "send": send, "delete": delete}).encode()
        with tarfile.open(tar_path, "w") as tar:
            info = tarfile.TarInfo(".mltool-sync.json")
            info.size = len(meta)
            tar.addfile(info, io.BytesIO(meta))
            for rel in send:
                tar.add(local.parent / rel, arcname=rel, recursive=False)
        size = tar_path.stat().st_size
        what = f"{len(send)} of {len(files)} files changed" if prev else f"{len(files)} files"
        log(f"sending {local} ({what}, {size / 1e6:.1f} MB) to {session.target.label}")
        part = f"{layout.data}/.tmp-{digest}-{secrets.token_hex(3)}"
        session.run(f"mkdir -p {q(part)}", what="prepare the data folder")
        try:
            session.put(tar_path, f"{part}.tar")
            session.python(APPLY_DATA, part, dest, there["prev"] or "", f"{part}.tar", interpreter=layout.python,
                           what="unpack the dataset", timeout=1800)
        finally:
            session.run(f"rm -rf {q(part)} {q(part + '.tar')}", check=False)
    return {"status": "updated" if prev else "sent", "hash": digest, "remote_path": remote_path, "bytes_sent": size,
            "files_sent": len(send), "seconds": round(time.monotonic() - t0, 2)}


# --------------------------------------------------------------------------- local job records


def jobs_dir() -> Path:
    return Path(os.environ.get("MLTOOL_HOME", Path.home() / ".mltool")) / "train-jobs"


@dataclass
class JobRecord:
    """What ``--attach`` needs to pick a run up again (kept here until its folder comes back)."""

    job: str
    on: str
    remote_dir: str
    jobdir: str
    task: str
    project: str
    out: str | None
    data_local: str | None
    ssh: dict[str, Any]
    ran_on: dict[str, Any]
    started: str

    def save(self) -> Path:
        d = jobs_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{self.job}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    def remove(self) -> None:
        (jobs_dir() / f"{self.job}.json").unlink(missing_ok=True)

    @classmethod
    def load(cls, job: str | None) -> JobRecord:
        d = jobs_dir()
        records = sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []
        if job is not None:
            records = [p for p in records if p.stem == job or p.stem.startswith(job)]
        if not records:
            which = f"run {job}" if job else "detached run"
            raise ConfigError(f"no {which} to attach to (records in {d})",
                              "start one with `mltool train TASK --on USER@HOST --detach`")
        return cls(**json.loads(records[-1].read_text()))


# --------------------------------------------------------------------------- the run


def _ssh_record(ssh: Any) -> dict[str, Any]:
    return {"identity": str(ssh.identity) if ssh.identity else None, "port": ssh.port,
            "known_hosts": str(ssh.known_hosts) if ssh.known_hosts else None, "timeout": ssh.timeout}


def _ssh_from(record: dict[str, Any], ssh: Any | None) -> Any:
    from mltool.deploy.ssh import SshOptions

    base = SshOptions(identity=Path(record["identity"]) if record.get("identity") else None, port=record.get("port"),
                      known_hosts=Path(record["known_hosts"]) if record.get("known_hosts") else None,
                      timeout=record.get("timeout") or 10.0)
    if ssh is None:
        return base
    return SshOptions(identity=ssh.identity or base.identity, port=ssh.port or base.port,
                      known_hosts=ssh.known_hosts or base.known_hosts, trust_new_host=ssh.trust_new_host, timeout=ssh.timeout)


@dataclass
class Detached:
    job: str
    on: str

    def summary(self) -> dict[str, Any]:
        return {"job": self.job, "on": self.on, "status": "running", "attach": f"mltool train --attach --job {self.job}"}


def train_remote(config: Any, on: str, ssh: Any, remote_dir: str, *, listener: Any,
                 log: Callable[[str], None], detach: bool = False) -> Any:
    """Run ``config`` on ``on``; returns a :class:`~mltool.train.run.TrainResult` like a local run
    (or :class:`Detached` with ``detach``)."""
    cfg = config.resolved()
    data_local: Path | None = None
    data_remote: str | None = None
    if cfg.data is not None and str(cfg.data).startswith("host:"):
        data_remote = str(cfg.data)[5:]
        if not data_remote:
            raise ConfigError("--data host: needs a path", "e.g. --data host:/srv/datasets/fashion-mnist")
    else:
        data_local = local_data_dir(cfg.task, cfg.data)
    timings: dict[str, Any] = {}
    t0 = time.monotonic()
    with ssh.session(on) as session:
        timings["connect_s"] = round(time.monotonic() - t0, 2)
        host = probe(session, remote_dir)
        root = host["home"] + remote_dir[1:] if remote_dir.startswith("~") else remote_dir
        layout = TrainLayout(root)
        env = ensure_env(session, layout, log, host)
        timings["env_s"] = env["seconds"]
        log(f"{session.target.label}: mltool[{env['extra']}] {env['state']} in {layout.venv}")
        transfer: dict[str, Any] = {}
        if data_local is not None:
            transfer = sync_data(session, layout, data_local, log)
            data_remote = transfer["remote_path"]
            timings["data_s"] = transfer["seconds"]
            log(f"dataset {data_local.name}: {transfer['status']} ({transfer['files_sent']} files, {transfer['bytes_sent']:,} bytes sent)")
        hostname = host["hostname"]
        job_id = f"{cfg.task}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        jobdir = layout.job(job_id)
        job_config = cfg.as_job()
        job_config["data"] = data_remote
        job = {"config": job_config, "env": {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV_PREFIX)},
               "client": {"project": str(cfg.project), "out": str(cfg.out) if cfg.out else None}}
        ran_on: dict[str, Any] = {"via": "ssh", "target": session.target.spec, "hostname": hostname, "remote_dir": remote_dir,
                                  "job": job_id, "environment": {"extra": env["extra"], "gpu": env["gpu"]}}
        if transfer:
            ran_on["data"] = {"local": str(data_local), "remote": data_remote,
                              **{k: transfer[k] for k in ("hash", "status", "bytes_sent", "files_sent")}}
        elif data_remote:
            ran_on["data"] = {"remote": data_remote}
        # absolute paths: --attach may be typed in another folder
        record = JobRecord(job=job_id, on=on, remote_dir=remote_dir, jobdir=jobdir, task=cfg.task,
                           project=str(Path(cfg.project).resolve()), out=str(Path(cfg.out).resolve()) if cfg.out else None,
                           data_local=str(data_local) if data_local else None, ssh=_ssh_record(ssh), ran_on=ran_on,
                           started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        record.save()
        try:
            session.run(f"mkdir -p {q(jobdir)} && printf '%s' {q(json.dumps(job))} > {q(jobdir)}/job.json && "
                        f"{q(layout.python)} -m mltool.train.remote_job start {q(jobdir)}", what="start the training job")
        except BaseException:
            record.remove()
            session.run(f"rm -rf {q(jobdir)}", check=False)
            raise
        timings["setup_s"] = round(time.monotonic() - t0, 2)
        log(f"job {job_id} started on {session.target.label}")
        if detach:
            return Detached(job_id, on)
        return _follow_and_fetch(session, layout, record, listener, log, stop_on_drop=True, timings=timings)


def attach(job: str | None, *, ssh: Any | None, on: str | None, listener: Any, log: Callable[[str], None],
           stop: bool = False) -> Any:
    """Pick up a detached run: replay its progress, wait for the end, bring its folder back. With
    ``stop``: stop it there instead (its .partial folder and job are removed) and return None."""
    record = JobRecord.load(job)
    target = on or record.on
    opts = _ssh_from(record.ssh, ssh)
    with opts.session(target) as session:
        layout = TrainLayout(record.jobdir.rsplit("/train/jobs/", 1)[0])
        if session.run(f"test -d {q(record.jobdir)}", check=False).rc != 0:
            record.remove()
            raise RemoteRunError(f"job {record.job} is no longer on {session.target.label} (stopped or already fetched)",
                                 "start the run again")
        if stop:
            session.run(f"{q(layout.python)} -m mltool.train.remote_job stop {q(record.jobdir)}", what="stop the job",
                        timeout=120)
            record.remove()
            log(f"stopped job {record.job} on {session.target.label}; its folder there is removed")
            return None
        log(f"attached to job {record.job} on {session.target.label}")
        return _follow_and_fetch(session, layout, record, listener, log, stop_on_drop=False, timings={})


def _follow_and_fetch(session: Any, layout: TrainLayout, record: JobRecord, listener: Any, log: Callable[[str], None],
                      *, stop_on_drop: bool, timings: dict[str, Any]) -> Any:
    from mltool.train.progress import dispatch

    label = session.target.label
    t0 = time.monotonic()
    lease = f" --lease {LEASE_S:g}" if stop_on_drop else ""
    chan = session.client.get_transport().open_session(timeout=session.timeout)
    chan.exec_command(f"{q(layout.python)} -m mltool.train.remote_job follow {q(record.jobdir)}{lease}")
    chan.settimeout(0.5)
    done = threading.Event()

    def heartbeat() -> None:
        while True:
            try:
                chan.sendall(b"\n")
            except Exception:  # the channel is gone; the reader sees it too
                return
            if done.wait(HEARTBEAT_S):
                return

    if stop_on_drop:
        threading.Thread(target=heartbeat, daemon=True).start()
    buf = b""
    end: dict[str, Any] | None = None
    result_summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        while end is None:
            try:
                data = chan.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # socket.timeout is TimeoutError; anything else: the link broke
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                text = line.decode(errors="replace")
                try:
                    event = json.loads(text)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "event" not in event:
                    if text.strip():
                        log(text)
                    continue
                kind = event["event"]
                if dispatch(event, listener):
                    continue
                if kind == "log":
                    log(event.get("message", ""))
                elif kind == "result":
                    result_summary = event.get("summary")
                elif kind == "error":
                    error = event
                elif kind in ("done", "stopped"):
                    end = event
                    break
    except KeyboardInterrupt:
        if not stop_on_drop:
            done.set()
            chan.close()
            log(f"left job {record.job} running on {label}: `mltool train --attach --job {record.job}` picks it up")
            raise
        log(f"stopping job {record.job} on {label}")
        _stop_remote(session, chan, layout, record)
        record.remove()
        raise
    finally:
        done.set()
        _close_listener(listener)
    chan.close()
    if end is None:
        if stop_on_drop:
            record.remove()
            raise DeployError(f"the SSH connection to {label} dropped during the run; the run there stops itself "
                              "when its client goes away, and its job folder is removed", "run it again")
        raise DeployError(f"the SSH connection to {label} dropped", f"`mltool train --attach --job {record.job}` picks the run up again")
    if end["event"] == "stopped":
        record.remove()
        raise DeployError(f"the run on {label} was stopped: {end.get('reason')}", "run it again")
    if end["rc"] != 0:
        session.run(f"rm -rf {q(record.jobdir)}", check=False)
        record.remove()
        message = (error or {}).get("message") or f"the run died (exit {end['rc']})"
        raise RemoteRunError(f"on {label}: {message}", "see the run's output above", exit_code=int((error or {}).get("exit_code") or 1))
    timings["train_s"] = round(time.monotonic() - t0, 2)
    t1 = time.monotonic()
    result = fetch(session, record, result_summary)
    timings["fetch_s"] = round(time.monotonic() - t1, 2)
    session.run(f"rm -rf {q(record.jobdir)}", check=False)
    record.remove()
    result.timings = timings
    return result


def _close_listener(listener: Any) -> None:
    try:
        listener.train_end()
    except Exception:  # a listener that never began has nothing to close
        pass


def _stop_remote(session: Any, chan: Any, layout: TrainLayout, record: JobRecord) -> None:
    """Ask the follower to stop the run and wait until it has cleaned up; over a fresh channel if
    that fails."""
    deadline = time.monotonic() + 90
    try:
        chan.sendall(b"stop\n")
        buf = b""
        while time.monotonic() < deadline:
            try:
                data = chan.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            buf += data
            if b'"event": "stopped"' in buf or b'"event": "done"' in buf:
                break
    except (OSError, EOFError):
        pass
    finally:
        chan.close()
    try:
        session.run(f"{q(layout.python)} -m mltool.train.remote_job stop {q(record.jobdir)}", check=False, timeout=90)
    except MltoolError:
        pass


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract a run folder's tar: plain files and folders inside ``dest`` only."""
    for member in tar:
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise DeployError(f"the run folder sent back holds an unexpected entry {member.name!r}",
                              "check the training host; nothing was written")
        try:
            tar.extract(member, dest, filter="data")
        except TypeError:  # Python before tar filters (3.10.12 / 3.11.4): checked above
            tar.extract(member, dest)


def fetch(session: Any, record: JobRecord, summary: dict[str, Any] | None) -> Any:
    """Bring the job's complete run folder back into a local ``.partial-*`` folder and rename it
    into place exactly as a local run is."""
    from mltool.train import rundir
    from mltool.train.run import TrainResult

    project = Path(record.project)
    out = Path(record.out) if record.out else None
    parent = out.parent if out is not None else project
    tmp = rundir.start(parent, record.task)
    try:
        chan = session.client.get_transport().open_session(timeout=session.timeout)
        chan.settimeout(session.command_timeout)
        chan.exec_command(f"tar -C {q(record.jobdir + '/run')} -cf - .")
        stream = chan.makefile("rb")
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            _extract(tar, tmp)
        rc = chan.recv_exit_status()
        err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
        chan.close()
        if rc != 0 or not rundir.is_run_dir(tmp):
            raise DeployError(f"bringing the run folder back from {session.target.label} failed (exit {rc}): {err[-200:]}",
                              f"`mltool train --attach --job {record.job}` tries again")
        meta = tmp / rundir.RUN_FILE
        info = json.loads(meta.read_text())
        if record.data_local:
            info["dataset"]["source"] = record.data_local  # the same content (fingerprint), where it lives here
        info["ran_on"] = {**info.get("ran_on", {}), **record.ran_on}
        meta.write_text(json.dumps(info, indent=2) + "\n")
        final = rundir.finish(tmp, project, record.task, out)
    except BaseException:
        rundir.abandon(tmp)
        raise
    _, run_info = rundir.read_run(final)
    return TrainResult(final, run_info)
