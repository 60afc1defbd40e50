"""Deploy models to devices over SSH: releases, rollback, fleets, services; or through the MQTT
broker to `mltool agent`s (pull); or as a Mender artifact.

    from mltool.deploy import DeployConfig, deploy
    fleet = deploy(["pi@raspberrypi.local"], DeployConfig(model="runs/train/fire-1"))
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {
    "deploy": "mltool.deploy.fleet", "FleetResult": "mltool.deploy.fleet",
    "DeployConfig": "mltool.deploy.host", "HostResult": "mltool.deploy.host", "deploy_host": "mltool.deploy.host",
    "list_releases": "mltool.deploy.host", "rollback": "mltool.deploy.host",
    "SshOptions": "mltool.deploy.ssh", "DeviceLayout": "mltool.layout",
    "service_logs": "mltool.deploy.service",
    "PullConfig": "mltool.deploy.pull", "deploy_pull": "mltool.deploy.pull", "fleet_releases": "mltool.deploy.pull",
    "fleet_rollback": "mltool.deploy.pull", "AgentConfig": "mltool.deploy.agent", "run_agent": "mltool.deploy.agent",
    "export_mender": "mltool.deploy.mender",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
