"""Deploy a model to devices over SSH; list releases; roll back; read service logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltool.cli._options import (
    JsonOpt,
    MqttCaOpt,
    MqttCertOpt,
    MqttCredentialsOpt,
    MqttKeyOpt,
    ssh_options,
)

WaitOpt = Annotated[float, typer.Option("--wait", help="mqtt:// fleets: seconds to wait for each batch's devices; those that do not answer are reported pending (exit 5) and converge when they come back.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Model name on the device (default: the model's task, else its file name).")]


@ssh_options
def deploy(
    targets: Annotated[list[str], typer.Argument(help="[USER@]HOST[:PORT] ... then MODEL (a .tflite or a run directory).", show_default=False)],
    inventory: Annotated[Optional[Path], typer.Option("--inventory", help="YAML inventory of hosts, groups and labels.")] = None,
    limit: Annotated[Optional[str], typer.Option("--limit", help="Only these groups/labels/hosts (comma-separated).")] = None,
    name: NameOpt = None,
    keep: Annotated[int, typer.Option("--keep", help="Releases to keep per model.")] = 3,
    parallel: Annotated[int, typer.Option("--parallel", help="Hosts at a time.")] = 5,
    batch: Annotated[Optional[str], typer.Option("--batch", help="Canary batches, e.g. 1,25%,100%: a failing batch stops the rollout.")] = None,
    max_fail_pct: Annotated[float, typer.Option("--max-fail-pct", help="Failed/unreachable hosts tolerated (percent) before stopping.")] = 0.0,
    setup: Annotated[bool, typer.Option("--setup", help="Prepare the device: venv + mltool[device,mqtt] from a locally built wheel.")] = False,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="With --setup: the device's TFLite runtime as a pip requirement, e.g. 'ai-edge-litert==2.1.6' (remembered for later setups).")] = None,
    bench: Annotated[bool, typer.Option("--bench", help="Run `mltool bench` on the device and show its numbers.")] = False,
    service: Annotated[Optional[str], typer.Option("--service", help='Install a systemd unit running this mltool command on the current release, e.g. "infer --camera --alert-threshold 0.8".')] = None,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Skip the on-device load-and-run check (not recommended).")] = False,
    command_timeout: Annotated[float, typer.Option("--command-timeout", help="Seconds before a remote command is abandoned.")] = 120.0,
    wait: WaitOpt = 300.0,
    upload: Annotated[Optional[str], typer.Option("--upload", help="mqtt:// fleets: PUT the model to URL/NAME/RELEASE/model.tflite, where the agents download it.")] = None,
    artifacts: Annotated[Optional[str], typer.Option("--artifacts", help="mqtt:// fleets: the model is already at URL/NAME/RELEASE/model.tflite.")] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", metavar="URL", help="With --setup: install `mltool agent URL` as a systemd unit (with --label).")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="With --setup --agent: the agent's KEY=VALUE labels, repeatable.")] = None,
    mqtt_ca: MqttCaOpt = None,
    mqtt_cert: MqttCertOpt = None,
    mqtt_key: MqttKeyOpt = None,
    mqtt_credentials: MqttCredentialsOpt = None,
    json_out: JsonOpt = False,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """Upload MODEL to each target as a verified release, probe it there, then switch `current`
    atomically. Identical content sends 0 bytes. Exit 3 if a host failed, 4 if one was unreachable.
    Devices beyond SSH reach: `mltool deploy mqtt[s]://broker/PREFIX MODEL --upload URL` publishes
    the release to `mltool agent`s (exit 5 if some have not answered yet)."""
    import dataclasses

    from mltool.cli._output import print_json, stderr_console
    from mltool.deploy import DeployConfig
    from mltool.deploy import deploy as run_deploy

    mqtt_files = {"ca": mqtt_ca, "cert": mqtt_cert, "key": mqtt_key, "credentials": mqtt_credentials}
    args = list(targets)
    model: Path | None = None
    if args and (Path(args[-1]).suffix == ".tflite" or Path(args[-1]).is_dir()):
        model = Path(args.pop())
    cfg = DeployConfig(model=model, name=name, root=remote_dir, keep=keep,
                       ssh=dataclasses.replace(ssh, command_timeout=command_timeout), probe=not no_probe,
                       bench=bench, setup=setup, runtime=runtime, service=service, parallel=parallel, batch=batch, max_fail_pct=max_fail_pct)
    console = stderr_console()

    def start(artifact: Any, hosts: list[Any]) -> None:
        if artifact is not None:
            console.print(f"[dim]{artifact.path} -> {artifact.name} release {artifact.release_id} ({artifact.size:,} bytes) "
                          f"on {len(hosts)} host(s)[/dim]")

    def show(r: Any) -> None:
        color = {"changed": "green", "unchanged": "cyan", "ready": "green", "failed": "red", "unreachable": "red",
                 "skipped": "yellow", "rolled_back": "red", "pending": "yellow"}[r.status]
        console.print(f"[{color}]{r.status:<11}[/{color}] {r.host}  {r.message}", soft_wrap=True)

    if args and _is_mqtt(args[0]):
        if len(args) != 1 or model is None:
            from mltool.errors import ConfigError

            raise ConfigError("a pull deploy takes one broker URL and one MODEL", "mltool deploy mqtt://broker/PREFIX MODEL --upload URL")
        from mltool.deploy.pull import deploy_pull

        fleet = deploy_pull(_pull_config(args[0], mqtt_files, limit, wait, upload, artifacts, keep, name), model, cfg,
                            on_start=start, on_result=show)
    else:
        if upload is not None or artifacts is not None:
            from mltool.errors import ConfigError

            raise ConfigError("--upload and --artifacts are for pull deploys", "deploy to mqtt[s]://broker/PREFIX (see docs/fleet-pull.md)")
        if agent is not None or label:
            cfg = dataclasses.replace(cfg, agent=agent, agent_labels=list(label or []),
                                      agent_mqtt={k: v for k, v in mqtt_files.items() if v is not None})
        fleet = run_deploy(args, cfg, inventory=inventory, limit=limit, on_start=start, on_result=show)
    _render(console, fleet)
    if json_out:
        print_json(fleet.as_dict())
    code = fleet.exit_code()
    if code:
        raise typer.Exit(code)


def _is_mqtt(value: str) -> bool:
    return value.startswith(("mqtt://", "mqtts://"))


def _pull_config(url: str, files: dict[str, Any], limit: Optional[str], wait: float, upload: Optional[str] = None,
                 artifacts: Optional[str] = None, keep: int = 3, name: Optional[str] = None) -> Any:
    from mltool.deploy.pull import PullConfig
    from mltool.report.config import MqttOptions

    return PullConfig(url=url, mqtt=MqttOptions(url=url, **files), limit=limit, wait=wait, upload=upload, artifacts=artifacts,
                      keep=keep, name=name)


def _render(console: Any, fleet: Any) -> None:
    from rich.table import Table

    t = Table(title="deploy")
    for c in ("host", "status", "release", "bytes sent", "seconds", "details"):
        t.add_column(c, justify="right" if c in ("bytes sent", "seconds") else "left")
    for r in fleet.results:
        details = r.message
        if r.probe:
            details += f"; probe {r.probe['runtime']} {r.probe['version']} load {r.probe['load_ms']:.0f} ms invoke {r.probe['invoke_ms']:.2f} ms"
        t.add_row(r.host, r.status, r.release or "-", f"{r.bytes_sent:,}", f"{r.duration_s:.2f}", details)
    console.print(t)
    for r in fleet.results:
        if r.setup:
            pin = r.setup.get("runtime_pin")
            pinned = f"; runtime pinned to {pin}{' (remembered)' if r.setup.get('pin_remembered') else ''}" if pin else ""
            smoke = (r.setup.get("smoke_test") or {}).get("detail", "")
            st = r.setup
            os_name = f"{st['os']}, " if st.get("os") else ""
            venv = {"created": "venv created", "upgraded": "venv now sees the system's packages", "kept": "venv kept"}.get(
                st.get("venv_state"), "venv")
            apt = f"; apt installed {', '.join(st['apt_installed'])}" if st.get("apt_installed") else ""
            console.print(f"{r.host}: set up Python {st['python']} on {os_name}{st.get('arch') or st['machine']} ({venv}{apt}), "
                          "installed " + ", ".join(f"{k} {v}" for k, v in st["installed"].items()) + pinned
                          + (f"; smoke test: {smoke}" if smoke else ""), soft_wrap=True, markup=False)
            cam = st.get("camera") or {}
            if cam:
                console.print(f"{r.host}: --camera there: " + (cam["error"] if "error" in cam else
                              f"{cam['camera']} ({cam['name']}, {cam['backend']})"), soft_wrap=True, markup=False)
            for w in r.setup["warnings"]:
                console.print(f"[yellow]{r.host}: {w}[/yellow]")
        if r.service:
            console.print(f"{r.host}: service {r.service['unit']} {r.service['active']} ({r.service.get('action', 'restart')}ed): "
                          f"{r.service['exec']}")
        if r.bench:
            row = r.bench["rows"][0]
            lat = row.get("latency_ms") or {k: row.get(f"{k}_ms", float("nan")) for k in ("median", "p90")}  # a device's older mltool
            console.print(f"{r.host}: on-device bench ({row['runtime']}): median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms, "
                          f"{row['throughput_per_s']:.1f} inf/s, init {row['init_ms']:.1f} ms, peak RSS {row['peak_rss_mib']:.0f} MiB")
    c = fleet.counts()
    console.print(", ".join(f"{k} {v}" for k, v in sorted(c.items())) + (" — rollout stopped early" if fleet.stopped_early else ""))


@ssh_options
def releases(
    target: Annotated[str, typer.Argument(help="[USER@]HOST[:PORT], or mqtt[s]://broker/PREFIX for a pull fleet", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Only this model (default: every model on the device or fleet).")] = None,
    limit: Annotated[Optional[str], typer.Option("--limit", help="mqtt:// fleets: only agents with these labels, e.g. type=camera,site=b.")] = None,
    mqtt_ca: MqttCaOpt = None,
    mqtt_cert: MqttCertOpt = None,
    mqtt_key: MqttKeyOpt = None,
    mqtt_credentials: MqttCredentialsOpt = None,
    json_out: JsonOpt = False,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """List the releases on a device and which one is current (on an mqtt:// URL: the fleet's
    release history and every agent's state, from the broker's retained messages)."""
    import datetime

    from rich.table import Table

    from mltool.cli._output import print_json, stderr_console

    if _is_mqtt(target):
        from mltool.deploy.pull import fleet_releases

        files = {"ca": mqtt_ca, "cert": mqtt_cert, "key": mqtt_key, "credentials": mqtt_credentials}
        res = fleet_releases(_pull_config(target, files, limit, 1.0), name)
        console = stderr_console()
        for model, doc in res["models"].items():
            t = Table(title=f"{model} releases on {res['broker']}")
            for c in ("release", "current", "size", "published", "url"):
                t.add_column(c)
            for h in doc.get("history", []):
                when = datetime.datetime.fromtimestamp(h["published_at"]).strftime("%Y-%m-%d %H:%M:%S")
                t.add_row(h["release"], "*" if h["release"] == doc.get("current") else "", f"{h['size']:,}", when, h["url"])
            console.print(t)
        t = Table(title="agents")
        for c in ("device", "online", "labels", "model", "release", "previous", "state", "error"):
            t.add_column(c)
        for a in res["agents"]:
            labels = ",".join(f"{k}={v}" for k, v in a["labels"].items())
            online = {True: "yes", False: "no", None: "?"}[a["online"]]
            for model, m in (a["models"] or {"-": {}}).items():
                t.add_row(a["device"], online, labels, model, str(m.get("release") or "-"), str(m.get("previous") or "-"),
                          str(m.get("state") or "-"), str(m.get("error") or ""))
        console.print(t)
        if json_out:
            print_json(res)
        return
    from mltool.deploy import list_releases

    res = list_releases(target, ssh, remote_dir, name)
    t = Table(title=f"releases on {res['host']}")
    for c in ("model", "release", "current", "size", "deployed", "task", "trained on", "quantization"):
        t.add_column(c)
    for model, st in res["models"].items():
        for r in st["releases"]:
            when = datetime.datetime.fromtimestamp(r["deployed_at"]).strftime("%Y-%m-%d %H:%M:%S")
            t.add_row(model, r["id"], "*" if r["id"] == st["current"] else "", f"{r['size']:,}", when, str(r.get("task") or "-"), str(r.get("trained_on") or "-"),
                      str(r.get("quantization") or "-"))
    stderr_console().print(t)
    if json_out:
        print_json(res)


@ssh_options
def rollback(
    target: Annotated[str, typer.Argument(help="[USER@]HOST[:PORT], or mqtt[s]://broker/PREFIX for a pull fleet", show_default=False)],
    to: Annotated[Optional[str], typer.Option("--to", help="Release id (or a unique prefix); default: the one before current.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The model to roll back (default: the device's only model).")] = None,
    limit: Annotated[Optional[str], typer.Option("--limit", help="mqtt:// fleets: only agents with these labels.")] = None,
    wait: WaitOpt = 300.0,
    mqtt_ca: MqttCaOpt = None,
    mqtt_cert: MqttCertOpt = None,
    mqtt_key: MqttKeyOpt = None,
    mqtt_credentials: MqttCredentialsOpt = None,
    json_out: JsonOpt = False,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """Switch a device's `current` back to an earlier release in one atomic step (on an mqtt://
    URL: publish the fleet's previous release as the desired state)."""
    from mltool.cli._output import print_json, stderr_console

    if _is_mqtt(target):
        from mltool.deploy.pull import fleet_rollback

        console = stderr_console()
        files = {"ca": mqtt_ca, "cert": mqtt_cert, "key": mqtt_key, "credentials": mqtt_credentials}
        fleet = fleet_rollback(_pull_config(target, files, limit, wait), name, to,
                               on_result=lambda r: console.print(f"{r.status:<11} {r.host}  {r.message}", soft_wrap=True, markup=False))
        _render(console, fleet)
        if json_out:
            print_json(fleet.as_dict())
        if fleet.exit_code():
            raise typer.Exit(fleet.exit_code())
        return
    from mltool.deploy import rollback as do_rollback

    res = do_rollback(target, ssh, remote_dir, name, to)
    stderr_console().print(f"{res['host']}: {res['name']} current -> {res['current']} (was {res['previous']})")
    if json_out:
        print_json(res)


@ssh_options
def logs(
    target: Annotated[str, typer.Argument(help="[USER@]HOST[:PORT]", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Model name whose service to read.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="Journal lines.")] = 100,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """Show the journal of the service installed with `deploy --service` (on stdout)."""
    import sys

    from mltool.deploy import service_logs

    sys.stdout.write(service_logs(target, name, lines, ssh))
