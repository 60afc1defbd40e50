"""``ServeConfig``: everything `mltool serve` is told, with one set of defaults, checked early."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltool.errors import ConfigError, ModelError
from mltool.layout import CURRENT, MODEL_FILE, DeviceLayout, deployed_name
from mltool.runtime.options import PredictorOptions

API_KEY_ENV = "MLTOOL_API_KEY"


@dataclass
class ServeConfig:
    model: str  # a .tflite, a deployed model's folder, or a deployed model's name
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None  # the name in URLs (default: the deployed name, else metadata task, else file stem)
    root: str = "~/mltool"  # where deployed models live on this device (DeviceLayout)
    workers: int = 1
    queue: int = 32
    batch: int = 1  # micro-batching: up to this many image requests per invoke (batchable models)
    batch_wait_ms: float = 2.0
    max_body: int = 10 * 1024 * 1024
    timeout_s: float = 30.0  # a request's answer, queue wait included
    read_timeout_s: float = 10.0  # to receive a request
    keepalive_s: float = 30.0
    max_connections: int = 256  # open client connections; lowered to fit the open-files limit
    api_key: str | None = field(default=None, repr=False)
    cors_origins: list[str] = field(default_factory=list)
    source: str | None = None  # live view: any `mltool infer` source
    camera: Any = None  # the live camera's CameraOptions (size, rate, transform)
    loop: bool = False  # a video file as the live source: play it again at its end
    every: int = 1
    fps: float = 10.0  # MJPEG frame-rate cap per viewer
    source_timeout_s: float = 5.0
    max_reconnects: int | None = None
    poll_s: float = 2.0  # how often the `current` link is checked (0: only on SIGHUP)
    drain_s: float = 30.0
    access_log: bool = False
    # How every Predictor runs and reads the model (a dict of its fields works too; a misspelt
    # key is a one-line error naming it)
    predictor: PredictorOptions = field(default_factory=PredictorOptions)

    def __post_init__(self) -> None:
        if isinstance(self.predictor, dict):
            self.predictor = PredictorOptions.from_dict(self.predictor)

    def validate(self) -> None:
        self.predictor.validate()
        for opt, value, low in (("--workers", self.workers, 1), ("--queue", self.queue, 1), ("--max-batch", self.batch, 1),
                                ("--max-body", self.max_body, 1), ("--every", self.every, 1),
                                ("--max-connections", self.max_connections, 1)):
            if value < low:
                raise ConfigError(f"{opt} {value} must be at least {low}", f"pass {opt} {low} or more")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port", "use 1-65535 (0 picks a free one)")
        for opt, value, zero in (("--request-timeout", self.timeout_s, False), ("--fps", self.fps, False),
                                 ("--batch-wait", self.batch_wait_ms, True), ("--read-timeout", self.read_timeout_s, False),
                                 ("--poll", self.poll_s, True), ("keepalive_s", self.keepalive_s, False),
                                 ("drain_s", self.drain_s, True), ("source_timeout_s", self.source_timeout_s, False)):
            # nan compares false with everything: refused here, not a server that answers 504 to all
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
                kind = "zero or more" if zero else "positive"
                raise ConfigError(f"{opt} {value:g} must be a {kind}, finite number", f"pass a {kind} {opt}")
        if self.name is not None:
            check_name(self.name, "--name")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key is shorter than 8 characters", "use a long random key, e.g. `openssl rand -hex 24`")
        for origin in self.cors_origins:
            if origin != "*" and "://" not in origin:
                raise ConfigError(f"--cors-origin '{origin}' is not an origin", "use e.g. https://dashboard.example.com, or *")

    @property
    def exposed(self) -> bool:
        return self.host not in ("127.0.0.1", "localhost", "::1")


_URL_UNSAFE = re.compile(r"[/:?#%\\\s\x00-\x1f\x7f]")


def check_name(name: str, where: str) -> None:
    """A model name must be addressable in every route (``/v2/models/{name}``, ``/v1/models/{name}:predict``)."""
    bad = _URL_UNSAFE.search(name)
    if not name or bad:
        what = "is empty" if not name else f"has {bad.group()!r}"  # type: ignore[union-attr]
        raise ConfigError(f"model name {name!r} ({where}) {what}, so no URL could address it",
                          "pass --name with letters, digits, '.', '_' or '-'")


@dataclass
class ModelRef:
    """Which file to serve, and whether it moves: ``watch`` is the path re-resolved on every
    check (a deployed model's ``current/model.tflite``), ``follows`` says it is a deployed model."""

    watch: Path
    name: str
    follows: bool


def resolve_model(spec: str, root: str = "~/mltool", name: str | None = None) -> ModelRef:
    """A ``.tflite`` file, a deployed model's folder (``<root>/models/<name>``), or a bare name."""
    p = Path(spec).expanduser()
    if p.is_dir():
        if deployed_name(p) is not None:
            return _deployed(p / CURRENT / MODEL_FILE, name or p.name)
        raise ModelError(f"{p} is a folder but not a deployed model (no current link)",
                         "pass a .tflite file, or a deployed model's folder ~/mltool/models/NAME")
    if p.is_file():
        if p.parent.name == CURRENT and (deployed := deployed_name(p)) is not None:  # .../models/<name>/current/model.tflite
            return _deployed(p, name or deployed)
        return ModelRef(p, name or _default_name(p), False)
    if "/" not in spec and not spec.endswith(".tflite"):
        base = Path(os.path.expanduser(DeviceLayout(root).model_dir(spec)))
        if base.is_dir():
            return _deployed(base / CURRENT / MODEL_FILE, name or spec)
        raise ModelError(f"no deployed model named '{spec}' in {base.parent}",
                         "deploy it with `mltool deploy`, or pass a .tflite file")
    raise ModelError(f"model {spec} does not exist", "pass a .tflite file, a deployed model's folder or name")


def _deployed(watch: Path, name: str) -> ModelRef:
    if not watch.is_file():
        raise ModelError(f"{watch.parent.parent} has no current release ({watch} is missing)",
                         "deploy a model to it first (mltool deploy HOST MODEL --name NAME)")
    return ModelRef(watch, name, True)


def _default_name(path: Path) -> str:
    from mltool.runtime.metadata import read_metadata
    from mltool.runtime.tflite_schema import read_model_file

    try:
        meta = read_metadata(read_model_file(path)[1])
    except Exception:
        meta = None
    return (meta.task if meta is not None and meta.task else None) or path.stem


def make_predictor(path: Path, cfg: ServeConfig) -> Any:
    """The one place serve builds a Predictor: every option in ``cfg.predictor`` passes through."""
    from mltool.runtime.predictor import Predictor

    return Predictor(path, cfg.predictor)


def read_api_key(value: str | None, file: Path | None) -> str | None:
    """The API key from --api-key / $MLTOOL_API_KEY (``value``) or a file; never echoed."""
    if value is not None and file is not None:
        raise ConfigError("both an API key and --api-key-file were given", "use one of them")
    if file is not None:
        try:
            key = file.expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --api-key-file {file} ({exc.strerror})", "check the path and its permissions") from None
        if not key:
            raise ConfigError(f"--api-key-file {file} is empty", "write the key into it (one line)")
        return key
    return value.strip() if value else None
