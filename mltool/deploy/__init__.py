"""Deploy models to devices over SSH: releases, rollback, fleets, services.

    from mltool.deploy import DeployConfig, deploy
    fleet = deploy(["pi@raspberrypi.local"], DeployConfig(model="runs/train/fire-1"))
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {
    "deploy": "mltool.deploy.fleet", "FleetResult": "mltool.deploy.fleet",
    "DeployConfig": "mltool.deploy.host", "HostResult": "mltool.deploy.host", "deploy_host": "mltool.deploy.host",
    "list_releases": "mltool.deploy.host", "rollback": "mltool.deploy.host",
    "SshOptions": "mltool.deploy.ssh", "DeviceLayout": "mltool.deploy.layout",
    "service_logs": "mltool.deploy.service",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
