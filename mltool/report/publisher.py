"""The publisher: paho-mqtt (callback API 2) in its own network thread, and one feeder thread
that moves rows from the outbox to the client and deletes them when the broker acknowledges.

Nothing here runs on the inference thread. Ordering: rows are handed to paho oldest first, at
most ``window`` unacknowledged at a time. When the connection drops, paho keeps those (QoS 1) and
re-sends them first on reconnect; the feeder hands over nothing new until they are acknowledged,
so the broker sees messages in outbox order. A process that dies loses only paho's in-memory
copy: the rows are still in the outbox and go out, oldest first, on the next start.
"""

from __future__ import annotations

import collections
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from mltool.report.config import MqttConfig, ReportError
from mltool.report.outbox import Outbox

WINDOW = 100  # unacknowledged messages handed to the client at a time
# Rounds of work start at most this often: a round wakes this thread and paho's, and each of
# them takes the GIL from the inference thread; gathering a few messages per round keeps
# those hand-overs rare (a message waits at most this long more).
LINGER_S = 0.025


class Publisher:
    def __init__(self, cfg: MqttConfig, outbox: Outbox, *, log: Callable[[str], None] = lambda m: None,
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 availability: tuple[str, str, str] | None = None) -> None:
        """``availability`` = (topic, online payload, last-will payload), or None (Alink)."""
        self.cfg = cfg
        self.outbox = outbox
        self.log = log
        self.availability = availability
        self.connected = False
        self.acked = 0
        self.connections = 0
        self._client_id = client_id or cfg.client_id
        self._username = username if username is not None else cfg.username
        self._password = password if password is not None else cfg.password
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._acks: collections.deque[int] = collections.deque()
        self._ack_later: list[int] = []  # outbox rows the broker acknowledged that could not be deleted yet
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._timers: list[list[Any]] = []  # [interval, next due, fn]
        self._wake = threading.Event()
        self._resync = False
        self._stopping = False
        self._drain_deadline = 0.0
        self._first = threading.Event()
        self._refused: str | None = None
        self._closed_early: str | None = None
        self._outage_logged = False
        self._thread: threading.Thread | None = None
        self._client: Any = None

    # ------------------------------------------------------------------ connecting
    def _make_client(self) -> Any:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise ReportError("--mqtt needs paho-mqtt 2.x, which is not installed",
                              "pip install 'mltool[mqtt]' (or paho-mqtt>=2)") from None

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(WINDOW)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 30)
        if self._username:
            c.username_pw_set(self._username, self._password)
        if self.cfg.tls:
            try:
                c.tls_set(ca_certs=str(self.cfg.ca) if self.cfg.ca else None,
                          certfile=str(self.cfg.cert) if self.cfg.cert else None,
                          keyfile=str(self.cfg.key) if self.cfg.key else None)
            except (ssl.SSLError, OSError) as exc:
                raise ReportError(f"cannot use the TLS files for {self.cfg.url_masked}: {_ssl_reason(exc)}",
                                  "--mqtt-ca, --mqtt-cert and --mqtt-key take PEM files, and the key must be the "
                                  "certificate's") from None
        if self.availability:
            topic, _, will = self.availability
            c.will_set(topic, will, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def start(self, wait_s: float = 5.0) -> None:
        """Connect once, in the foreground: refused credentials or a TLS failure raise
        :class:`ReportError` (exit 1); an unreachable broker is said once, then retried in the
        background while the outbox buffers."""
        c = self._client = self._make_client()
        where = f"MQTT broker {self.cfg.url_masked}"
        try:
            c.connect(self.cfg.host, self.cfg.port, keepalive=60)
        except ssl.SSLError as exc:
            raise ReportError(f"TLS handshake with {where} failed: {_ssl_reason(exc)}",
                              "pass the broker's CA with --mqtt-ca (and --mqtt-cert/--mqtt-key if it wants a "
                              "client certificate), and use the host name its certificate names") from None
        except OSError as exc:
            self.log(f"{where} is unreachable ({exc.strerror or exc}): buffering results in {self.outbox.path} "
                     "and retrying in the background")
            self._outage_logged = True
            c.connect_async(self.cfg.host, self.cfg.port, keepalive=60)
            c.loop_start()
            self._start_feeder()
            return
        c.loop_start()
        if not self._first.wait(wait_s):
            self.log(f"{where} did not answer within {wait_s:.0f} s: buffering results and retrying")
            self._outage_logged = True
        elif self._refused is not None or self._closed_early is not None:
            c.disconnect()
            c.loop_stop()
            if self._refused is not None:
                raise ReportError(f"{where} refused the connection: {self._refused}",
                                  "check the user name and password (MLTOOL_MQTT_USERNAME/MLTOOL_MQTT_PASSWORD or "
                                  "--mqtt-credentials) and the broker's ACL")
            raise ReportError(f"{where} closed the connection before accepting it",
                              "check the port is an MQTT broker's; if it wants a TLS client certificate, pass "
                              "--mqtt-cert and --mqtt-key; the broker's log says why")
        self._start_feeder()

    def _start_feeder(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mltool-mqtt-feeder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self._first.is_set():
                self._refused = str(reason)
                self._first.set()
            elif not self._outage_logged:
                self.log(f"MQTT broker {self.cfg.broker} refused the connection ({reason}): buffering and retrying")
                self._outage_logged = True
            return
        self.connections += 1
        if self.availability:
            topic, online, _ = self.availability
            client.publish(topic, online, qos=1, retain=True)
        if self._first.is_set() and self._outage_logged:
            self.log(f"MQTT connected to {self.cfg.broker}: sending {self.outbox.rows} buffered messages")
        self._outage_logged = False
        self._resync = True
        self.connected = True
        self._first.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected = False
        if not self._first.is_set():  # closed before CONNACK: not an MQTT broker, or TLS refused us
            self._closed_early = str(reason)
            self._first.set()
            return
        if self.connections and not self._stopping and not self._outage_logged:
            why = "closed by the broker or the network" if str(reason) == "Unspecified error" else str(reason)
            self.log(f"MQTT connection to {self.cfg.broker} lost ({why}): buffering in the outbox")
            self._outage_logged = True
        self._wake.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acks.append(mid)
        self._wake.set()

    # ------------------------------------------------------------------ feeder thread
    def wake(self) -> None:
        self._wake.set()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the feeder thread (snapshot encoding: off the inference path)."""
        self._jobs.append(job)
        self._wake.set()

    def every(self, interval: float, fn: Callable[[], None]) -> None:
        self._timers.append([interval, time.monotonic() + interval, fn])

    def _run(self) -> None:
        last_sync = last_round = time.monotonic()
        failing: str | None = None
        while True:
            now = time.monotonic()
            due = min([t[1] for t in self._timers] + [now + 0.5])
            self._wake.wait(max(0.0, min(due - now, 0.5)))
            linger = last_round + LINGER_S - time.monotonic()
            if linger > 0 and not self._stopping:
                time.sleep(linger)
            last_round = time.monotonic()
            self._wake.clear()
            try:
                self._take_acks()
                while self._jobs:
                    self._guard(self._jobs.popleft())
                now = time.monotonic()
                for t in self._timers:
                    if now >= t[1]:
                        t[1] = now + t[0]
                        self._guard(t[2])
                if now - last_sync >= 1.0:
                    self.outbox.checkpoint()
                    last_sync = now
                if self.connected:
                    self._feed()
                failing = None
            except Exception as exc:  # e.g. a full disk: say it once, keep trying
                if failing != str(exc):
                    self.log(f"MQTT publisher: {type(exc).__name__}: {exc}; retrying")
                    failing = str(exc)
                time.sleep(1.0)
            if self._stopping and (time.monotonic() >= self._drain_deadline or not self.connected
                                   or (self.outbox.rows == 0 and not self._inflight and not self._jobs
                                       and not self._ack_later)):
                while self._jobs:  # snapshots still to encode go to the outbox for next time
                    self._guard(self._jobs.popleft())
                self._guard(self._take_acks)
                self._guard(self.outbox.checkpoint)
                return

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a failing heartbeat or snapshot must not stop publishing
            self.log(f"MQTT reporter: {type(exc).__name__}: {exc}")

    def _take_acks(self) -> None:
        rows, self._ack_later = self._ack_later, []
        while self._acks:
            rid = self._inflight.pop(self._acks.popleft(), None)
            if rid is not None:
                rows.append(rid)
        if rows:
            try:
                self.outbox.ack(rows)
            except Exception:  # e.g. a full disk: the broker has them; delete them when it can
                self._ack_later = rows
                raise
            self.acked += len(rows)

    def _feed(self) -> None:
        if self._resync:  # paho re-sends what was in flight first; new rows wait for those acks
            if self._inflight and self.cfg.qos > 0:
                return
            if self._inflight:  # QoS 0 is not re-sent by paho: send those rows again ourselves
                self.outbox.handed = min(self._inflight.values()) - 1
                self._inflight.clear()
            self._resync = False
        room = WINDOW - len(self._inflight)
        if room <= 0 or self.outbox.last_id <= self.outbox.handed:
            return
        for row in self.outbox.fetch(self.outbox.handed, room):
            info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if info.rc != 0 and row.qos == 0:
                return  # not queued by paho: try again after reconnecting
            self._inflight[info.mid] = row.id
            self.outbox.handed = row.id

    # ------------------------------------------------------------------ stopping
    def close(self, drain_s: float = 10.0, final: tuple[str, str] | None = None) -> None:
        """Send what is in the outbox (up to ``drain_s`` while connected), publish ``final``
        (topic, payload: "stopped") retained, and disconnect cleanly (no last will)."""
        self._drain_deadline = time.monotonic() + drain_s
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain_s + 5)
        c = self._client
        if c is None:
            return
        if self.connected and final is not None:
            try:
                c.publish(final[0], final[1], qos=1, retain=True).wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        c.disconnect()
        c.loop_stop()


def _ssl_reason(exc: OSError) -> str:
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
    return str(reason).replace("_", " ").lower()
