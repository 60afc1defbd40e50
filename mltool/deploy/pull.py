"""Pull deploys through the MQTT broker: the controller side (``mltool deploy mqtt://broker/PREFIX MODEL``).

The broker is the only server. Topics under the URL's PREFIX::

    PREFIX/agents/DEVICE/desired/NAME   retained, written by the controller: the release a device should run
    PREFIX/agents/DEVICE/state          retained, written by the agent: labels, arch, runtime, each model's state
    PREFIX/agents/DEVICE/availability   retained "online" / "offline" (the agent's last will)
    PREFIX/releases/NAME                retained, written by the controller: release history (for rollback)

A desired message is small (AWS IoT Core caps messages at 128 KB): the model goes over HTTP(S)
and is trusted only through the SHA-256 and size in the message. The fleet, its labels and every
device's state are rebuilt from the retained messages, so the controller keeps no database.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mltool.deploy.errors import DeployError
from mltool.deploy.host import Artifact, DeployConfig, HostResult, resolve_artifact
from mltool.errors import ConfigError
from mltool.report.config import MqttConfig, MqttOptions, ReportError, mask_url

HISTORY = 10  # releases kept in PREFIX/releases/NAME
TERMINAL = ("ok", "failed", "rolled_back")


def desired_topic(prefix: str, device: str, name: str) -> str:
    return f"{prefix}/agents/{device}/desired/{name}"


def state_topic(prefix: str, device: str) -> str:
    return f"{prefix}/agents/{device}/state"


def availability_topic(prefix: str, device: str) -> str:
    return f"{prefix}/agents/{device}/availability"


def releases_topic(prefix: str, name: str) -> str:
    return f"{prefix}/releases/{name}"


def is_mqtt_url(value: str) -> bool:
    return value.startswith(("mqtt://", "mqtts://"))


# --------------------------------------------------------------------------- one MQTT connection


def connect(cfg: MqttConfig, client_id: str, *, will: tuple[str, str] | None = None,
            on_connect: Callable[[Any], None] | None = None, on_message: Callable[[str, bytes, bool], None] | None = None,
            wait_s: float = 10.0, background_ok: bool = False, log: Callable[[str], None] = lambda m: None) -> Any:
    """A started paho client (its network thread running) with the same URL, TLS and credential
    handling as ``infer --mqtt``. Refused credentials or TLS failures raise :class:`ReportError`;
    an unreachable broker too, unless ``background_ok`` (an agent keeps retrying)."""
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError:
        raise ReportError("this needs paho-mqtt 2.x, which is not installed", "pip install 'mltool[mqtt]'") from None
    from mltool.report.publisher import _ssl_reason

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    c.reconnect_delay_set(1, 10)
    c.max_inflight_messages_set(1000)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password)
    where = f"MQTT broker {cfg.url_masked}"
    if cfg.tls:
        try:
            c.tls_set(ca_certs=str(cfg.ca) if cfg.ca else None, certfile=str(cfg.cert) if cfg.cert else None,
                      keyfile=str(cfg.key) if cfg.key else None)
        except (ssl.SSLError, OSError) as exc:
            raise ReportError(f"cannot use the TLS files for {cfg.url_masked}: {_ssl_reason(exc)}",
                              "--mqtt-ca, --mqtt-cert and --mqtt-key take PEM files") from None
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    first = threading.Event()
    refused: list[str] = []

    def _on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not first.is_set():
                refused.append(str(reason))
                first.set()
            return
        if on_connect is not None:
            on_connect(client)
        first.set()

    def _on_message(client: Any, userdata: Any, msg: Any) -> None:
        if on_message is not None:
            on_message(msg.topic, msg.payload, bool(msg.retain))

    c.on_connect = _on_connect
    c.on_message = _on_message
    try:
        c.connect(cfg.host, cfg.port, keepalive=30)
    except ssl.SSLError as exc:
        raise ReportError(f"TLS handshake with {where} failed: {_ssl_reason(exc)}",
                          "pass the broker's CA with --mqtt-ca (and --mqtt-cert/--mqtt-key for a client certificate)") from None
    except OSError as exc:
        if not background_ok:
            raise ReportError(f"{where} is unreachable ({exc.strerror or exc})", "check the broker's host and port") from None
        log(f"{where} is unreachable ({exc.strerror or exc}): retrying in the background")
        c.connect_async(cfg.host, cfg.port, keepalive=30)
        c.loop_start()
        return c
    c.loop_start()
    if not first.wait(wait_s):
        if not background_ok:
            c.loop_stop()
            raise ReportError(f"{where} did not answer within {wait_s:.0f} s", "check the broker is an MQTT broker")
        log(f"{where} did not answer within {wait_s:.0f} s: retrying in the background")
    elif refused:
        c.disconnect()
        c.loop_stop()
        raise ReportError(f"{where} refused the connection: {refused[0]}",
                          "check the user name and password (MLTOOL_MQTT_USERNAME/MLTOOL_MQTT_PASSWORD or "
                          "--mqtt-credentials) and the broker's ACL")
    return c


# --------------------------------------------------------------------------- the fleet, from retained messages


@dataclass
class Agent:
    device: str
    state: dict[str, Any] = field(default_factory=dict)
    online: bool | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.state.get("labels") or {}).items()}

    def model(self, name: str) -> dict[str, Any]:
        return (self.state.get("models") or {}).get(name) or {}


class FleetView:
    """A controller's connection: every agent's retained state and availability, kept current."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.agents: dict[str, Agent] = {}
        self.releases: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._barrier = f"{cfg.prefix}/controller/{uuid.uuid4().hex}"
        self._synced = False
        self.dirty: set[str] = set()  # devices whose state changed since the controller last looked
        # What this controller published (retained): published again after a reconnect, so a
        # broker that was killed (and lost what it had not saved) still gets the rollout.
        self.published: dict[str, bytes] = {}
        p = cfg.prefix

        def on_connect(client: Any) -> None:
            for topic, payload in list(self.published.items()):
                client.publish(topic, payload, qos=1, retain=True)
            client.subscribe([(f"{p}/agents/+/state", 1), (f"{p}/agents/+/availability", 1),
                              (f"{p}/releases/+", 1), (self._barrier, 1)])
            # Retained messages come right after the subscription: this one comes after them.
            client.publish(self._barrier, b"sync", qos=1)

        self.client = connect(cfg, f"mltool-controller-{uuid.uuid4().hex[:8]}", on_connect=on_connect, on_message=self._on_message)
        with self._cond:
            if not self._cond.wait_for(lambda: self._synced, 15):
                self.close()
                raise ReportError(f"MQTT broker {cfg.url_masked} did not deliver the fleet's retained state within 15 s",
                                  "check the broker's ACL lets this user read PREFIX/agents/# and write PREFIX/controller/#")

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        parts = topic[len(self.cfg.prefix) + 1:].split("/")
        with self._cond:
            if topic == self._barrier:
                self._synced = True
            elif len(parts) == 3 and parts[0] == "agents":
                a = self.agents.setdefault(parts[1], Agent(parts[1]))
                if parts[2] == "state":
                    self.dirty.add(parts[1])
                    try:
                        doc = json.loads(payload) if payload else {}
                        a.state = doc if isinstance(doc, dict) else {}
                    except ValueError:
                        a.state = {}
                elif parts[2] == "availability":
                    a.online = payload == b"online"
                    self.dirty.add(parts[1])
            elif len(parts) == 2 and parts[0] == "releases":
                try:
                    self.releases[parts[1]] = json.loads(payload) if payload else {}
                except ValueError:
                    pass
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def select(self, limit: str | None) -> list[Agent]:
        """Agents with a state report, narrowed by ``--limit k=v,...`` (all must match; a bare
        word matches the device name)."""
        agents = [a for a in self.agents.values() if a.state]
        if not limit:
            return sorted(agents, key=lambda a: a.device)
        wanted = parse_limit(limit)
        chosen = [a for a in agents if all((a.device == v) if k is None else (a.labels.get(k) == v) for k, v in wanted)]
        if not chosen and agents:
            known = sorted({f"{k}={v}" for a in agents for k, v in a.labels.items()})
            raise ConfigError(f"--limit {limit} matches none of the {len(agents)} agents",
                              f"their labels: {', '.join(known) or 'none'}")
        return sorted(chosen, key=lambda a: a.device)

    def publish(self, topic: str, doc: dict[str, Any] | None) -> Any:
        payload = json.dumps(doc).encode() if doc is not None else b""
        self.published[topic] = payload
        return self.client.publish(topic, payload, qos=1, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _settle(info: Any, timeout: float = 10.0) -> None:
    """Wait (bounded) for the broker's acknowledgement. Disconnected now: paho keeps the message,
    and FleetView publishes it again on reconnect anyway."""
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):
        pass


def parse_limit(limit: str) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for item in (x.strip() for x in limit.split(",")):
        if not item:
            continue
        k, sep, v = item.partition("=")
        out.append((k.strip(), v.strip()) if sep else (None, item))
    if not out:
        raise ConfigError(f"--limit '{limit}' selects nothing", "e.g. --limit type=camera,site=b")
    return out


# --------------------------------------------------------------------------- the artifact over HTTP


def _strip_userinfo(url: str) -> tuple[str, dict[str, str]]:
    import base64
    from urllib.parse import unquote

    u = urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise ConfigError(f"'{mask_url(url)}' is not an http:// or https:// URL", "e.g. --upload https://files.example.com/models")
    headers = {}
    if u.username:
        token = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    netloc = u.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if u.port:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme, netloc, u.path.rstrip("/"), "", "")), headers


def artifact_url(base: str, art: Artifact) -> str:
    clean, _ = _strip_userinfo(base)
    return f"{clean}/{quote(art.name)}/{art.release_id}/model.tflite"


def upload(base: str, art: Artifact, timeout: float = 60.0) -> str:
    """PUT the model at BASE/NAME/RELEASE/model.tflite (skipped when a HEAD finds it there with
    its size). Credentials in BASE go in an Authorization header, never to the agents."""
    import urllib.error
    import urllib.request

    clean, headers = _strip_userinfo(base)
    url = f"{clean}/{quote(art.name)}/{art.release_id}/model.tflite"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers), timeout=timeout) as r:
            if r.status == 200 and r.headers.get("Content-Length") == str(art.size):
                return url
    except (urllib.error.URLError, OSError):
        pass
    req = urllib.request.Request(url, data=art.path.read_bytes(), method="PUT",
                                 headers={**headers, "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
    except urllib.error.HTTPError as exc:
        raise DeployError(f"--upload {url}: the server answered {exc.code} {exc.reason}",
                          "the endpoint must accept PUT (nginx dav_methods PUT, WebDAV, an S3 presigned URL)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DeployError(f"--upload {url}: {reason}", "check the URL and that the server is up") from None
    return url


# --------------------------------------------------------------------------- deploy, releases, rollback


@dataclass
class PullConfig:
    url: str
    mqtt: MqttOptions = field(default_factory=MqttOptions)
    limit: str | None = None
    wait: float = 300.0
    upload: str | None = None
    artifacts: str | None = None
    keep: int = 3
    name: str | None = None

    def resolve(self) -> MqttConfig:
        import dataclasses

        if not self.wait > 0:
            raise ConfigError(f"--wait {self.wait:g} must be positive", "e.g. --wait 300 (seconds)")
        opts = dataclasses.replace(self.mqtt, url=self.url, device=self.mqtt.device or "controller")
        return opts.resolve()


def _desired(art: Artifact, url: str, rollout: str, keep: int) -> dict[str, Any]:
    manifest = art.manifest()
    return {"name": art.name, "release": art.release_id, "sha256": art.sha256, "size": art.size, "url": url,
            "rollout": rollout, "keep": keep, "manifest": manifest, "published_at": time.time()}


def result_of(agent: Agent, name: str, rollout: str) -> HostResult:
    """What an agent's retained state says about one rollout: changed | unchanged | failed |
    rolled_back | pending (no answer to this rollout yet)."""
    m = agent.model(name)
    r = HostResult(host=agent.device, status="pending", release=m.get("release"), previous=m.get("previous"))
    if m.get("rollout") != rollout or m.get("state") not in TERMINAL:
        st = m.get("state") if m.get("rollout") == rollout else None
        r.message = ("offline" if agent.online is False else "no answer yet") + (f" (last: {st})" if st else "")
        return r
    r.duration_s = float(m.get("seconds") or 0.0)
    if m["state"] == "ok":
        r.status = "changed" if m.get("changed") else "unchanged"
        r.message = (f"current -> {m['release']}" + (f" (was {m['previous']})" if m.get("previous") else "")) if m.get("changed") \
            else "already current"
        r.bytes_sent = int(m.get("downloaded") or 0)
    else:
        r.status = m["state"]
        r.message = m.get("error") or m["state"]
    r.probe = m.get("probe")
    return r


def _run_batches(view: FleetView, agents: list[Any], cfg: DeployConfig, name: str, make_desired: Callable[[Agent], dict[str, Any]],
                 rollout: str, wait: float, on_result: Callable[[HostResult], None]) -> Any:
    """Per batch: publish each device's desired state, wait until each answers (or ``wait``
    passes: pending), then the same stop rule as the SSH rollout (``fleet.rollout``)."""
    from mltool.deploy.fleet import Host
    from mltool.deploy.fleet import rollout as run_rollout

    by_name = {a.device: a for a in agents}

    def run_batch(group: list[Host]) -> Iterable[HostResult]:
        waiting = {h.name for h in group}

        def done() -> bool:  # under the view's lock; looks only at devices whose state changed (O(messages), not O(N^2))
            for d in view.dirty & waiting:
                if result_of(by_name[d], name, rollout).status != "pending":
                    waiting.discard(d)
            view.dirty.clear()
            return not waiting

        with view._cond:
            view.dirty |= waiting  # answers that came before the publish (e.g. retained ones) count too
        mids = [view.publish(desired_topic(view.cfg.prefix, h.name, name), make_desired(by_name[h.name])) for h in group]
        for mi in mids:
            _settle(mi)
        view.wait_for(done, wait)
        with view._cond:
            return [result_of(by_name[h.name], name, rollout) for h in group]

    hosts = [Host(a.device, a.device) for a in agents]
    return run_rollout(hosts, cfg, None, on_result=on_result, run_batch=run_batch)


def deploy_pull(pc: PullConfig, model: Path, cfg: DeployConfig | None = None, *,
                on_start: Callable[[Artifact, list[Agent]], None] = lambda a, h: None,
                on_result: Callable[[HostResult], None] = lambda r: None) -> Any:
    """Publish ``model`` as the desired release of the agents ``pc.limit`` selects, batch by
    batch. Returns a :class:`~mltool.deploy.fleet.FleetResult` (exit code 5 when devices are
    still pending: their desired state stays retained and they converge when they come back)."""
    cfg = cfg or DeployConfig()
    cfg.validate()
    mcfg = pc.resolve()
    if (pc.upload is None) == (pc.artifacts is None):
        raise ConfigError("a pull deploy needs --upload URL or --artifacts URL (one of them)",
                          "--upload PUTs the model to URL/NAME/RELEASE/model.tflite; --artifacts says it is already there")
    art = resolve_artifact(Path(model), pc.name)
    from mltool.deploy.fleet import batch_sizes

    view = FleetView(mcfg)
    try:
        agents = view.select(pc.limit)
        if not agents:
            raise DeployError(f"no agent has reported to {mcfg.url_masked}",
                              "start `mltool agent` on the devices (or check the prefix and the broker's ACL)")
        batch_sizes(cfg.batch, len(agents))
        url = upload(pc.upload, art) if pc.upload else artifact_url(pc.artifacts or "", art)
        on_start(art, agents)
        rollout = uuid.uuid4().hex[:12]
        desired = _desired(art, url, rollout, pc.keep)
        _record_release(view, art.name, desired)
        fleet = _run_batches(view, agents, cfg, art.name, lambda a: desired, rollout, pc.wait, on_result)
        fleet.artifact = art
        return fleet
    finally:
        view.close()


def _record_release(view: FleetView, name: str, desired: dict[str, Any]) -> None:
    hist = [h for h in (view.releases.get(name) or {}).get("history", []) if h.get("release") != desired["release"]]
    entry = {k: desired[k] for k in ("release", "sha256", "size", "url", "manifest", "published_at")}
    doc = {"name": name, "current": desired["release"], "history": (hist + [entry])[-HISTORY:]}
    view.releases[name] = doc
    _settle(view.publish(releases_topic(view.cfg.prefix, name), doc))


def fleet_releases(pc: PullConfig, name: str | None = None) -> dict[str, Any]:
    """Release history and every selected agent's state, from the retained messages."""
    view = FleetView(pc.resolve())
    try:
        agents = view.select(pc.limit)
        names = [name] if name else sorted(view.releases)
        return {"broker": view.cfg.url_masked, "models": {n: view.releases.get(n, {}) for n in names},
                "agents": [{"device": a.device, "online": a.online, "labels": a.labels, "arch": a.state.get("arch"),
                            "runtime": a.state.get("runtime"),
                            "models": {n: m for n, m in (a.state.get("models") or {}).items() if not name or n == name}}
                           for a in agents]}
    finally:
        view.close()


def fleet_rollback(pc: PullConfig, name: str | None = None, to: str | None = None, cfg: DeployConfig | None = None, *,
                   on_result: Callable[[HostResult], None] = lambda r: None) -> Any:
    """Publish the release before the current one (or ``to``) as the desired state: the agents
    switch back (or fetch it again if they pruned it)."""
    cfg = cfg or DeployConfig()
    view = FleetView(pc.resolve())
    try:
        if name is None:
            if len(view.releases) != 1:
                raise ConfigError(f"the fleet has {len(view.releases)} models ({', '.join(sorted(view.releases)) or 'none'})",
                                  "pass --name")
            name = next(iter(view.releases))
        doc = view.releases.get(name)
        if not doc or not doc.get("history"):
            raise DeployError(f"no release history of {name} on {view.cfg.url_masked}", "deploy it with `mltool deploy mqtt://...` first")
        ids = [h["release"] for h in doc["history"]]
        if to is None:
            cur = doc.get("current")
            if cur not in ids or ids.index(cur) == 0:
                raise DeployError(f"{name} has no release before {cur} in the fleet's history", f"pass --to ID (one of {', '.join(ids)})")
            entry = doc["history"][ids.index(cur) - 1]
        else:
            matches = [h for h in doc["history"] if h["release"].startswith(to)]
            if len(matches) != 1:
                raise ConfigError(f"release '{to}' {'is ambiguous' if matches else 'is not in the history'} of {name}",
                                  f"choose one of: {', '.join(ids)}")
            entry = matches[0]
        agents = [a for a in view.select(pc.limit) if a.model(name)]
        if not agents:
            raise DeployError(f"no agent reports a release of {name}", "check --limit and `mltool releases URL`")
        rollout = uuid.uuid4().hex[:12]
        desired = {"name": name, **{k: entry[k] for k in ("release", "sha256", "size", "url", "manifest")}, "rollout": rollout,
                   "keep": pc.keep, "published_at": time.time(), "rollback": True}
        view.releases[name] = dict(doc, current=entry["release"])
        _settle(view.publish(releases_topic(view.cfg.prefix, name), view.releases[name]))
        fleet = _run_batches(view, agents, cfg, name, lambda a: desired, rollout, pc.wait, on_result)
        return fleet
    finally:
        view.close()
