"""Several devices: an Ansible-style inventory, --limit, --parallel, canary --batch, --max-fail-pct.

Inventory (YAML)::

    hosts:
      kitchen-pi: {address: 192.168.1.20, user: pi, port: 22, labels: [camera, kitchen]}
      garage-pi:  {address: garage.local, labels: [camera]}
    groups:
      indoor: [kitchen-pi]

Ansible's own ``all: {hosts: ..., children: {group: {hosts: ...}}}`` layout is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltool.deploy.errors import EXIT_FAILED, EXIT_PENDING, EXIT_UNREACHABLE
from mltool.deploy.host import Artifact, DeployConfig, HostResult, deploy_host, resolve_artifact
from mltool.errors import ConfigError, DataError, did_you_mean


@dataclass
class Host:
    name: str
    spec: str  # [user@]address[:port]
    groups: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def _spec(entry: dict[str, Any], name: str, path: Path) -> str:
    addr = entry.get("address") or entry.get("ansible_host") or entry.get("host") or name
    user = entry.get("user") or entry.get("ansible_user")
    port = entry.get("port") or entry.get("ansible_port")
    for what, value in (("address", addr), ("user", user)):
        if value is not None and (not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip()
                                  or any(c in str(value) for c in " @/\n")):
            raise DataError(f"inventory {path}: host '{name}' has an invalid {what} {value!r}", f"give a plain {what}")
    if port is not None and (isinstance(port, bool) or not str(port).isdigit() or not 1 <= int(port) <= 65535):
        raise DataError(f"inventory {path}: host '{name}' has port {port!r}, not a TCP port", "use a port from 1 to 65535")
    return f"{str(user) + '@' if user else ''}{addr}{':' + str(port) if port else ''}"


def load_inventory(path: Path) -> list[Host]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise DataError(f"inventory {path} does not exist", "check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read inventory {path} ({type(exc).__name__})", "pass a YAML file you can read") from None
    except yaml.YAMLError as exc:
        raise DataError(f"inventory {path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the YAML syntax") from None
    if not isinstance(doc, dict):
        raise DataError(f"inventory {path} must be a mapping with 'hosts'", "see `mltool deploy --help`")
    hosts: dict[str, Host] = {}

    def add(name: str, entry: Any, group: str | None) -> None:
        entry = entry or {}
        if not isinstance(entry, dict):
            raise DataError(f"inventory {path}: host '{name}' must be a mapping", "e.g. pi1: {address: 10.0.0.5, user: pi}")
        labels = entry.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
            raise DataError(f"inventory {path}: host '{name}' has labels {labels!r}", "give a list, e.g. labels: [camera, kitchen]")
        h = hosts.setdefault(str(name), Host(str(name), _spec(entry, str(name), path)))
        h.labels |= {str(x) for x in labels}
        if group:
            h.groups.add(group)

    def mapping(value: Any, what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DataError(f"inventory {path}: {what} must be a mapping, not {type(value).__name__}", "see `mltool deploy --help`")
        return value

    def walk_ansible(node: dict[str, Any], group: str | None) -> None:
        for name, entry in mapping(node.get("hosts"), "hosts").items():
            add(name, entry, group)
        for child, sub in mapping(node.get("children"), "children").items():
            walk_ansible(mapping(sub, f"group {child}"), child)

    if "all" in doc and isinstance(doc["all"], dict):
        walk_ansible(doc["all"], None)
    else:
        for name, entry in mapping(doc.get("hosts"), "hosts").items():
            add(name, entry, None)
        for group, members in mapping(doc.get("groups"), "groups").items():
            if not isinstance(members, (list, type(None))):
                raise DataError(f"inventory {path}: group '{group}' must list host names", f"e.g. {group}: [pi1, pi2]")
            for m in members or []:
                if m not in hosts:
                    raise DataError(f"inventory {path}: group '{group}' lists unknown host '{m}'", did_you_mean(m, hosts))
                hosts[m].groups.add(group)
    if not hosts:
        raise DataError(f"inventory {path} lists no hosts", "add a 'hosts:' mapping")
    return list(hosts.values())


def apply_limit(hosts: list[Host], limit: str | None) -> list[Host]:
    if not limit:
        return hosts
    wanted = {w.strip() for w in limit.split(",") if w.strip()}
    chosen = [h for h in hosts if wanted & ({h.name} | h.groups | h.labels)]
    if not chosen:
        known = sorted({h.name for h in hosts} | set().union(*(h.groups | h.labels for h in hosts)))
        raise ConfigError(f"--limit {limit} matches no host, group or label", did_you_mean(limit, known))
    return chosen


def batch_sizes(spec: str | None, total: int) -> list[int]:
    """'1,25%,100%' -> sizes that cover ``total`` hosts; the last size repeats."""
    if not spec:
        return [total] if total else []
    sizes = []
    for part in spec.split(","):
        part = part.strip()
        try:
            pct = float(part[:-1]) if part.endswith("%") else None
            n = math.ceil(total * pct / 100) if pct is not None else int(part)
        except ValueError:
            raise ConfigError(f"--batch '{spec}' is not a list of counts or percentages", "e.g. --batch 1,25%,100%") from None
        if pct is not None and not 0 < pct <= 100:
            raise ConfigError(f"--batch '{spec}' has {part}, not a percentage of the hosts", "use percentages from 1% to 100%")
        if n < 1:
            raise ConfigError(f"--batch '{spec}' has an empty batch ({part})", "use counts >= 1 or percentages > 0")
        sizes.append(n)
    out, done, i = [], 0, 0
    while done < total:
        n = min(sizes[min(i, len(sizes) - 1)], total - done)
        out.append(n)
        done += n
        i += 1
    return out


@dataclass
class FleetResult:
    results: list[HostResult]
    batches: list[int]
    stopped_early: bool
    artifact: Artifact | None = None

    def as_dict(self) -> dict[str, Any]:
        """What `mltool deploy --json` prints."""
        a = self.artifact
        return {"model": str(a.path) if a else None, "release": a.release_id if a else None,
                "batches": self.batches, "stopped_early": self.stopped_early, "counts": self.counts(),
                "hosts": [r.as_dict() for r in self.results]}

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    def exit_code(self) -> int:
        c = self.counts()
        if c.get("failed") or c.get("rolled_back"):
            return EXIT_FAILED
        if c.get("unreachable") or c.get("skipped"):
            return EXIT_UNREACHABLE if c.get("unreachable") else EXIT_FAILED
        if c.get("pending"):  # pull deploys: not answered yet, the desired state stays retained
            return EXIT_PENDING
        return 0


def deploy(
    targets: list[str],
    cfg: DeployConfig,
    *,
    inventory: Path | None = None,
    limit: str | None = None,
    on_start: Callable[[Artifact | None, list[Host]], None] = lambda a, h: None,
    on_result: Callable[[HostResult], None] = lambda r: None,
) -> FleetResult:
    """Deploy ``cfg.model`` to ``targets`` plus the hosts of ``inventory`` (narrowed by
    ``limit``), ``cfg.parallel`` at a time in ``cfg.batch`` canary batches. The CLI's call::

        from mltool.deploy import DeployConfig, deploy
        fleet = deploy(["pi@kitchen.local"], DeployConfig(model="runs/train/fire-1"))
        print(fleet.counts(), fleet.exit_code())
    """
    hosts = [Host(t, t) for t in targets]
    if inventory is not None:
        hosts += load_inventory(Path(inventory))
    if not hosts:
        raise ConfigError("no targets given", "pass [USER@]HOST[:PORT] or --inventory FILE")
    hosts = apply_limit(hosts, limit)
    cfg.validate()
    batch_sizes(cfg.batch, len(hosts))
    from mltool.deploy.ssh import parse_target

    for h in hosts:  # every target resolves before any host is touched: no half-done rollout
        parse_target(h.spec, port=cfg.ssh.port, identity=cfg.ssh.identity)
    if cfg.model is None and not cfg.setup:
        raise ConfigError("no model given", "pass a .tflite file or run directory after the targets (or --setup alone)")
    if cfg.runtime is not None:
        from mltool.deploy.setup import check_runtime_spec

        if not cfg.setup:
            raise ConfigError("--runtime pins the runtime --setup installs", "add --setup")
        check_runtime_spec(cfg.runtime)
    artifact = resolve_artifact(Path(cfg.model), cfg.name) if cfg.model is not None else None
    on_start(artifact, hosts)
    fleet = rollout(hosts, cfg, artifact, on_result=on_result)
    fleet.artifact = artifact
    return fleet


def rollout(hosts: list[Host], cfg: DeployConfig, artifact: Artifact | None, *,
            on_result: Callable[[HostResult], None] = lambda r: None,
            run_batch: Callable[[list[Host]], Iterable[HostResult]] | None = None) -> FleetResult:
    """Canary batches with the one stop rule. ``run_batch`` deploys one batch (default: SSH,
    ``cfg.parallel`` hosts at a time; the MQTT pull controller passes its own)."""
    parallel, batch, max_fail_pct = cfg.parallel, cfg.batch, cfg.max_fail_pct
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel} must be at least 1", "use --parallel 5")
    sizes = batch_sizes(batch, len(hosts))
    results: list[HostResult] = []
    failed = 0
    start = 0
    stopped = False
    for bi, size in enumerate(sizes):
        group = hosts[start : start + size]
        start += size
        for r in (run_batch or (lambda g: _ssh_batch(g, cfg, artifact)))(group):
            results.append(r)
            on_result(r)
            failed += r.status in ("failed", "unreachable", "rolled_back")
        if failed and 100.0 * failed / len(hosts) > max_fail_pct and start < len(hosts):
            stopped = True
            for h in hosts[start:]:
                r = HostResult(host=h.name, status="skipped", message=f"rollout stopped after batch {bi + 1}: "
                               f"{failed} of {len(hosts)} hosts failed (> --max-fail-pct {max_fail_pct:g})")
                results.append(r)
                on_result(r)
            break
    return FleetResult(results, sizes, stopped)


def _ssh_batch(group: list[Host], cfg: DeployConfig, artifact: Artifact | None) -> Iterable[HostResult]:
    with ThreadPoolExecutor(max_workers=min(cfg.parallel, len(group))) as pool:
        yield from pool.map(lambda h: _named(deploy_host(h.spec, cfg, artifact), h), group)


def _named(r: HostResult, h: Host) -> HostResult:
    if h.name != h.spec:
        r.host = f"{h.name} ({r.host})"
    return r
