"""Run on a device: pull the releases the MQTT broker's retained desired state names (`mltool deploy mqtt://...`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mltool.cli._options import MqttCaOpt, MqttCertOpt, MqttCredentialsOpt, MqttKeyOpt


def agent(
    url: Annotated[str, typer.Argument(metavar="URL", help="mqtt[s]://[user@]broker[:port]/PREFIX (password: MLTOOL_MQTT_PASSWORD or --mqtt-credentials).", show_default=False)],
    device: Annotated[Optional[str], typer.Option("--device", help="This device's name in topics (default: host name).")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="KEY=VALUE the controller selects by (--limit), repeatable.")] = None,
    remote_dir: Annotated[str, typer.Option("--remote-dir", help="Device root (the layout deploy uses).")] = "~/mltool",
    allow_http: Annotated[bool, typer.Option("--allow-http", help="Accept plain http:// artifact URLs (loopback is always accepted).")] = False,
    service: Annotated[Optional[str], typer.Option("--restart-unit", help="systemd unit to reload/restart after a switch, e.g. mltool-digits.service.")] = None,
    health_url: Annotated[Optional[str], typer.Option("--health-url", help="Polled during the grace period after a switch (2xx = healthy), e.g. http://127.0.0.1:8000/v2/health/ready.")] = None,
    grace: Annotated[float, typer.Option("--grace", help="Seconds the service must stay healthy after a switch, else switch back.")] = 10.0,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Largest model a desired state may announce (MB).")] = 1024.0,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Skip the load-and-run check before switching (not recommended).")] = False,
    mqtt_ca: MqttCaOpt = None,
    mqtt_cert: MqttCertOpt = None,
    mqtt_key: MqttKeyOpt = None,
    mqtt_credentials: MqttCredentialsOpt = None,
) -> None:
    """Keep one outbound connection to the broker (NAT is fine), download each desired release over
    HTTP(S), verify its SHA-256, probe it, switch `current` atomically (the same steps as
    `mltool deploy` over SSH) and report the state, retained. Runs until stopped."""
    import os

    from mltool.cli._output import stderr_console
    from mltool.deploy.agent import AgentConfig, parse_labels, run_agent
    from mltool.errors import ConfigError
    from mltool.report.config import MqttOptions

    if grace < 0:
        raise ConfigError(f"--grace {grace:g} must not be negative", "e.g. --grace 10 (seconds)")
    if not max_mb > 0:
        raise ConfigError(f"--max-mb {max_mb:g} must be positive", "e.g. --max-mb 1024")
    mqtt = MqttOptions(url=url, device=device, ca=mqtt_ca, cert=mqtt_cert, key=mqtt_key, credentials=mqtt_credentials).resolve()
    cfg = AgentConfig(mqtt=mqtt, labels=parse_labels(label or []), root=remote_dir, allow_http=allow_http, service=service,
                      health_url=health_url, grace_s=grace, probe=not no_probe, max_bytes=int(max_mb * 1024 * 1024))
    console = stderr_console()
    if mqtt.credentials_warning:
        console.print(f"warning: {mqtt.credentials_warning}", style="yellow", markup=False)
    os.umask(os.umask(0o022))
    run_agent(cfg, log=lambda m: console.print(f"agent: {m}", markup=False, soft_wrap=True))
