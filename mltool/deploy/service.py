"""``--service "infer --camera ..."``: a systemd unit that runs an mltool command on the device
against the current release, restarted on failure and at boot.

``--service "serve ..."`` is different on purpose: the unit names the model's folder, which
`mltool serve` follows (its ``current`` link), so a new deploy hot-reloads the running server
(``systemctl reload`` sends SIGHUP) instead of restarting it and dropping requests."""

from __future__ import annotations

import shlex
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.deploy.layout import DeviceLayout
from mltool.deploy.ssh import Session, SshOptions, qpath


def unit_name(name: str) -> str:
    return f"mltool-{name}.service"


def _systemd(session: Session) -> tuple[str, str]:
    """('--user' or '', unit dir) for this device, or a clear error where systemd is absent."""
    r = session.run("test -d /run/systemd/system && command -v systemctl && id -u", check=False)
    lines = r.out.strip().splitlines()
    if r.rc != 0 or len(lines) < 2:
        raise DeployError(f"systemd is not running on {session.target.label}, so --service cannot install a unit",
                          "run the mltool command there under your own supervisor, or use a systemd-based OS (Raspberry Pi OS is)")
    if lines[-1] == "0":
        return "", "/etc/systemd/system"
    return "--user", "~/.config/systemd/user"


def render_unit(layout: DeviceLayout, name: str, command: str, home: str) -> str:
    argv = shlex.split(command)
    if not argv:
        raise DeployError("--service needs an mltool command line", 'e.g. --service "infer --camera --alert-threshold 0.8"')
    here = layout.expanded(home)
    serve = argv[0] == "serve"
    # The command's first word is the subcommand; the model goes right after it: the current
    # release's file, or for serve the model's folder, whose current release it follows.
    exec_argv = [here.mltool, argv[0], here.model_dir(name) if serve else here.current_model(name), *argv[1:]]
    # serve: SIGHUP reloads; stopping drains requests first. Secrets (MLTOOL_API_KEY,
    # MLTOOL_MQTT_PASSWORD, ...) live in ROOT/mltool.env, not on a command line `ps` shows.
    reload = "ExecReload=/bin/kill -HUP $MAINPID\nTimeoutStopSec=45\n" if serve else ""
    return (
        "[Unit]\n"
        f"Description=mltool {argv[0]} ({name})\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={' '.join(shlex.quote(a) for a in exec_argv)}\n"
        f"{reload}Restart=on-failure\nRestartSec=5\n"
        # a command stopped by a signal exits 130 after its summary (mltool's one rule): a stop, not a failure
        "SuccessExitStatus=130\n"
        # serve caps its connections below this; the default soft limit (1,024) is what an
        # idle-connection flood exhausted before (docs/serve-limits.md)
        "LimitNOFILE=8192\n"
        f"EnvironmentFile=-{here.root}/mltool.env\n"
        "Environment=PYTHONUNBUFFERED=1\n\n"
        "[Install]\nWantedBy=default.target\n"
    )


def service_action(command: str, old_unit: str | None, new_unit: str, active: bool) -> str:
    """``reload`` when a running serve unit is unchanged (it picks the new release up itself,
    without dropping a request), else ``restart``."""
    argv = shlex.split(command)
    if argv and argv[0] == "serve" and active and old_unit == new_unit:
        return "reload"
    return "restart"


def install_service(session: Session, layout: DeviceLayout, name: str, command: str) -> dict[str, Any]:
    user_flag, unit_dir = _systemd(session)
    home = session.run('printf %s "$HOME"').out
    unit = render_unit(layout, name, command, home)
    path = f"{unit_dir}/{unit_name(name)}"
    sc = f"systemctl {user_flag}".strip()
    old = session.run(f"cat {qpath(path)}", check=False)
    was_active = session.run(f"{sc} is-active {unit_name(name)}", check=False).out.strip() == "active"
    action = service_action(command, old.out if old.rc == 0 else None, unit, was_active)
    if action == "reload":
        session.run(f"{sc} reload {unit_name(name)}", what="reload service")
    else:
        session.run(f"mkdir -p {qpath(unit_dir)} && cat > {qpath(path)} <<'MLTOOL_UNIT'\n{unit}MLTOOL_UNIT", what="write unit")
        session.run(f"{sc} daemon-reload && {sc} enable {unit_name(name)} && {sc} restart {unit_name(name)}", what="start service")
    if user_flag:
        session.run("loginctl enable-linger \"$USER\"", check=False)  # start at boot without a login
    state = session.run(f"{sc} is-active {unit_name(name)}", check=False).out.strip()
    return {"unit": unit_name(name), "path": path, "active": state, "action": action,
            "exec": unit.split("ExecStart=", 1)[1].split("\n", 1)[0]}


def service_logs(spec: str, name: str, lines: int = 100, ssh: SshOptions | None = None) -> str:
    """The last ``lines`` of the journal of the service `deploy --service` installed for ``name``."""
    with (ssh or SshOptions()).session(spec) as session:
        user_flag, _ = _systemd(session)
        r = session.run(f"journalctl {user_flag} -u {unit_name(name)} -n {int(lines)} --no-pager", check=False, what="journalctl")
        return r.out
