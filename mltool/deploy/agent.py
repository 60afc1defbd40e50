"""The pull agent (``mltool agent mqtt[s]://broker/PREFIX``): runs on the device, keeps one outbound
MQTT connection, and makes the device's releases what the retained desired state says.

For each desired release: download it over HTTP(S) (resumed with ``Range``, bounded by the
size in the message, with timeouts), verify its size and SHA-256 against the message, then the
SAME device-side steps ``mltool deploy`` runs over SSH (:mod:`mltool.deploy.remote_ops`:
prepare, verify, probe with the device's runtime, atomic switch, prune, under the model's lock),
run as a local process exactly as sshd would run them. Then reload/restart the model's service
and watch its health for a grace period; a failed probe never switches, a failed health check
switches back. The state is reported retained; availability is the last will.

Nothing in an artifact is executed: it is a .tflite file, checked by hash, loaded by the
runtime's interpreter only in the probe.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mltool.deploy import pull
from mltool.errors import ConfigError, MltoolError
from mltool.layout import MODEL_FILE, RELEASE_ID_DIGITS, DeviceLayout
from mltool.report.config import MqttConfig

_OPS = Path(__file__).with_name("remote_ops.py")
_PROBE = Path(__file__).with_name("probe_script.py")
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class AgentError(MltoolError):
    """One desired release could not be applied (reported as the model's error)."""


@dataclass
class AgentConfig:
    mqtt: MqttConfig
    labels: dict[str, str] = field(default_factory=dict)
    root: str = "~/mltool"
    allow_http: bool = False
    service: str | None = None  # a systemd unit to reload/restart after a switch (e.g. mltool-digits.service)
    health_url: str | None = None  # polled during the grace period: 2xx = healthy
    grace_s: float = 10.0
    probe: bool = True
    max_bytes: int = 1 << 30  # the largest model a desired message may announce
    http_timeout: float = 30.0
    retries: int = 3

    @property
    def layout(self) -> DeviceLayout:
        return DeviceLayout(os.path.expanduser(self.root))


def parse_labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not v.strip() or any(c in item for c in ",+#/"):
            raise ConfigError(f"--label '{item}' is not KEY=VALUE", "e.g. --label type=camera --label site=b (no , / + #)")
        out[k.strip()] = v.strip()
    return out


def check_artifact_url(url: str, allow_http: bool) -> None:
    u = urlsplit(url)
    if u.scheme == "https":
        return
    if u.scheme != "http":
        raise AgentError(f"artifact URL scheme '{u.scheme}' is not http(s)", "publish an https:// URL")
    host = u.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not (allow_http or loopback):
        raise AgentError(f"plain http:// artifact URL refused ({u.scheme}://{host}{u.path})",
                         "serve artifacts over https://, or start the agent with --allow-http on a trusted network")


def _runtime() -> str | None:
    import importlib.metadata
    import importlib.util

    for mod, dist in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")):
        if importlib.util.find_spec(mod) is not None:
            try:
                return f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                return dist
    return None


def download(url: str, part: Path, sha256: str, size: int, *, timeout: float = 30.0, retries: int = 3,
             on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Fetch ``url`` into ``part``, resuming what is already there with ``Range``; never more than
    ``size`` bytes. Raises :class:`AgentError` unless the file ends with exactly ``size`` bytes
    and ``sha256``. Returns the bytes transferred now."""
    import http.client
    import urllib.error
    import urllib.request

    got = 0
    last: str | None = None
    for attempt in range(max(1, retries)):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            break
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                append = have > 0 and r.status == 206 and (r.headers.get("Content-Range") or "").startswith(f"bytes {have}-")
                pos = have if append else 0
                length = r.headers.get("Content-Length")
                if length is not None and length.isdigit() and pos + int(length) > size:
                    raise AgentError(f"{url} is {pos + int(length)} bytes, the desired state says {size}: refused",
                                     "publish the release again (mltool deploy) so the message and the file agree")
                with open(part, "ab" if append else "wb") as fh:
                    while True:
                        chunk = r.read(1 << 16)
                        if not chunk:
                            break
                        pos += len(chunk)
                        got += len(chunk)
                        if pos > size:
                            raise AgentError(f"{url} sends more than the {size} bytes the desired state says: refused",
                                             "publish the release again so the message and the file agree")
                        fh.write(chunk)
                        on_progress(pos)
            if pos == size:
                break
            last = f"the server closed after {pos} of {size} bytes"
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.reason}"
            if exc.code in (401, 403, 404, 410):
                break
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            last = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        time.sleep(min(2 ** attempt, 10))
    have = part.stat().st_size if part.exists() else 0
    if have != size:
        raise AgentError(f"download of {url} failed ({last or 'incomplete'}; {have} of {size} bytes)",
                         "check the artifact server; the agent resumes from here on the next try")
    h = hashlib.sha256()
    with open(part, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != sha256:
        part.unlink()
        raise AgentError(f"SHA-256 mismatch for {url}: expected {sha256}, got {h.hexdigest()}: refused",
                         "the file at that URL is not the release the desired state names; publish it again")
    return got


class Agent:
    """One device's agent. ``executor`` runs its release work (default: its own thread); a
    simulated fleet shares one pool between many agents."""

    def __init__(self, cfg: AgentConfig, *, log: Callable[[str], None] = lambda m: None, executor: Executor | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.device = cfg.mqtt.device
        self.layout = cfg.layout
        self.dir = Path(self.layout.root) / "agent"
        self.state_file = self.dir / "state.json"
        self.models: dict[str, dict[str, Any]] = {}
        try:
            self.models = json.loads(self.state_file.read_text()).get("models", {})
        except (OSError, ValueError):
            pass
        self._executor = executor
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._busy = False
        self._idle = threading.Event()
        self._idle.set()
        self.client: Any = None
        self._info = {"arch": platform.machine(), "runtime": _runtime(), "python": platform.python_version()}

    # ------------------------------------------------------------------ MQTT
    def start(self) -> None:
        p, dev = self.cfg.mqtt.prefix, self.device

        def on_connect(client: Any) -> None:
            client.publish(pull.availability_topic(p, dev), b"online", qos=1, retain=True)
            client.subscribe(f"{p}/agents/{dev}/desired/+", qos=1)
            self._publish_state(client)

        # the login is part of the client id: a client with other credentials that claims this
        # device's name (refused by an ACL) must not take over the real device's connection, whose
        # last will would then say "offline" each time (MQTT closes the older of two same-id clients)
        user = self.cfg.mqtt.username
        client_id = f"mltool-agent-{dev}" + (f"-{user}" if user and user != dev else "")
        self.client = pull.connect(self.cfg.mqtt, client_id, will=(pull.availability_topic(p, dev), "offline"),
                                   on_connect=on_connect, on_message=self._on_message, background_ok=True, log=self.log)

    def stop(self) -> None:
        if self.client is not None:
            self.client.publish(pull.availability_topic(self.cfg.mqtt.prefix, self.device), b"offline", qos=1,
                                retain=True).wait_for_publish(2)
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        name = topic.rsplit("/", 1)[-1]
        if not payload:
            return  # desired state cleared
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError
        except ValueError:
            self._record(name, {"state": "failed", "error": "the desired state is not a JSON object"})
            return
        with self._lock:
            self._pending[name] = doc  # the newest desired state per model wins
            if self._busy:
                return
            self._busy = True
            self._idle.clear()
        if self._executor is not None:
            self._executor.submit(self._drain)
        else:
            threading.Thread(target=self._drain, name=f"mltool-agent-{self.device}", daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._busy = False
                    self._idle.set()
                    return
                name, doc = self._pending.popitem()
            try:
                self.apply(name, doc)
            except Exception as exc:  # never let one release kill the agent
                self._record(name, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:300],
                                    "rollout": doc.get("rollout")})

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def state_doc(self) -> dict[str, Any]:
        return {"device": self.device, "labels": self.cfg.labels, **self._info, "root": self.layout.root,
                "models": self.models, "ts": time.time()}

    def _publish_state(self, client: Any = None) -> None:
        c = client or self.client
        if c is not None:
            c.publish(pull.state_topic(self.cfg.mqtt.prefix, self.device), json.dumps(self.state_doc()).encode(), qos=1, retain=True)

    def _record(self, name: str, rec: dict[str, Any]) -> None:
        with self._lock:
            m = self.models.setdefault(name, {})
            m.update(rec, updated=time.time())
            if "changed" not in rec:
                m.pop("changed", None)
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"models": self.models}))
            os.replace(tmp, self.state_file)
        self._publish_state()
        if rec.get("state") != "downloading":
            self.log(f"{name}: {rec.get('state')} release {rec.get('release') or '-'}"
                     + (f" ({rec['error']})" if rec.get("error") else ""))

    # ------------------------------------------------------------------ the release steps
    def op(self, op: str, name: str | None = None, timeout: float = 600, **args: Any) -> dict[str, Any]:
        """One remote_ops step, as a local process (the same script deploy runs over SSH)."""
        payload = {**self.layout.remote_args(name), **({"name": name} if name else {}), **args}
        try:
            r = subprocess.run([sys.executable, "-I", "-S", str(_OPS), op, json.dumps(payload)], capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AgentError(f"release step '{op}' did not finish within {timeout:.0f} s", "the device may be overloaded") from None
        if r.returncode != 0:
            raise AgentError((r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1],
                             f"release step '{op}' failed")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def _validate(self, name: str, d: dict[str, Any]) -> None:
        if not name or set(name) - _NAME_OK or name.startswith("."):
            raise AgentError(f"model name '{name}' is unsafe in a path", "publish with letters, digits, - _ .")
        sha, size, rid, url = d.get("sha256"), d.get("size"), d.get("release"), d.get("url")
        if not isinstance(sha, str) or len(sha) != 64 or set(sha) - set("0123456789abcdef"):
            raise AgentError("the desired state has no valid sha256", "publish it with `mltool deploy mqtt://...`")
        if rid != sha[:RELEASE_ID_DIGITS]:
            raise AgentError(f"release '{rid}' is not the first {RELEASE_ID_DIGITS} digits of its sha256", "publish it again")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= self.cfg.max_bytes:
            raise AgentError(f"the desired size {size!r} is not from 1 to {self.cfg.max_bytes} bytes",
                             "raise the agent's --max-mb for larger models")
        if not isinstance(url, str):
            raise AgentError("the desired state has no artifact URL", "publish it with --upload or --artifacts")
        check_artifact_url(url, self.cfg.allow_http)

    def apply(self, name: str, d: dict[str, Any]) -> None:
        """Make release ``d`` current for model ``name`` (idempotent)."""
        t0 = time.monotonic()
        rollout = d.get("rollout")
        rid = d.get("release")
        m = self.models.get(name, {})
        if m.get("rollout") == rollout and m.get("state") in pull.TERMINAL and rollout is not None:
            if m["state"] != "ok" or self._current(name) == rid:
                return  # this rollout was handled (a reconnect redelivers the retained message)
        base = {"rollout": rollout, "desired": rid, "error": None, "probe": None, "downloaded": 0}
        try:
            self._validate(name, d)
        except AgentError as exc:
            self._record(name, {**base, "state": "failed", "error": exc.one_line(), "release": self._current(name),
                                "seconds": round(time.monotonic() - t0, 3)})
            return
        sha, size = d["sha256"], d["size"]
        try:
            prep = self.op("prepare", name, id=rid, sha256=sha, size=size)
            if prep.get("status") == "no_space":
                raise AgentError(f"{prep['free_bytes']} bytes free; this {size}-byte model needs {prep['need_bytes']}",
                                 "free space on the device; nothing was changed")
            current = prep["current"]
            if prep["present"] and current == rid:
                self._record(name, {**base, "state": "ok", "changed": False, "release": rid,
                                    "previous": m.get("previous") if m.get("release") == rid else None,
                                    "seconds": round(time.monotonic() - t0, 3)})
                return
            tmp = prep["tmp"]
            if tmp:
                self._record(name, {**base, "state": "downloading", "release": current})
                cache = self.dir / "downloads"
                cache.mkdir(parents=True, exist_ok=True)
                part = cache / f"{sha}.part"
                try:
                    base["downloaded"] = download(d["url"], part, sha, size, timeout=self.cfg.http_timeout,
                                                  retries=self.cfg.retries)
                    os.replace(part, Path(tmp) / f"{MODEL_FILE}.part")
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                for old in cache.glob("*.part"):  # other releases' leftovers
                    old.unlink(missing_ok=True)
            manifest = dict(d.get("manifest") or {}, id=rid, name=name, sha256=sha, size=size,
                            deployed_by=f"agent@{self.device}")
            done = self.op("finish", name, id=rid, sha256=sha, tmp=tmp, manifest=manifest,
                           keep=max(1, int(d.get("keep") or 3)), token=str(rollout), budget_s=300,
                           probe_source=_PROBE.read_text() if self.cfg.probe else None)
        except AgentError as exc:
            self._record(name, {**base, "state": "failed", "error": exc.one_line(), "release": self._current(name),
                                "seconds": round(time.monotonic() - t0, 3)})
            return
        st = done["status"]
        if st == "probe_failed":  # nothing was switched: the previous release stays current
            self._record(name, {**base, "state": "rolled_back", "release": done.get("current"), "previous": None,
                                "error": f"probe failed: {done['message']}", "seconds": round(time.monotonic() - t0, 3)})
            return
        if st in ("timed_out", "gone"):
            self._record(name, {**base, "state": "failed", "release": done.get("current"),
                                "error": done.get("message") or st, "seconds": round(time.monotonic() - t0, 3)})
            return
        previous = done.get("previous") if st == "changed" else m.get("previous")
        err = self._activate(name) if st in ("changed", "repaired") else None
        if err is not None and previous:
            try:
                self.op("switch", name, id=previous)
                self._activate(name)
            except AgentError as exc:
                err += f"; switching back failed too: {exc.one_line()}"
            self._record(name, {**base, "state": "rolled_back", "release": self._current(name), "previous": rid,
                                "error": err, "probe": done.get("probe"), "seconds": round(time.monotonic() - t0, 3)})
            return
        self._record(name, {**base, "state": "ok" if err is None else "failed", "changed": st != "unchanged",
                            "release": rid, "previous": previous, "error": err, "probe": done.get("probe"),
                            "seconds": round(time.monotonic() - t0, 3)})

    def _current(self, name: str) -> str | None:
        try:
            return os.path.basename(os.readlink(self.layout.current(name)).rstrip("/"))
        except OSError:
            return None

    def _activate(self, name: str) -> str | None:
        """Reload (serve units: they follow ``current``) or restart the service, then watch its
        health for the grace period. Returns an error, or None when healthy."""
        if self.cfg.service:
            sc = ["systemctl"] + ([] if os.geteuid() == 0 else ["--user"])
            unit = self.cfg.service
            show = subprocess.run([*sc, "show", unit, "-p", "ExecReload", "--value"], capture_output=True, text=True)
            action = "reload" if show.returncode == 0 and show.stdout.strip() else "restart"
            r = subprocess.run([*sc, action, unit], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return f"systemctl {action} {unit} failed: {(r.stderr.strip() or 'exit %d' % r.returncode).splitlines()[-1]}"
        if not (self.cfg.service or self.cfg.health_url):
            return None
        deadline = time.monotonic() + self.cfg.grace_s
        while True:
            err = self._health()
            if err is not None:
                return err
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(1.0, max(0.05, self.cfg.grace_s / 10)))

    def _health(self) -> str | None:
        if self.cfg.service:
            sc = ["systemctl"] + ([] if os.geteuid() == 0 else ["--user"])
            r = subprocess.run([*sc, "is-active", self.cfg.service], capture_output=True, text=True)
            if r.stdout.strip() not in ("active", "reloading", "activating"):
                return f"{self.cfg.service} is {r.stdout.strip() or 'unknown'} after the switch"
        if self.cfg.health_url:
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(self.cfg.health_url, timeout=5) as r:
                    r.read()
            except urllib.error.HTTPError as exc:
                return f"health check {self.cfg.health_url} answered {exc.code} after the switch"
            except (urllib.error.URLError, OSError) as exc:
                return f"health check {self.cfg.health_url} failed after the switch ({getattr(exc, 'reason', exc)})"
        return None


def run_agent(cfg: AgentConfig, log: Callable[[str], None] = lambda m: None, stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set (the CLI: until SIGTERM/Ctrl-C)."""
    agent = Agent(cfg, log=log)
    agent.start()
    log(f"agent {agent.device} on {cfg.mqtt.url_masked} (root {agent.layout.root}, labels "
        f"{','.join(f'{k}={v}' for k, v in cfg.labels.items()) or 'none'})")
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.wait_idle(30)
        agent.stop()
