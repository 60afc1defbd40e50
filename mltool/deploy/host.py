"""One host: put a .tflite model on a device as a verified, probed, atomically switched release;
list its releases; roll back.

    from mltool.deploy.host import DeployConfig, deploy_host
    result = deploy_host("pi@raspberrypi.local", DeployConfig(model="runs/train/fire-1/model_int8.tflite"))

Several hosts at once (inventory, canary batches) are :func:`mltool.deploy.deploy`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shlex
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mltool import __version__
from mltool.deploy.errors import CommandTimeout, DeployError, UnreachableError
from mltool.deploy.ssh import Session, SshOptions, qpath
from mltool.errors import ConfigError, MltoolError, ModelError
from mltool.layout import MODEL_FILE, RELEASE_ID_DIGITS, DeviceLayout
from mltool.runtime.metadata import ModelMetadata


def _source(name: str) -> str:
    return (Path(__file__).parent / name).read_text()


@dataclass
class DeployConfig:
    model: Path | None = None  # a .tflite file or a run directory; None with setup=True prepares the device only
    name: str | None = None
    root: str = "~/mltool"
    keep: int = 3
    ssh: SshOptions = field(default_factory=SshOptions)
    probe: bool = True
    bench: bool = False
    setup: bool = False
    runtime: str | None = None  # with setup: pin the device's TFLite runtime (a pip requirement)
    service: str | None = None
    parallel: int = 5  # fleets: hosts at a time
    batch: str | None = None  # fleets: canary batches, e.g. "1,25%,100%"
    max_fail_pct: float = 0.0
    agent: str | None = None  # with setup: install `mltool agent URL` as a systemd unit
    agent_labels: list[str] = field(default_factory=list)
    agent_mqtt: dict[str, Any] = field(default_factory=dict)  # ca/cert/key/credentials files to copy there

    @property
    def layout(self) -> DeviceLayout:
        return DeviceLayout(self.root)

    def validate(self) -> None:
        """Usage errors, raised before any host is touched."""
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep} would delete every earlier release (rollback impossible)",
                              "keep at least 1 release (the default is 3)")
        if self.parallel < 1:
            raise ConfigError(f"--parallel {self.parallel} must be at least 1", "use --parallel 5")
        if not 0 <= self.max_fail_pct <= 100:
            raise ConfigError(f"--max-fail-pct {self.max_fail_pct:g} is not a percentage", "use 0 to 100")
        for name, value in (("--connect-timeout", self.ssh.timeout), ("--command-timeout", self.ssh.command_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} {value:g} must be positive", f"use seconds, e.g. {name} 30")
        if self.agent is not None:
            from mltool.deploy.agent import parse_labels
            from mltool.report.config import parse_url

            if not self.setup:
                raise ConfigError("--agent installs the pull agent during --setup", "add --setup")
            parse_url(self.agent)
            parse_labels(self.agent_labels)
        elif self.agent_labels:
            raise ConfigError("--label goes with --setup --agent URL (SSH deploys select hosts with --limit)",
                              "add --setup --agent mqtt://broker/PREFIX")
        if self.ssh.port is not None and not 1 <= self.ssh.port <= 65535:
            raise ConfigError(f"--port {self.ssh.port} is not a TCP port", "use 1 to 65535")


@dataclass
class HostResult:
    host: str
    status: str  # changed | unchanged | ready (set up, no model) | failed | unreachable | skipped
    release: str | None = None
    previous: str | None = None
    bytes_sent: int = 0
    duration_s: float = 0.0
    message: str = ""
    upload: str | None = None  # sftp | exec (the device has no SFTP subsystem)
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
        return self.sha256[:RELEASE_ID_DIGITS]

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """What the device keeps beside the release (releases/<id>/release.json), pushed or pulled.
        ``task``: what the model does (as /v2/models and infer say it); ``trained_on``: the
        `mltool train` task."""

        meta = self.metadata
        return {"id": self.release_id, "name": self.name, "sha256": self.sha256, "size": self.size, "file": self.path.name,
                "task": meta.kind.rsplit("-", 1)[-1] if meta and meta.kind else None,
                "trained_on": meta.task if meta else None,
                "quantization": meta.quantization_mode if meta else None, "mltool_version": __version__, **extra}


def resolve_artifact(model: Path, name: str | None) -> Artifact:
    """A .tflite file, or a run directory (its int8 model first). Verified locally before upload."""
    from mltool.convert.naming import DEPLOY_PREFERENCE, tflite_name
    from mltool.runtime.metadata import read_metadata
    from mltool.runtime.tflite_schema import read_model_file

    p = Path(model).expanduser()
    if p.is_dir():
        found = [p / tflite_name("model", m) for m in DEPLOY_PREFERENCE if (p / tflite_name("model", m)).is_file()]
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

    def __init__(self, session: Session, layout: DeviceLayout) -> None:
        self.s = session
        self.layout = layout
        self._ops = _source("remote_ops.py")

    def op(self, op_name: str, what: str | None = None, name: str | None = None, timeout: float | None = None,
           **args: Any) -> dict[str, Any]:
        # The device's venv Python when it exists (a plain binary, and the one with the runtime),
        # else python3 from PATH: chosen by the remote shell, so no extra round trip.
        payload = {**self.layout.remote_args(name), **({'name': name} if name else {}), **args}
        # A venv Python that exists but does not start (a broken venv) must not break releases,
        # rollback and the deploy's own steps: those need only the standard library.
        cmd = (f"P={qpath(self.layout.python)}; {{ [ -x \"$P\" ] && \"$P\" -I -S -c '' >/dev/null 2>&1; }} || P=python3; "
               f"\"$P\" -c {shlex.quote(self._ops)} {shlex.quote(op_name)} {shlex.quote(json.dumps(payload))}")
        r = self.s.run(cmd, what=what or op_name, timeout=timeout)
        try:
            answer = json.loads(r.out.strip().splitlines()[-1])
            if not isinstance(answer, dict):
                raise ValueError(r.out)
            return answer
        except (ValueError, IndexError):
            raise DeployError(f"unexpected answer from {self.s.target.label} to '{op_name}': {r.out[:200]!r}", "is python3 installed on the device?") from None


def deploy_host(spec: str, cfg: DeployConfig, artifact: Artifact | None = None) -> HostResult:
    """Deploy ``cfg.model`` (or an already resolved ``artifact``) to one host; with
    ``cfg.setup`` prepare the device first (a model is then optional). Never raises for device
    problems: they land in the result."""
    if artifact is None and cfg.model is not None:
        artifact = resolve_artifact(Path(cfg.model), cfg.name)
    if artifact is None and not cfg.setup:
        raise ConfigError("no model given", "pass a .tflite file or run directory (or setup=True alone)")
    if cfg.runtime is not None and not cfg.setup:
        raise ConfigError("--runtime pins the runtime --setup installs", "add --setup")
    cfg.validate()
    t0 = time.monotonic()
    session = cfg.ssh.session(spec)
    res = HostResult(host=session.target.label, status="failed")
    try:
        session.connect()
    except UnreachableError as exc:
        res.status, res.message = "unreachable", exc.one_line()
        res.duration_s = round(time.monotonic() - t0, 3)
        return res
    try:
        dev = Device(session, cfg.layout)
        if cfg.setup:
            from mltool.deploy.setup import setup_device

            res.setup = setup_device(session, cfg.layout, cfg.runtime)
            res.status, res.message = "ready", "set up"
            if cfg.agent:
                from mltool.deploy.service import install_agent

                res.service = install_agent(session, cfg.layout, cfg.agent, cfg.agent_labels, cfg.agent_mqtt)
                res.message += f"; agent {res.service['unit']} {res.service['active']}"
        if artifact is not None:
            res.status = "failed"
            _deploy_artifact(dev, artifact, cfg, res)
        if cfg.service and artifact is not None:
            from mltool.deploy.service import install_service

            res.service = install_service(session, cfg.layout, artifact.name, cfg.service)
        if cfg.bench and artifact is not None:
            res.bench = _remote_bench(session, cfg.layout, artifact.name)
    except MltoolError as exc:
        res.status, res.message = "failed", exc.one_line()
    finally:
        res.bytes_sent = session.bytes_sent
        session.close()
        res.duration_s = round(time.monotonic() - t0, 3)
    return res


def _deploy_artifact(dev: Device, art: Artifact, cfg: DeployConfig, res: HostResult) -> None:
    """Two round trips and the upload: prepare (nothing is deleted; refused when there is not
    room for twice the model); put (only if the content is not there); finish (verify, probe,
    commit, switch, prune: on the device, in one step, under the model's lock)."""
    label = dev.s.target.label
    prep = dev.op("prepare", name=art.name, id=art.release_id, sha256=art.sha256, size=art.size)
    res.release, res.previous = art.release_id, prep["current"]
    if prep.get("status") == "no_space":
        raise DeployError(f"{label} has {prep['free_bytes']} bytes free; deploying this {art.size}-byte model needs "
                          f"{prep['need_bytes']} (twice the model: the upload beside the current release, and room to spare)",
                          "free space on the device or keep fewer releases (--keep); nothing was changed")
    if prep["present"] and prep["current"] == art.release_id:
        res.status, res.message = "unchanged", "already current"
        return
    if not prep["present"]:
        dev.s.put(art.path, f"{prep['tmp']}/{MODEL_FILE}.part")
        res.upload = "sftp" if dev.s.sftp_ok else "exec"
    manifest = art.manifest(deployed_by=f"{getpass.getuser()}@{socket.gethostname()}")
    token = uuid.uuid4().hex
    timeout = cfg.ssh.command_timeout
    # The device gives up before we do (it stops short of switching), so what we report is what happened.
    budget = max(timeout - min(10.0, max(1.0, timeout / 4)), timeout / 2)
    try:
        done = dev.op("finish", what="verify, probe and switch", name=art.name, id=art.release_id, sha256=art.sha256,
                      tmp=prep["tmp"], manifest=manifest, keep=max(1, cfg.keep), token=token, budget_s=budget,
                      probe_source=_source("probe_script.py") if cfg.probe else None)
    except CommandTimeout as exc:
        # It may still be running there: mark it abandoned, wait for it to end, and report current as it is.
        settle = dev.op("abandon", what="check the device after the timeout", name=art.name, token=token,
                        wait_s=max(30.0, timeout), timeout=max(30.0, timeout) + 30)
        if settle["current"] != art.release_id or not settle["settled"]:
            raise DeployError(exc.message + (": nothing was switched" if settle["settled"] else ""), exc.hint) from None
        done = {"status": "changed", "previous": prep["current"], "probe": None, "pruned": []}
        res.message = " (the device finished after --command-timeout)"
    if done["status"] == "unchanged":  # a concurrent deploy switched it first
        res.status, res.message = "unchanged", "already current"
        return
    if done["status"] == "probe_failed":
        raise DeployError(f"probe failed on {label}: {done['message']}",
                          "the model was not made current; check it with `mltool inspect` and the device's runtime (`mltool doctor` there)")
    if done["status"] == "gone":
        raise DeployError(f"{done['message']} on {label}", "deploy again (one deploy per model at a time)")
    if done["status"] == "timed_out":
        raise DeployError(f"verify, probe and switch on {label} did not finish within --command-timeout {timeout:g}s: "
                          "nothing was switched", "the device may be overloaded; raise --command-timeout")
    res.probe = done["probe"]
    res.status = "changed"
    if done["status"] == "repaired":
        res.message = f"current {art.release_id} repaired (its model file on the device was damaged)" + res.message
        return
    res.message = f"current -> {art.release_id}" + (f" (was {prep['current']})" if prep["current"] else "") + \
        (f"; pruned {len(done['pruned'])}" if done["pruned"] else "") + res.message


def _remote_bench(session: Session, layout: DeviceLayout, name: str) -> dict[str, Any]:
    r = session.run(f"test -x {qpath(layout.mltool)}", check=False)
    if r.rc != 0:
        raise DeployError(f"mltool is not installed on {session.target.label} ({layout.mltool} missing)", "deploy once with --setup")
    out = session.run(f"{qpath(layout.mltool)} bench {qpath(layout.current_model(name))} --json", what="bench",
                      timeout=max(session.command_timeout, 300))
    return json.loads(out.out)


# --------------------------------------------------------------------------- releases & rollback


def list_releases(spec: str, ssh: SshOptions | None = None, root: str = "~/mltool", name: str | None = None) -> dict[str, Any]:
    """Every model's releases on one device and which is current."""
    with (ssh or SshOptions()).session(spec) as s:
        dev = Device(s, DeviceLayout(root))
        names = [name] if name else dev.op("names")["names"]
        return {"host": s.target.label, "models": {n: dev.op("state", name=n) for n in names}}


def rollback(spec: str, ssh: SshOptions | None = None, root: str = "~/mltool", name: str | None = None,
             to: str | None = None) -> dict[str, Any]:
    """Switch ``current`` back to the release before it (or ``to``, an id or unique prefix)."""
    with (ssh or SshOptions()).session(spec) as s:
        label = s.target.label
        dev = Device(s, DeviceLayout(root))
        if name is None:
            names = dev.op("names")["names"]
            if len(names) != 1:
                raise ConfigError(f"{label} has {len(names)} models ({', '.join(names) or 'none'})", "pass --name")
            name = names[0]
        st = dev.op("state", name=name)
        ids = [r["id"] for r in st["releases"]]
        if not ids:
            raise DeployError(f"{label} has no releases of {name}", "deploy one first")
        if to is None:
            if st["current"] not in ids or ids.index(st["current"]) == 0:
                raise DeployError(f"{name} on {label} has no release before {st['current']}", "pass --to ID (see `mltool releases`)")
            to = ids[ids.index(st["current"]) - 1]
        else:
            matches = [i for i in ids if i.startswith(to)]
            if len(matches) != 1:
                raise ConfigError(f"release '{to}' {'is ambiguous' if matches else 'does not exist'} on {label}",
                                  f"choose one of: {', '.join(ids)}")
            to = matches[0]
        sw = dev.op("switch", name=name, id=to)
        return {"host": label, "name": name, **sw}
