"""``--devices auto|cpu|N``: which devices a run trains on, and the distribution strategy.

* ``auto`` (the default): one device, the first GPU TensorFlow sees, else the CPU. No strategy
  is involved, so a seed gives exactly the numbers it always gave.
* ``cpu``: the CPU even where there is a GPU.
* ``N``: N replicas under ``tf.distribute.MirroredStrategy``: the first N GPUs; on a machine
  without a GPU, the CPU split into N logical devices (useful to test the distributed path; it
  makes nothing faster). ``--batch-size`` is the global batch, split evenly over the replicas,
  and batch normalisation is synchronised across them.

Devices can only be configured before TensorFlow's runtime starts: :func:`configure` is called
right after TensorFlow is imported, before any tensor exists.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from mltool.errors import ConfigError

DEVICES_HELP = "auto (one device: the first GPU, else the CPU) | cpu | N (N replicas, MirroredStrategy)"


def parse_devices(value: str | int | None) -> str:
    """The canonical spelling of a --devices value; a usage error for anything else."""
    text = "auto" if value is None else str(value).strip().lower()
    if text in ("auto", "cpu"):
        return text
    if text.isdigit() and int(text) >= 1:
        return str(int(text))
    raise ConfigError(f"--devices '{value}' is not auto, cpu or a number of devices",
                      "use --devices auto (default), --devices cpu or --devices 2")


def replicas_wanted(devices: str) -> int:
    return int(devices) if devices.isdigit() else 1


@dataclass
class Placement:
    """Where a run trains: recorded in mltool.json under ``training.distribution``."""

    strategy: str  # "none" (one device, no strategy) | "MirroredStrategy"
    replicas: int
    global_batch: int
    devices: list[str] = field(default_factory=list)
    logical: bool = False  # the replicas are logical devices carved out of one physical device
    tf_strategy: Any = None

    @property
    def per_replica_batch(self) -> int:
        return self.global_batch // self.replicas

    def scope(self) -> Any:
        return self.tf_strategy.scope() if self.tf_strategy is not None else contextlib.nullcontext()

    def record(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "replicas": self.replicas, "per_replica_batch": self.per_replica_batch,
                "devices": self.devices, **({"logical_devices": True} if self.logical else {})}


def check_batch(devices: str, batch_size: int) -> None:
    n = replicas_wanted(devices)
    if n > 1 and batch_size % n:
        raise ConfigError(f"--batch-size {batch_size} does not split evenly over {n} replicas",
                          f"--batch-size is the global batch: use a multiple of {n}, e.g. {batch_size - batch_size % n + n}")


def configure(devices: str, batch_size: int) -> Placement:
    """Make the devices ``devices`` asks for visible (call before any tensor exists) and return
    the placement: a MirroredStrategy for more than one replica, else none at all."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    n = replicas_wanted(devices)
    gpus = tf.config.list_physical_devices("GPU")
    if devices == "cpu" and gpus:
        _set(tf, lambda: tf.config.set_visible_devices([], "GPU"), devices)
        gpus = []
    if n == 1:
        name = "/GPU:0" if gpus and devices != "cpu" else "/CPU:0"
        return Placement("none", 1, batch_size, [name])
    check_batch(devices, batch_size)
    logical = False
    if gpus:
        if len(gpus) < n:
            raise ConfigError(f"--devices {n} asks for {n} GPUs; TensorFlow sees {len(gpus)}",
                              f"use --devices {len(gpus)} or --devices auto")
        _set(tf, lambda: tf.config.set_visible_devices(gpus[:n], "GPU"), devices)
        names = [f"/GPU:{i}" for i in range(n)]
    else:
        cpus = tf.config.list_physical_devices("CPU")
        have = tf.config.get_logical_device_configuration(cpus[0]) or []
        if len(have) != n:
            _set(tf, lambda: tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]), devices)
        names = [f"/CPU:{i}" for i in range(n)]
        logical = True
    strategy = tf.distribute.MirroredStrategy(names)
    return Placement("MirroredStrategy", strategy.num_replicas_in_sync, batch_size, names, logical, strategy)


def _set(tf: Any, change: Any, devices: str) -> None:
    try:
        change()
    except RuntimeError:
        raise ConfigError(f"--devices {devices}: TensorFlow's runtime already started in this process, so its devices "
                          "can no longer be changed", "run the training in a fresh process (the mltool command does)") from None


def describe() -> dict[str, Any]:
    """The devices TensorFlow sees (imports TensorFlow: seconds): for ``mltool doctor --train``."""
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    physical = tf.config.list_physical_devices()
    gpus = [d for d in physical if d.device_type == "GPU"]
    details = []
    for d in gpus:
        try:
            name = tf.config.experimental.get_device_details(d).get("device_name", "")
        except Exception:  # details are best-effort; the device list is what matters
            name = ""
        details.append(f"{d.name}{f' ({name})' if name else ''}")
    return {"tensorflow": tf.__version__, "built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "devices": [d.name for d in physical], "gpus": details}
