"""``--service "infer --camera ..."``: a systemd unit that runs an mltool command on the device
against the current release, restarted on failure and at boot."""

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
    # The command's first word is the subcommand; the current release's model goes right after it.
    exec_argv = [here.mltool, argv[0], here.current_model(name), *argv[1:]]
    return (
        "[Unit]\n"
        f"Description=mltool {argv[0]} ({name})\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={' '.join(shlex.quote(a) for a in exec_argv)}\n"
        "Restart=on-failure\nRestartSec=5\n"
        "Environment=PYTHONUNBUFFERED=1\n\n"
        "[Install]\nWantedBy=default.target\n"
    )


def install_service(session: Session, layout: DeviceLayout, name: str, command: str) -> dict[str, Any]:
    user_flag, unit_dir = _systemd(session)
    home = session.run('printf %s "$HOME"').out
    unit = render_unit(layout, name, command, home)
    path = f"{unit_dir}/{unit_name(name)}"
    session.run(f"mkdir -p {qpath(unit_dir)} && cat > {qpath(path)} <<'MLTOOL_UNIT'\n{unit}MLTOOL_UNIT", what="write unit")
    sc = f"systemctl {user_flag}".strip()
    session.run(f"{sc} daemon-reload && {sc} enable {unit_name(name)} && {sc} restart {unit_name(name)}", what="start service")
    if user_flag:
        session.run("loginctl enable-linger \"$USER\"", check=False)  # start at boot without a login
    state = session.run(f"{sc} is-active {unit_name(name)}", check=False).out.strip()
    return {"unit": unit_name(name), "path": path, "active": state, "exec": unit.split("ExecStart=", 1)[1].split("\n", 1)[0]}


def service_logs(spec: str, name: str, lines: int = 100, ssh: SshOptions | None = None) -> str:
    """The last ``lines`` of the journal of the service `deploy --service` installed for ``name``."""
    with (ssh or SshOptions()).session(spec) as session:
        user_flag, _ = _systemd(session)
        r = session.run(f"journalctl {user_flag} -u {unit_name(name)} -n {int(lines)} --no-pager", check=False, what="journalctl")
        return r.out
