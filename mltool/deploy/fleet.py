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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltool.deploy.errors import EXIT_FAILED, EXIT_UNREACHABLE
from mltool.deploy.host import Artifact, DeployConfig, HostResult, deploy_host, resolve_artifact
from mltool.errors import ConfigError, DataError, did_you_mean


@dataclass
class Host:
    name: str
    spec: str  # [user@]address[:port]
    groups: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def _spec(entry: dict[str, Any], name: str) -> str:
    addr = entry.get("address") or entry.get("ansible_host") or entry.get("host") or name
    user = entry.get("user") or entry.get("ansible_user")
    port = entry.get("port") or entry.get("ansible_port")
    return f"{user + '@' if user else ''}{addr}{':' + str(port) if port else ''}"


def load_inventory(path: Path) -> list[Host]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise DataError(f"inventory {path} does not exist", "check the path") from None
    except yaml.YAMLError as exc:
        raise DataError(f"inventory {path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the YAML syntax") from None
    if not isinstance(doc, dict):
        raise DataError(f"inventory {path} must be a mapping with 'hosts'", "see `mltool deploy --help`")
    hosts: dict[str, Host] = {}

    def add(name: str, entry: Any, group: str | None) -> None:
        entry = entry or {}
        if not isinstance(entry, dict):
            raise DataError(f"inventory {path}: host '{name}' must be a mapping", "e.g. pi1: {address: 10.0.0.5, user: pi}")
        h = hosts.setdefault(name, Host(name, _spec(entry, name)))
        h.labels |= set(entry.get("labels") or [])
        if group:
            h.groups.add(group)

    def walk_ansible(node: dict[str, Any], group: str | None) -> None:
        for name, entry in (node.get("hosts") or {}).items():
            add(name, entry, group)
        for child, sub in (node.get("children") or {}).items():
            walk_ansible(sub or {}, child)

    if "all" in doc and isinstance(doc["all"], dict):
        walk_ansible(doc["all"], None)
    else:
        for name, entry in (doc.get("hosts") or {}).items():
            add(name, entry, None)
        for group, members in (doc.get("groups") or {}).items():
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
            n = math.ceil(total * float(part[:-1]) / 100) if part.endswith("%") else int(part)
        except ValueError:
            raise ConfigError(f"--batch '{spec}' is not a list of counts or percentages", "e.g. --batch 1,25%,100%") from None
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
        if c.get("failed"):
            return EXIT_FAILED
        if c.get("unreachable") or c.get("skipped"):
            return EXIT_UNREACHABLE if c.get("unreachable") else EXIT_FAILED
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
    if cfg.model is None and not cfg.setup:
        raise ConfigError("no model given", "pass a .tflite file or run directory after the targets (or --setup alone)")
    artifact = resolve_artifact(Path(cfg.model), cfg.name) if cfg.model is not None else None
    on_start(artifact, hosts)
    fleet = rollout(hosts, cfg, artifact, on_result=on_result)
    fleet.artifact = artifact
    return fleet


def rollout(hosts: list[Host], cfg: DeployConfig, artifact: Artifact | None, *,
            on_result: Callable[[HostResult], None] = lambda r: None) -> FleetResult:
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
        with ThreadPoolExecutor(max_workers=min(parallel, len(group))) as pool:
            for r in pool.map(lambda h: _named(deploy_host(h.spec, cfg, artifact), h), group):
                results.append(r)
                on_result(r)
                failed += r.status in ("failed", "unreachable")
        if failed and 100.0 * failed / len(hosts) > max_fail_pct and start < len(hosts):
            stopped = True
            for h in hosts[start:]:
                r = HostResult(host=h.name, status="skipped", message=f"rollout stopped after batch {bi + 1}: "
                               f"{failed} of {len(hosts)} hosts failed (> --max-fail-pct {max_fail_pct:g})")
                results.append(r)
                on_result(r)
            break
    return FleetResult(results, sizes, stopped)


def _named(r: HostResult, h: Host) -> HostResult:
    if h.name != h.spec:
        r.host = f"{h.name} ({r.host})"
    return r
