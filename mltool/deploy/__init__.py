"""Deploy models to devices over SSH: releases, rollback, fleets, services.

    from mltool.deploy import DeployConfig, deploy
    fleet = deploy(["pi@raspberrypi.local"], DeployConfig(model="runs/train/fire-1"))
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "deploy": "mltool.deploy.fleet", "FleetResult": "mltool.deploy.fleet",
    "DeployConfig": "mltool.deploy.host", "HostResult": "mltool.deploy.host", "deploy_host": "mltool.deploy.host",
    "list_releases": "mltool.deploy.host", "rollback": "mltool.deploy.host",
    "SshOptions": "mltool.deploy.ssh", "DeviceLayout": "mltool.deploy.layout",
    "service_logs": "mltool.deploy.service",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mltool.deploy' has no attribute {name!r}")
