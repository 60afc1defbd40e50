"""Where mltool keeps things on a device. The one place the device layout is spelled out:

    ROOT/venv/                                   Python venv with mltool[device,mqtt] (--setup)
    ROOT/venv/bin/python, ROOT/venv/bin/mltool
    ROOT/runtime.txt                             the pinned TFLite runtime (deploy --setup --runtime)
    ROOT/models/<name>/releases/<id>/model.tflite   (+ release.json)
    ROOT/models/<name>/current -> releases/<id>     switched with rename(2): atomic
    ROOT/models/<name>/releases/.tmp-*              uploads in progress

Paths may start with ``~``: the device's shell (or Python) expands them there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.tflite"
RELEASE_FILE = "release.json"
CURRENT = "current"
RELEASES = "releases"
RELEASE_ID_DIGITS = 16  # a release is named by the first hex digits of its model's SHA-256


def deployed_name(path: str | Path) -> str | None:
    """The model's name when ``path`` is a deployed model's file (``<name>/current/model.tflite``
    or ``<name>/releases/<id>/model.tflite``) or folder (``models/<name>``), else None: where a
    device-side reader (serve, the MQTT reporter) recognises the layout, in this one module."""
    p = Path(path)
    if p.is_dir():
        return p.name if ((p / CURRENT).exists() or (p / RELEASES).is_dir()) else None
    if p.parent.name == CURRENT and p.parent.is_symlink():
        return p.parent.parent.name
    real = p.resolve() if p.exists() else p
    if real.parent.parent.name == RELEASES:
        return real.parent.parent.parent.name
    return None


def release_id(path: str | Path) -> str:
    """A model file's release id, as deploy names releases (read in 1 MiB pieces)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:RELEASE_ID_DIGITS]


@dataclass(frozen=True)
class DeviceLayout:
    root: str = "~/mltool"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def pip(self) -> str:
        return f"{self.venv}/bin/pip"

    @property
    def mltool(self) -> str:
        return f"{self.venv}/bin/mltool"

    @property
    def runtime_pin(self) -> str:
        """The TFLite runtime requirement `deploy --setup --runtime` pinned, reused by later setups."""
        return f"{self.root}/runtime.txt"

    @property
    def models(self) -> str:
        return f"{self.root}/models"

    def model_dir(self, name: str) -> str:
        return f"{self.models}/{name}"

    def releases(self, name: str) -> str:
        return f"{self.model_dir(name)}/releases"

    def current(self, name: str) -> str:
        return f"{self.model_dir(name)}/current"

    def current_model(self, name: str) -> str:
        """The model a service runs: follows every deploy and rollback."""
        return f"{self.current(name)}/{MODEL_FILE}"

    def expanded(self, home: str) -> DeviceLayout:
        """The same layout with a leading ``~`` replaced by the device user's home."""
        return DeviceLayout(home + self.root[1:] if self.root.startswith("~") else self.root)

    def remote_args(self, name: str | None = None) -> dict[str, str]:
        """The paths the device-side release operations (remote_ops.py) work on."""
        args = {"models": self.models, "python": self.python}
        if name is not None:
            args.update(base=self.model_dir(name), releases=self.releases(name), current=self.current(name))
        return args
