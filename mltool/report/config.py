"""MQTT options -> a validated :class:`MqttConfig`: broker URL, credentials, TLS, outbox bounds.

Secrets (the broker password, an Alibaba deviceSecret) come from the URL, environment variables
or a credentials file, and never appear in a message: everything printed uses :func:`mask_url`
and the secret fields are left out of ``repr``.

Credentials file (``--mqtt-credentials FILE``, default ``$MLTOOL_HOME/mqtt.env`` when it exists):
``KEY=VALUE`` lines, the same names as the environment variables, so one file can also be a
systemd ``EnvironmentFile=``::

    MLTOOL_MQTT_USERNAME=pi
    MLTOOL_MQTT_PASSWORD=...
    MLTOOL_MQTT_PRODUCT_KEY=a1B2c3D4e5F        # --mqtt-format alink
    MLTOOL_MQTT_DEVICE_SECRET=...
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mltool.errors import ConfigError, MltoolError
from mltool.units import has_unit, parse_size

FORMATS = ("json", "alink")
DISCOVERY = ("homeassistant",)
SIGN_METHODS = ("hmacsha256", "hmacsha1", "hmacmd5")
ENV_KEYS = ("MLTOOL_MQTT_USERNAME", "MLTOOL_MQTT_PASSWORD", "MLTOOL_MQTT_PRODUCT_KEY", "MLTOOL_MQTT_DEVICE_NAME",
            "MLTOOL_MQTT_DEVICE_SECRET", "MLTOOL_MQTT_SIGN_METHOD", "MLTOOL_MQTT_ALINK_PROPERTIES")
# Thing-model property identifiers --mqtt-format alink posts (override: MLTOOL_MQTT_ALINK_PROPERTIES).
ALINK_PROPERTIES = {"class": "Class", "score": "Score", "alert": "Alert", "count": "Count"}
_TOPIC_BAD = re.compile(r"[+#\x00]")
MAX_TOPIC_BYTES = 65_535  # MQTT's topic length field is 16 bits


class ReportError(MltoolError):
    """The broker refused us at start (credentials, TLS): exit 1."""


@dataclass
class MqttOptions:
    """The ``--mqtt*`` command-line values as given (see ``mltool.cli._options.mqtt_options``)."""

    url: str | None = None
    qos: int = 1
    interval: float = 30.0
    device: str | None = None
    format: str = "json"
    discovery: str | None = None
    snapshot: bool = False
    snapshot_max_kb: int = 100
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    credentials: Path | None = None
    outbox: Path | None = None
    outbox_max: str = "100000,100MB"

    def resolve(self, env: dict[str, str] | None = None) -> MqttConfig:
        return resolve(self, env)


@dataclass
class MqttConfig:
    host: str
    port: int
    tls: bool
    prefix: str
    device: str
    url_masked: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_on_command_line: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    qos: int = 1
    interval: float = 30.0
    format: str = "json"
    discovery: str | None = None
    snapshot: bool = False
    snapshot_max_bytes: int = 100 * 1024
    outbox: Path = Path("outbox.sqlite")
    max_rows: int = 100_000
    max_bytes: int = 100 * 1024 * 1024
    client_id: str = ""
    product_key: str | None = None
    device_secret: str | None = field(default=None, repr=False)
    sign_method: str = "hmacsha256"
    alink_properties: dict[str, str] = field(default_factory=lambda: dict(ALINK_PROPERTIES))
    credentials_warning: str | None = None
    # Event lifecycle: an update needs the score to rise by this much; an event ends after this
    # many results in a row without its class.
    update_delta: float = 0.05
    clear_frames: int = 3

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def mltool_home() -> Path:
    return Path(os.environ.get("MLTOOL_HOME", Path.home() / ".mltool"))


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for every message that shows it): everything
    from the first ``:`` after ``://`` to the LAST ``@``, so a password with an unencoded ``/``,
    ``@``, ``?`` or ``#`` is masked whole too."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return url
    user = rest[: rest.index(":")]
    if "/" in user or "?" in user or "#" in user:  # not even the user name can be told apart
        return f"{scheme}://***@{rest[at + 1:]}"
    return f"{scheme}://{user}:***@{rest[at + 1:]}"


def parse_url(url: str) -> tuple[str, str, int, str | None, str | None, str]:
    """``mqtt[s]://[user[:pass]@]host[:port]/prefix`` -> (scheme, host, port, user, password, prefix).
    No message repeats the URL parser's own reason: it can quote the password."""
    shown = mask_url(url)
    hint = "use mqtt://[user@]host[:port]/prefix, e.g. mqtt://broker.local/mltool (mqtts:// for TLS)"
    text = url.strip()
    rest = text.partition("://")[2]
    userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
    if any(c in userinfo for c in "/?#@"):
        raise ConfigError(f"--mqtt '{shown}': the user name or password has a character that must be percent-encoded "
                          "('/' as %2F, '@' as %40, '?' as %3F, '#' as %23)",
                          "encode it, or better keep the password out of the command line: MLTOOL_MQTT_PASSWORD "
                          "or --mqtt-credentials")
    try:
        u = urlsplit(text)
    except ValueError:
        raise ConfigError(f"--mqtt '{shown}' is not a valid URL (the host cannot be read)", hint) from None
    try:
        port = u.port
    except ValueError:
        raise ConfigError(f"--mqtt '{shown}' is not a valid URL (the port must be a number from 1 to 65535)", hint) from None
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt '{shown}': unknown scheme '{u.scheme or '(none)'}'", hint)
    if not u.hostname:
        raise ConfigError(f"--mqtt '{shown}' has no host", hint)
    if "?" in rest or "#" in rest:  # also an empty one: 'mqtt://host/home/#' would be cut to 'home'
        raise ConfigError(f"--mqtt '{shown}' has a query or fragment ('?' or '#')",
                          "the topic prefix cannot hold MQTT wildcards: use e.g. mqtt://broker.local/home")
    prefix = u.path.strip("/") or "mltool"
    if _TOPIC_BAD.search(prefix) or "//" in prefix:
        raise ConfigError(f"--mqtt '{shown}': topic prefix '{prefix}' has a wildcard or an empty level",
                          "use letters, digits, '-', '_' and '/' in the prefix")
    if prefix.startswith("$"):
        raise ConfigError(f"--mqtt '{shown}': topic prefix '{prefix}' starts with '$', which brokers reserve ($SYS)",
                          "use a prefix that starts with a letter or digit, e.g. mqtt://broker.local/mltool")
    if port == 0:
        raise ConfigError(f"--mqtt '{shown}': port 0", hint)
    port = port or (8883 if u.scheme == "mqtts" else 1883)
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password is not None else None
    return u.scheme, u.hostname, port, user, password, prefix


def read_credentials(path: Path) -> tuple[dict[str, str], str | None]:
    """KEY=VALUE lines (comments, blank lines, ``export`` and quotes allowed); unknown keys are
    a usage error so typos do not pass silently. Returns the values and a permission warning."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read MQTT credentials file {path}: {exc.strerror}",
                          "pass an existing file to --mqtt-credentials") from None
    except UnicodeDecodeError as exc:
        line = text_line(path, exc.start)
        raise ConfigError(f"MQTT credentials file {path} is not UTF-8 text (line {line})",
                          f"save {path} as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in ENV_KEYS:
            raise ConfigError(f"{path} line {n}: expected KEY=VALUE with KEY one of {', '.join(ENV_KEYS)}",
                              f"fix line {n} of {path}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    warn = None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn = f"{path} can be read by other users: chmod 600 {path}"
    return values, warn


def text_line(path: Path, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``path`` (for an encoding error)."""
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return 0


def _outbox_max(spec: str) -> tuple[int, int]:
    rows, size = 100_000, 100 * 1024 * 1024
    hint = "e.g. --mqtt-outbox-max 100000 (rows), 64MB, or both: 100000,64MB"
    for part in [p.strip() for p in spec.split(",") if p.strip()] or [""]:
        if has_unit(part):  # the same sizes --max-body takes
            size = parse_size(part, "--mqtt-outbox-max")
            if size < 4096:
                raise ConfigError(f"--mqtt-outbox-max '{spec}': {part} is less than 4 KB", hint)
            continue
        m = re.fullmatch(r"\d+(\.\d+)?", part)
        if not m or float(part) <= 0:
            raise ConfigError(f"--mqtt-outbox-max '{spec}' is not a row count or a size", hint)
        if m.group(1):
            raise ConfigError(f"--mqtt-outbox-max '{spec}': {part} rows is not a whole number", hint)
        rows = int(part)
    return rows, size


def _device_name(given: str | None) -> str:
    name = given or socket.gethostname().split(".")[0] or "mltool"
    if _TOPIC_BAD.search(name) or "/" in name or not name.strip():
        raise ConfigError(f"--mqtt-device '{name}' cannot be a topic level", "use letters, digits, '-' and '_'")
    return name


def _file(path: Path | None, opt: str) -> Path | None:
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{opt} {path}: no such file", f"pass an existing PEM file to {opt}")
    return Path(path) if path is not None else None


def resolve(o: MqttOptions, env: dict[str, str] | None = None) -> MqttConfig:
    """Validate everything before anything connects or loads (usage errors exit 2)."""
    env = dict(os.environ if env is None else env)
    if o.url is None:
        raise ConfigError("MQTT options given without --mqtt", "add --mqtt mqtt://host/prefix")
    scheme, host, port, user, password, prefix = parse_url(o.url)
    if o.qos not in (0, 1):
        raise ConfigError(f"--mqtt-qos {o.qos} is not supported", "use --mqtt-qos 1 (at least once, the default) or 0")
    if o.interval <= 0:
        raise ConfigError(f"--mqtt-interval {o.interval} must be positive", "e.g. --mqtt-interval 30 (seconds)")
    if o.format not in FORMATS:
        from mltool.errors import did_you_mean

        raise ConfigError(f"unknown --mqtt-format '{o.format}'", did_you_mean(o.format, FORMATS))
    if o.discovery is not None and o.discovery not in DISCOVERY:
        raise ConfigError(f"unknown --mqtt-discovery '{o.discovery}'", "use --mqtt-discovery homeassistant")
    if o.snapshot_max_kb < 4:
        raise ConfigError(f"--mqtt-snapshot-max-kb {o.snapshot_max_kb} is too small", "use 4 or more (KB)")
    tls = scheme == "mqtts"
    if not tls and (o.ca or o.cert or o.key):
        raise ConfigError("--mqtt-ca/--mqtt-cert/--mqtt-key need a TLS broker URL", f"use mqtts://{host}...")
    if (o.cert is None) != (o.key is None):
        raise ConfigError("--mqtt-cert and --mqtt-key go together", "pass both the client certificate and its key")

    creds_path = o.credentials
    default_creds = mltool_home() / "mqtt.env"
    if creds_path is None and default_creds.is_file():
        creds_path = default_creds
    file_values, warning = read_credentials(Path(creds_path)) if creds_path else ({}, None)

    def pick(key: str) -> str | None:
        return env.get(key) or file_values.get(key) or None

    on_cli = password is not None
    user = user or pick("MLTOOL_MQTT_USERNAME")
    password = password if password is not None else pick("MLTOOL_MQTT_PASSWORD")
    if password is not None and not user:
        raise ConfigError("an MQTT password without a user name", "set MLTOOL_MQTT_USERNAME or put user@ in the URL")

    device = _device_name(o.device or (pick("MLTOOL_MQTT_DEVICE_NAME") if o.format == "alink" else None))
    longest = len(f"{prefix}/{device}/".encode()) + 64  # + the longest suffix mltool adds, with room
    if longest > MAX_TOPIC_BYTES:
        raise ConfigError(f"--mqtt topic prefix and device name make topics of over {longest - 64} bytes; MQTT allows "
                          f"{MAX_TOPIC_BYTES:,}", "use a shorter prefix and --mqtt-device")
    rows, size = _outbox_max(o.outbox_max)
    cfg = MqttConfig(
        host=host, port=port, tls=tls, prefix=prefix, device=device, url_masked=mask_url(o.url),
        username=user, password=password, password_on_command_line=on_cli,
        ca=_file(o.ca, "--mqtt-ca"), cert=_file(o.cert, "--mqtt-cert"), key=_file(o.key, "--mqtt-key"),
        qos=o.qos, interval=float(o.interval), format=o.format, discovery=o.discovery, snapshot=o.snapshot,
        snapshot_max_bytes=o.snapshot_max_kb * 1024, max_rows=rows, max_bytes=size,
        client_id=f"mltool-{device}", credentials_warning=warning,
    )
    cfg.outbox = Path(o.outbox) if o.outbox else mltool_home() / "outbox" / f"{device}@{host}_{port}.sqlite"
    if o.format == "alink":
        _alink(cfg, pick)
        if o.discovery:
            raise ConfigError("--mqtt-discovery does not apply to --mqtt-format alink",
                              "the IoT Platform only accepts its own topics: drop --mqtt-discovery")
        if user or password:
            raise ConfigError("--mqtt-format alink derives the user name and password from the device secret",
                              "remove user:password from the URL and MLTOOL_MQTT_USERNAME/PASSWORD")
    return cfg


def _alink(cfg: MqttConfig, pick: Any) -> None:
    cfg.product_key = pick("MLTOOL_MQTT_PRODUCT_KEY")
    cfg.device_secret = pick("MLTOOL_MQTT_DEVICE_SECRET")
    missing = [k for k, v in (("MLTOOL_MQTT_PRODUCT_KEY", cfg.product_key),
                              ("MLTOOL_MQTT_DEVICE_SECRET", cfg.device_secret)) if not v]
    if missing:
        raise ConfigError(f"--mqtt-format alink needs {' and '.join(missing)}",
                          "set them in the environment or in the --mqtt-credentials file (the device's "
                          "ProductKey and DeviceSecret from the IoT Platform console)")
    if len(f"/sys/{cfg.product_key}/{cfg.device}/".encode()) + 64 > MAX_TOPIC_BYTES:
        raise ConfigError(f"MLTOOL_MQTT_PRODUCT_KEY and the device name make topics over MQTT's {MAX_TOPIC_BYTES:,} bytes",
                          "use the ProductKey and DeviceName the IoT Platform console shows")
    cfg.sign_method = (pick("MLTOOL_MQTT_SIGN_METHOD") or "hmacsha256").lower()
    if cfg.sign_method not in SIGN_METHODS:
        raise ConfigError(f"MLTOOL_MQTT_SIGN_METHOD '{cfg.sign_method}' is not supported",
                          f"use one of {', '.join(SIGN_METHODS)}")
    props = pick("MLTOOL_MQTT_ALINK_PROPERTIES")
    if props:
        for item in props.split(","):
            name, sep, ident = item.partition("=")
            if not sep or name.strip() not in ALINK_PROPERTIES or not ident.strip():
                raise ConfigError(f"MLTOOL_MQTT_ALINK_PROPERTIES item '{item}' is not NAME=Identifier",
                                  f"NAME is one of {', '.join(ALINK_PROPERTIES)}, e.g. class=DetectClass,score=Confidence")
            cfg.alink_properties[name.strip()] = ident.strip()
    cfg.client_id = f"{cfg.product_key}.{cfg.device}"
