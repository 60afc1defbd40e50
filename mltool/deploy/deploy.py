"""``deploy()``: put a .tflite model on a device as a verified, probed, atomically switched release.

    from mltool.deploy.deploy import DeployConfig, deploy_host
    result = deploy_host("pi@raspberrypi.local", DeployConfig(model="runs/train/fire-1/model_int8.tflite"))
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shlex
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mltool import __version__
from mltool.deploy.errors import DeployError, UnreachableError
from mltool.deploy.ssh import Session, parse_target, qpath
from mltool.errors import ConfigError, MltoolError, ModelError
from mltool.runtime.metadata import ModelMetadata

PREFERRED = ("model_int8.tflite", "model_dynamic.tflite", "model_float16.tflite", "model_float32.tflite", "model_int16x8.tflite")


def _source(name: str) -> str:
    return (Path(__file__).parent / name).read_text()


@dataclass
class DeployConfig:
    model: Path | None = None
    name: str | None = None
    root: str = "~/mltool"
    keep: int = 3
    identity: Path | None = None
    port: int | None = None
    known_hosts: Path | None = None
    trust_new_host: bool = False
    timeout: float = 10.0
    command_timeout: float = 120.0
    probe: bool = True
    bench: bool = False
    setup: bool = False
    service: str | None = None


@dataclass
class HostResult:
    host: str
    status: str  # changed | unchanged | failed | unreachable | skipped
    release: str | None = None
    previous: str | None = None
    bytes_sent: int = 0
    duration_s: float = 0.0
    message: str = ""
    probe: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None
    setup: dict[str, Any] | None = None
    service: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Artifact:
    path: Path
    name: str
    sha256: str
    size: int
    metadata: ModelMetadata | None

    @property
    def release_id(self) -> str:
        return self.sha256[:16]


def resolve_artifact(model: Path, name: str | None) -> Artifact:
    """A .tflite file, or a run directory (its int8 model first). Verified locally before upload."""
    from mltool.runtime.metadata import read_metadata
    from mltool.runtime.tflite_schema import read_model_file

    p = Path(model).expanduser()
    if p.is_dir():
        found = [p / f for f in PREFERRED if (p / f).is_file()]
        if not found:
            raise ModelError(f"{p} has no .tflite model", f"run `mltool convert {p} --quantize int8` first")
        p = found[0]
    if p.suffix != ".tflite":
        raise ModelError(f"{p} is not a .tflite model", "deploy a converted model (mltool convert) or a run directory")
    data, info = read_model_file(p)
    meta = read_metadata(info)
    chosen = name or (meta.task if meta is not None else None) or p.stem
    if not chosen.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"model name '{chosen}' has characters that are unsafe in a path", "pass --name with letters, digits, - _ .")
    return Artifact(p, chosen, hashlib.sha256(data).hexdigest(), len(data), meta)


class Device:
    """Release operations on one connected device."""

    def __init__(self, session: Session, root: str) -> None:
        self.s = session
        self.root = root
        self._ops = _source("remote_ops.py")

    def op(self, op_name: str, what: str | None = None, **args: Any) -> dict[str, Any]:
        # The device's venv Python when it exists (a plain binary, and the one with the runtime),
        # else python3 from PATH: chosen by the remote shell, so no extra round trip.
        venv = f"{self.root}/venv/bin/python"
        cmd = (f"P={qpath(venv)}; [ -x \"$P\" ] || P=python3; \"$P\" -c {shlex.quote(self._ops)} "
               f"{shlex.quote(op_name)} {shlex.quote(json.dumps({'root': self.root, **args}))}")
        r = self.s.run(cmd, what=what or op_name)
        try:
            return json.loads(r.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError(f"unexpected answer from {self.s.target.label} to '{op_name}': {r.out[:200]!r}", "is python3 installed on the device?") from None


_q = qpath


def deploy_host(spec: str, cfg: DeployConfig, artifact: Artifact | None = None) -> HostResult:
    """Deploy to one host. Never raises for device problems: they land in the result."""
    t0 = time.monotonic()
    target = parse_target(spec, port=cfg.port, identity=cfg.identity)
    res = HostResult(host=target.label, status="failed")
    session = Session(target, known_hosts=cfg.known_hosts, trust_new=cfg.trust_new_host,
                      timeout=cfg.timeout, command_timeout=cfg.command_timeout)
    try:
        session.connect()
    except UnreachableError as exc:
        res.status, res.message = "unreachable", exc.one_line()
        res.duration_s = round(time.monotonic() - t0, 3)
        return res
    try:
        dev = Device(session, cfg.root)
        if cfg.setup:
            from mltool.deploy.setup import setup_device

            res.setup = setup_device(session, cfg.root)
        if artifact is not None:
            _deploy_artifact(dev, artifact, cfg, res)
        if cfg.service and artifact is not None:
            from mltool.deploy.service import install_service

            res.service = install_service(session, cfg.root, artifact.name, cfg.service)
        if cfg.bench and artifact is not None:
            res.bench = _remote_bench(session, cfg.root, artifact.name)
    except MltoolError as exc:
        res.status, res.message = "failed", exc.one_line()
    finally:
        res.bytes_sent = session.bytes_sent
        session.close()
        res.duration_s = round(time.monotonic() - t0, 3)
    return res


def _deploy_artifact(dev: Device, art: Artifact, cfg: DeployConfig, res: HostResult) -> None:
    """Two round trips and the upload: prepare; put (only if the content is not there); finish
    (verify, commit, probe, switch, prune — on the device, in one step)."""
    prep = dev.op("prepare", name=art.name, id=art.release_id, sha256=art.sha256)
    res.release, res.previous = art.release_id, prep["current"]
    if prep["present"] and prep["current"] == art.release_id:
        res.status, res.message = "unchanged", "already current"
        return
    if not prep["present"]:
        if prep["free_bytes"] < art.size * 2:
            dev.s.run(f"rm -rf {_q(prep['tmp'])}", check=False)
            raise DeployError(f"{dev.s.target.label} has only {prep['free_bytes']} bytes free for a {art.size}-byte model",
                              "free space on the device or prune releases (--keep)")
        dev.s.put(art.path, f"{prep['tmp']}/model.tflite.part")
    manifest = {
        "id": art.release_id, "name": art.name, "sha256": art.sha256, "size": art.size, "file": art.path.name,
        "task": art.metadata.task if art.metadata else None,
        "quantization": art.metadata.quantization_mode if art.metadata else None,
        "deployed_by": f"{getpass.getuser()}@{socket.gethostname()}", "mltool_version": __version__,
    }
    done = dev.op("finish", what="verify, probe and switch", name=art.name, id=art.release_id, sha256=art.sha256,
                  tmp=None if prep["present"] else prep["tmp"], manifest=manifest, keep=max(1, cfg.keep),
                  probe_source=_source("probe_script.py") if cfg.probe else None, probe_timeout=cfg.command_timeout)
    if done["status"] == "unchanged":  # a concurrent deploy switched it first
        res.status, res.message = "unchanged", "already current"
        return
    if done["status"] == "probe_failed":
        raise DeployError(f"probe failed on {dev.s.target.label}: {done['message']}",
                          "the model was not made current; check it with `mltool inspect` and the device's runtime (`mltool doctor` there)")
    res.probe = done["probe"]
    res.status = "changed"
    res.message = f"current -> {art.release_id}" + (f" (was {prep['current']})" if prep["current"] else "") + \
        (f"; pruned {len(done['pruned'])}" if done["pruned"] else "")


def _remote_bench(session: Session, root: str, name: str) -> dict[str, Any]:
    mltool = f"{root}/venv/bin/mltool"
    model = f"{root}/models/{name}/current/model.tflite"
    r = session.run(f"test -x {_q(mltool)}", check=False)
    if r.rc != 0:
        raise DeployError(f"mltool is not installed on {session.target.label} ({mltool} missing)", "deploy once with --setup")
    out = session.run(f"{_q(mltool)} bench {_q(model)} --json", what="bench", timeout=max(session.command_timeout, 300))
    return json.loads(out.out)


# --------------------------------------------------------------------------- releases & rollback


def list_releases(spec: str, cfg: DeployConfig, name: str | None = None) -> dict[str, Any]:
    target = parse_target(spec, port=cfg.port, identity=cfg.identity)
    with Session(target, known_hosts=cfg.known_hosts, trust_new=cfg.trust_new_host, timeout=cfg.timeout) as s:
        dev = Device(s, cfg.root)
        names = [name] if name else dev.op("names")["names"]
        return {"host": target.label, "models": {n: dev.op("state", name=n) for n in names}}


def rollback(spec: str, cfg: DeployConfig, name: str | None, to: str | None) -> dict[str, Any]:
    target = parse_target(spec, port=cfg.port, identity=cfg.identity)
    with Session(target, known_hosts=cfg.known_hosts, trust_new=cfg.trust_new_host, timeout=cfg.timeout) as s:
        dev = Device(s, cfg.root)
        if name is None:
            names = dev.op("names")["names"]
            if len(names) != 1:
                raise ConfigError(f"{target.label} has {len(names)} models ({', '.join(names) or 'none'})", "pass --name")
            name = names[0]
        st = dev.op("state", name=name)
        ids = [r["id"] for r in st["releases"]]
        if not ids:
            raise DeployError(f"{target.label} has no releases of {name}", "deploy one first")
        if to is None:
            if st["current"] not in ids or ids.index(st["current"]) == 0:
                raise DeployError(f"{name} on {target.label} has no release before {st['current']}", "pass --to ID (see `mltool releases`)")
            to = ids[ids.index(st["current"]) - 1]
        else:
            matches = [i for i in ids if i.startswith(to)]
            if len(matches) != 1:
                raise ConfigError(f"release '{to}' {'is ambiguous' if matches else 'does not exist'} on {target.label}",
                                  f"choose one of: {', '.join(ids)}")
            to = matches[0]
        sw = dev.op("switch", name=name, id=to)
        return {"host": target.label, "name": name, **sw}
