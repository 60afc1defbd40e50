"""Option aliases shared by several commands."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

# The output contract, for every command: stdout carries data only (JSON with --json, nothing
# without it); everything for people (tables, progress, errors) goes to stderr, with or without --json.
JsonOpt = Annotated[bool, typer.Option("--json", help="Also print the result as JSON on stdout (the human output stays on stderr).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same split, same metrics.")]


ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", "-t", help="Interpreter threads (given to the constructor).", min=1)]
DelegateOpt = Annotated[Optional[str], typer.Option("--delegate", help="External delegate library for the interpreter, e.g. libedgetpu.so.1 (Coral Edge TPU); none: no delegate at all, not even the default XNNPACK (the runtime's built-in kernels).")]
DelegateOptionOpt = Annotated[Optional[list[str]], typer.Option("--delegate-option", help="KEY=VALUE passed to the delegate (repeatable), e.g. device=usb.")]
CameraOpt = Annotated[Optional[str], typer.Option("--camera", metavar="[N]", help="The device's camera: a Pi camera module (libcamera) if attached, else the first USB/V4L2 camera. --camera N or /dev/videoN: that V4L2 camera; picamera:N: that libcamera camera.")]
CameraSizeOpt = Annotated[Optional[str], typer.Option("--camera-size", metavar="WxH", help="Camera frame size, e.g. 640x480 (default: 640x480 for a Pi camera module, the driver's for USB cameras).")]
CameraFpsOpt = Annotated[Optional[float], typer.Option("--camera-fps", metavar="FPS", help="Camera frame rate to ask for.")]
CameraTransformOpt = Annotated[Optional[str], typer.Option("--camera-transform", metavar="T", help="hflip | vflip | rot180 (a module mounted upside down: rot180).")]
InputShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="Fix a dynamic input's shape, e.g. 1,16000 (one shape per input, separated by ':').")]


def parse_floats(value: Optional[str], name: str) -> Optional[list[float]]:
    """``--mean 127.5`` or ``--mean 123.7,116.3,103.5`` as a list of floats (None if not given)."""
    from mltool.errors import ConfigError

    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"{name} '{value}' is not a number or comma-separated numbers",
                          f"e.g. {name} 127.5 or {name} 0.485,0.456,0.406") from None


# --------------------------------------------------------------------------- SSH options, once

IdentityOpt = Annotated[Optional[Path], typer.Option("--identity", "-i", help="Private key file (ed25519, RSA, ECDSA).")]
PortOpt = Annotated[Optional[int], typer.Option("--port", "-p", help="SSH port (default: from ~/.ssh/config, else 22).")]
KnownHostsOpt = Annotated[Optional[Path], typer.Option("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts).")]
TrustOpt = Annotated[bool, typer.Option("--trust-new-host", help="Accept and record the key of a host seen for the first time.")]
TimeoutOpt = Annotated[float, typer.Option("--connect-timeout", help="Seconds to wait for the SSH connection.")]
RemoteDirOpt = Annotated[str, typer.Option("--remote-dir", help="mltool's folder on the device.")]

_SSH_PARAMS = (
    ("identity", IdentityOpt, None),
    ("port", PortOpt, None),
    ("known_hosts", KnownHostsOpt, None),
    ("trust_new_host", TrustOpt, False),
    ("timeout", TimeoutOpt, 10.0),
    ("remote_dir", RemoteDirOpt, "~/mltool"),
)


def _option_group(command: Callable[..., Any], params: tuple, replaces: tuple[str, ...],
                  build: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
    """Wrap ``command`` so the CLI sees ``params`` (name, annotation, default) as keyword-only
    options in place of its parameters ``replaces``; ``build`` turns the options' values into
    those parameters' arguments."""
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name not in replaces]
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in params]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(**build({n: kwargs.pop(n) for n, _, _ in params}), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{p.name: p.annotation for p in own + extra}, "return": sig.return_annotation}
    return wrapper


def ssh_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the SSH options every device command shares (--identity, --port,
    --known-hosts, --trust-new-host, --timeout, --remote-dir), declared once here. The command
    receives them as ``ssh`` (an :class:`~mltool.deploy.ssh.SshOptions`) and ``remote_dir``."""

    def build(values: dict[str, Any]) -> dict[str, Any]:
        from mltool.deploy.ssh import SshOptions

        remote_dir = values.pop("remote_dir")
        return {"ssh": SshOptions(**values), "remote_dir": remote_dir}

    return _option_group(command, _SSH_PARAMS, ("ssh", "remote_dir"), build)


# --------------------------------------------------------------------------- MQTT options, once

_MQTT_PARAMS = (
    ("mqtt", Annotated[Optional[str], typer.Option("--mqtt", metavar="URL", help="Publish results: mqtt://[user@]host[:port]/prefix or mqtts://... (password: MLTOOL_MQTT_PASSWORD or --mqtt-credentials).")], None),
    ("mqtt_qos", Annotated[int, typer.Option("--mqtt-qos", help="0 or 1 (at least once: kept in the outbox until the broker acknowledges).")], 1),
    ("mqtt_interval", Annotated[float, typer.Option("--mqtt-interval", help="Seconds between state heartbeats.")], 30.0),
    ("mqtt_device", Annotated[Optional[str], typer.Option("--mqtt-device", help="Device name in topics (default: host name).")], None),
    ("mqtt_format", Annotated[str, typer.Option("--mqtt-format", help="json | alink (Alibaba Cloud IoT Platform thing model).")], "json"),
    ("mqtt_discovery", Annotated[Optional[str], typer.Option("--mqtt-discovery", help="homeassistant: publish Home Assistant discovery configs.")], None),
    ("mqtt_snapshot", Annotated[bool, typer.Option("--mqtt-snapshot", help="Publish a JPEG of the annotated frame with each new event.")], False),
    ("mqtt_snapshot_max_kb", Annotated[int, typer.Option("--mqtt-snapshot-max-kb", help="Snapshot size cap in KB.")], 100),
    ("mqtt_ca", Annotated[Optional[Path], typer.Option("--mqtt-ca", help="CA certificate (PEM) for mqtts:// (default: system CAs).")], None),
    ("mqtt_cert", Annotated[Optional[Path], typer.Option("--mqtt-cert", help="Client certificate (PEM) for mqtts://.")], None),
    ("mqtt_key", Annotated[Optional[Path], typer.Option("--mqtt-key", help="Client certificate's private key (PEM).")], None),
    ("mqtt_credentials", Annotated[Optional[Path], typer.Option("--mqtt-credentials", help="KEY=VALUE file with MLTOOL_MQTT_* credentials (default: ~/.mltool/mqtt.env if present).")], None),
    ("mqtt_outbox", Annotated[Optional[Path], typer.Option("--mqtt-outbox", help="Outbox file (default: ~/.mltool/outbox/DEVICE@HOST_PORT.sqlite).")], None),
    ("mqtt_outbox_max", Annotated[str, typer.Option("--mqtt-outbox-max", help="Outbox bound: rows, size or both, e.g. 100000,64MB (oldest dropped first).")], "100000,100MB"),
)


def mqtt_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the ``--mqtt*`` options (declared once here). The command receives them as
    ``mqtt``: an :class:`~mltool.report.config.MqttOptions`, or None when no ``--mqtt*`` option
    was given. ``MqttOptions.resolve()`` validates them (usage errors, exit 2)."""
    defaults = {n: d for n, _, d in _MQTT_PARAMS}

    def build(values: dict[str, Any]) -> dict[str, Any]:
        from mltool.report.config import MqttOptions

        if all(values[n] == defaults[n] for n in values):
            return {"mqtt": None}
        return {"mqtt": MqttOptions(**{("url" if n == "mqtt" else n.removeprefix("mqtt_")): v for n, v in values.items()})}

    return _option_group(command, _MQTT_PARAMS, ("mqtt",), build)


def mqtt_reporter(mqtt: Any, console: Any) -> Any:
    """The connected :class:`~mltool.report.reporter.MqttReporter` for validated ``--mqtt*``
    options (a bad URL is a usage error before any model loads), logging on ``console``."""
    from mltool.report.reporter import MqttReporter

    reporter = MqttReporter(mqtt.resolve(), log=lambda m: console.print(f"mqtt: {m}", style="yellow", markup=False, soft_wrap=True))
    reporter.connect()
    return reporter


# The broker options of the pull commands (agent; deploy/releases/rollback on an mqtt:// URL): the
# same files and credentials as infer's --mqtt, under the same names.
MqttCaOpt = Annotated[Optional[Path], typer.Option("--mqtt-ca", help="CA certificate (PEM) for mqtts:// (default: system CAs).")]
MqttCertOpt = Annotated[Optional[Path], typer.Option("--mqtt-cert", help="Client certificate (PEM) for mqtts://.")]
MqttKeyOpt = Annotated[Optional[Path], typer.Option("--mqtt-key", help="Client certificate's private key (PEM).")]
MqttCredentialsOpt = Annotated[Optional[Path], typer.Option("--mqtt-credentials", help="KEY=VALUE file with MLTOOL_MQTT_USERNAME/PASSWORD (default: ~/.mltool/mqtt.env if present).")]


# --------------------------------------------------------------------------- Predictor options, once

_PREDICTOR_PARAMS = (
    ("threads", ThreadsOpt, None),
    ("labels", Annotated[Optional[Path], typer.Option("--labels", help="Class names file (overrides the model's own labels).")], None),
    ("mean", Annotated[Optional[str], typer.Option("--mean", help="Normalisation mean (overrides metadata), e.g. 127.5.")], None),
    ("std", Annotated[Optional[str], typer.Option("--std", help="Normalisation std (overrides metadata), e.g. 127.5.")], None),
    ("task", Annotated[str, typer.Option("--task", help="auto | classify | detect | raw (every output as tensors)")], "auto"),
    ("top_k", Annotated[int, typer.Option("--top-k", "-k", help="Predictions per result.")], 3),
    ("score_threshold", Annotated[Optional[float], typer.Option("--score-threshold", help="Minimum detection score [default: 0.5 SSD, 0.25 YOLO].", show_default=False)], None),
    ("alert_threshold", Annotated[Optional[float], typer.Option("--alert-threshold", help="Raise an alert when the watched class's probability reaches this (e.g. 0.8).")], None),
    ("alert_class", Annotated[Optional[str], typer.Option("--alert-class", help="Class the alert watches (default: the first non-'no_'/'normal' class).")], None),
    ("iou", Annotated[float, typer.Option("--iou", help="YOLO: NMS drops a box overlapping a better one of its class by more than this IoU.")], 0.7),
    ("max_det", Annotated[int, typer.Option("--max-det", help="YOLO: most detections per image.")], 300),
    ("agnostic", Annotated[bool, typer.Option("--agnostic", help="YOLO: NMS across classes (a box suppresses overlapping boxes of any class).")], False),
    ("window", Annotated[Optional[int], typer.Option("--window", help="Samples per window for signal models with a dynamic input length (default: each file whole).")], None),
    ("input_shape", InputShapeOpt, None),
    ("delegate", DelegateOpt, None),
    ("delegate_option", DelegateOptionOpt, None),
)


def predictor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the options of how a model is run and read (--threads, --labels, --task,
    --top-k, thresholds, NMS, --window, --input-shape, --delegate...), declared once here. The
    command receives them as ``predictor``: a validated
    :class:`~mltool.runtime.options.PredictorOptions`."""

    def build(values: dict[str, Any]) -> dict[str, Any]:
        from mltool.runtime.interpreter import parse_delegate_options, parse_shapes
        from mltool.runtime.options import PredictorOptions

        values["mean"] = parse_floats(values["mean"], "--mean")
        values["std"] = parse_floats(values["std"], "--std")
        values["delegate_options"] = parse_delegate_options(values.pop("delegate_option"))
        values["input_shape"] = parse_shapes(values["input_shape"])
        options = PredictorOptions(**values)
        options.validate()
        return {"predictor": options}

    return _option_group(command, _PREDICTOR_PARAMS, ("predictor",), build)
