"""What goes on the wire: topics and payloads for the JSON format, Alibaba Cloud IoT Platform's
Alink thing model (and its connection signature), and Home Assistant MQTT discovery.

Every payload is built here from plain values, so the README examples and the tests read the
same code path the publisher uses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltool.report.lifecycle import Event, State

STATUS_ONLINE, STATUS_OFFLINE, STATUS_STOPPED = "online", "offline", "stopped"


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps builds one per call


def dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


@dataclass
class Context:
    """Who is reporting what: fixed for a run (set by ``Reporter.start``)."""

    device: str
    prefix: str
    model: str = ""
    release: str = ""
    source: str = ""
    task: str = ""
    version: str = ""

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device}/{leaf}"


def model_identity(path: str | Path, release: str | None = None) -> tuple[str, str]:
    """(name, release id) of a model file. The release id is deploy's (hashed here unless the
    caller knows it); the name is the deployed model's name when the file sits in
    ``models/<name>/releases/<id>/``, else the file's name."""
    from mltool.layout import deployed_name, release_id

    p = Path(path)
    try:
        digest = release or release_id(p.resolve())
        name = deployed_name(p)
    except OSError:
        return p.name, ""
    return name or p.name, digest


# --------------------------------------------------------------------------- JSON format
def event_payload(kind: str, ev: Event, seq: int, ctx: Context, *, snapshot: bool = False) -> dict[str, Any]:
    """One message of an event's lifecycle (``prefix/<device>/events``)."""
    d: dict[str, Any] = {
        "type": kind, "id": ev.id, "seq": seq, "device": ctx.device, "class": ev.cls,
        "score": round(ev.score, 4), "top_score": round(ev.top_score, 4), "threshold": ev.threshold,
    }
    if ctx.task == "detection":
        d["count"] = ev.count if kind != "end" else 0
        d["boxes"] = ev.boxes if kind != "end" else []
    d.update({"source": ctx.source, "frame": ev.frame, "frames": ev.frames, "model": ctx.model,
              "release": ctx.release, "start_time": round(ev.start, 3),
              "end_time": round(ev.end, 3) if ev.end is not None else None, "timestamp": round(time.time(), 3)})
    if kind == "end":
        d["reason"] = ev.reason
    if snapshot:
        d["snapshot"] = ctx.topic("snapshot")
    return d


def state_payload(state: State, events: list[Event], ctx: Context, outbox: dict[str, int], reason: str) -> dict[str, Any]:
    """The retained latest state (``prefix/<device>/state``)."""
    d: dict[str, Any] = {
        "device": ctx.device, "reason": reason, "timestamp": round(time.time(), 3),
        "top": {"label": state.top[0], "score": round(state.top[1], 4)} if state.top else None,
        "active": state.active,
    }
    if ctx.task == "detection":
        d["objects"] = state.objects
    elif ctx.task == "raw" and state.outputs is not None:
        d["outputs"] = {k: v for k, v in state.outputs.items() if k != "value"}
        if "value" in state.outputs:
            d["value"] = state.outputs["value"]
    elif state.alert is not None:
        d["alert"] = state.alert.as_dict()
    d.update({"events": [e.id for e in events], "frame": state.frame, "frames": state.frames,
              "source": ctx.source, "source_status": state.source_status, "model": ctx.model,
              "release": ctx.release, "outbox": {"pending": outbox["pending"], "dropped": outbox["dropped"]}})
    return d


# --------------------------------------------------------------------------- Alibaba Cloud IoT Platform
_DIGESTS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1, "hmacmd5": hashlib.md5}


def alink_sign(product_key: str, device_name: str, device_secret: str, *, client_id: str | None = None,
               timestamp: int | None = None, method: str = "hmacsha256", tls: bool = True) -> tuple[str, str, str]:
    """(MQTT client id, user name, password) for a device, as the IoT Platform documents it:
    the password is the hex HMAC, keyed with the deviceSecret, of the parameters clientId,
    deviceName, productKey and timestamp sorted by name and concatenated as name+value."""
    client_id = client_id or f"{product_key}.{device_name}"
    ts = str(timestamp if timestamp is not None else int(time.time() * 1000))
    params = {"clientId": client_id, "deviceName": device_name, "productKey": product_key, "timestamp": ts}
    content = "".join(k + params[k] for k in sorted(params))
    password = hmac.new(device_secret.encode(), content.encode(), _DIGESTS[method]).hexdigest()
    mqtt_client_id = f"{client_id}|securemode={2 if tls else 3},signmethod={method},timestamp={ts}|"
    return mqtt_client_id, f"{device_name}&{product_key}", password


def alink_topic(product_key: str, device_name: str) -> str:
    return f"/sys/{product_key}/{device_name}/thing/event/property/post"


def alink_post(seq: int, values: dict[str, Any], names: dict[str, str], time_ms: int | None = None) -> dict[str, Any]:
    """An Alink ``thing.event.property.post`` request. ``values`` uses mltool's names (class,
    score, alert, count); ``names`` maps them to the product's thing-model identifiers. Floats
    keep a decimal point and booleans are 0/1, as the thing model's float/bool types require."""
    t = time_ms if time_ms is not None else int(time.time() * 1000)
    params: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            value = round(value, 4)
        params[names.get(name, name)] = {"value": value, "time": t}
    return {"id": str(seq % 4294967296), "version": "1.0", "sys": {"ack": 0}, "params": params,
            "method": "thing.event.property.post"}


def alink_event_values(kind: str, ev: Event, task: str) -> dict[str, Any]:
    values: dict[str, Any] = {"class": ev.cls, "score": float(ev.score), "alert": kind != "end"}
    if task == "detection":
        values["count"] = 0 if kind == "end" else len(ev.boxes)
    return values


def alink_state_values(state: State, task: str) -> dict[str, Any]:
    values: dict[str, Any] = {"class": state.top[0] if state.top else "", "score": float(state.top[1]) if state.top else 0.0,
                              "alert": state.active}
    if task == "detection":
        values["count"] = sum(state.objects.values())
    return values


# --------------------------------------------------------------------------- Home Assistant discovery
def ha_discovery(ctx: Context, qos: int, discovery_prefix: str = "homeassistant") -> list[tuple[str, dict[str, Any]]]:
    """Retained discovery configs: the top class, its score, the alert and the outbox's dropped
    counter appear as entities of one device, fed by the state topic."""
    node = "mltool_" + re.sub(r"[^a-zA-Z0-9_-]", "_", ctx.device)
    state = ctx.topic("state")
    common = {
        "state_topic": state, "qos": qos,
        "availability": [{"topic": ctx.topic("available"),
                          "value_template": "{{ 'online' if value == 'online' else 'offline' }}"}],
        "device": {"identifiers": [node], "name": ctx.device, "manufacturer": "mltool",
                   "model": ctx.model or "tflite model", "sw_version": f"mltool {ctx.version}".strip()},
        "origin": {"name": "mltool", "sw_version": ctx.version},
    }
    entities = [
        ("sensor", "class", {"name": "Class", "icon": "mdi:eye", "json_attributes_topic": state,
                             "value_template": "{{ value_json.top.label if value_json.top else 'none' }}"}),
        ("sensor", "score", {"name": "Score", "state_class": "measurement", "suggested_display_precision": 2,
                             "value_template": "{{ value_json.top.score if value_json.top else 0 }}"}),
        ("binary_sensor", "alert", {"name": "Alert", "device_class": "problem", "payload_on": "ON", "payload_off": "OFF",
                                    "value_template": "{{ 'ON' if value_json.active else 'OFF' }}"}),
        ("sensor", "dropped", {"name": "Outbox dropped", "entity_category": "diagnostic", "state_class": "total_increasing",
                               "value_template": "{{ value_json.outbox.dropped }}"}),
    ]
    return [(f"{discovery_prefix}/{component}/{node}/{object_id}/config",
             {**extra, "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}", **common})
            for component, object_id, extra in entities]
