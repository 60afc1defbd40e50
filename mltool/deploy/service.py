"""``--service "infer --camera ..."``: a systemd unit that runs an mltool command on the device
against the current release, restarted on failure and at boot.

``--service "serve ..."`` is different on purpose: the unit names the model's folder, which
`mltool serve` follows (its ``current`` link), so a new deploy hot-reloads the running server
(``systemctl reload`` sends SIGHUP) instead of restarting it and dropping requests."""

from __future__ import annotations

import shlex
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.deploy.ssh import Session, SshOptions, qpath
from mltool.layout import DeviceLayout


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


AGENT_UNIT = "mltool-agent.service"


def render_agent_unit(layout: DeviceLayout, url: str, labels: list[str], home: str, files: dict[str, str]) -> str:
    """The unit that runs `mltool agent URL` (the URL without a password: that goes to
    ROOT/mltool.env as MLTOOL_MQTT_PASSWORD, which the agent reads like infer --mqtt does)."""
    here = layout.expanded(home)
    argv = [here.mltool, "agent", url, "--remote-dir", here.root]
    for label in labels:
        argv += ["--label", label]
    for opt, path in sorted(files.items()):
        argv += [f"--mqtt-{opt}", path]
    return (
        "[Unit]\nDescription=mltool agent (pulls releases through the MQTT broker)\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={' '.join(shlex.quote(a) for a in argv)}\n"
        "Restart=always\nRestartSec=10\nSuccessExitStatus=130\n"
        f"EnvironmentFile=-{here.root}/mltool.env\n"
        "Environment=PYTHONUNBUFFERED=1\n\n"
        "[Install]\nWantedBy=default.target\n"
    )


_MERGE_ENV = r"""import os, sys
new, env = sys.argv[1], sys.argv[2]
keys = {}
with open(new) as fh:
    for line in fh:
        if "=" in line:
            keys[line.split("=", 1)[0].strip()] = line
old = []
if os.path.exists(env):
    with open(env) as fh:
        old = [l for l in fh if l.split("=", 1)[0].strip() not in keys]
fd = os.open(env + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    fh.writelines(old + [v if v.endswith("\n") else v + "\n" for v in keys.values()])
os.chmod(env + ".tmp", 0o600)
os.replace(env + ".tmp", env)
os.remove(new)
"""


def stage_agent(session: Session, layout: DeviceLayout, url: str, mqtt_files: dict[str, Any]) -> tuple[str, dict[str, str], str | None]:
    """Put what the agent unit needs on the device: TLS files in ROOT/agent/ (0600), the password
    from the URL and the lines of ``--mqtt-credentials`` merged into ROOT/mltool.env (0600).
    Returns (the URL without its password, the remote TLS files, the env file or None)."""
    import os
    import tempfile
    from pathlib import Path

    from mltool.report.config import mask_url, parse_url, read_credentials

    password = parse_url(url)[4]
    clean = mask_url(url).replace(":***@", "@") if password is not None else url
    env_lines: list[str] = []
    if mqtt_files.get("credentials"):
        values, _ = read_credentials(Path(mqtt_files["credentials"]))
        env_lines += [f"{k}={v}" for k, v in values.items()]
    if password is not None:
        env_lines.append(f"MLTOOL_MQTT_PASSWORD={password}")
    home = session.run('printf %s "$HOME"').out
    here = layout.expanded(home)
    session.run(f"mkdir -p {qpath(here.root + '/agent')}", what="make the agent folder")
    remote_files: dict[str, str] = {}
    for opt in ("ca", "cert", "key"):
        if mqtt_files.get(opt):
            dest = f"{here.root}/agent/{opt}.pem"
            session.put(Path(mqtt_files[opt]), dest)
            session.run(f"chmod 600 {qpath(dest)}")
            remote_files[opt] = dest
    env_path = None
    if env_lines:
        fd, tmp = tempfile.mkstemp()
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(env_lines) + "\n")
            new = f"{here.root}/.mltool.env.new"
            env_path = f"{here.root}/mltool.env"
            session.put(Path(tmp), new)
            session.run(f"chmod 600 {qpath(new)} && python3 -c {shlex.quote(_MERGE_ENV)} {qpath(new)} {qpath(env_path)}",
                        what="write mltool.env")
        finally:
            os.unlink(tmp)
    return clean, remote_files, env_path


def install_agent(session: Session, layout: DeviceLayout, url: str, labels: list[str],
                  mqtt_files: dict[str, Any]) -> dict[str, Any]:
    """Install `mltool agent URL --label ...` as a systemd unit (secrets: see :func:`stage_agent`;
    never on the unit's command line)."""
    from mltool.deploy.agent import parse_labels

    parse_labels(labels)
    user_flag, unit_dir = _systemd(session)
    clean, remote_files, env_path = stage_agent(session, layout, url, mqtt_files)
    home = session.run('printf %s "$HOME"').out
    unit = render_agent_unit(layout, clean, labels, home, remote_files)
    path = f"{unit_dir}/{AGENT_UNIT}"
    sc = f"systemctl {user_flag}".strip()
    session.run(f"mkdir -p {qpath(unit_dir)} && cat > {qpath(path)} <<'MLTOOL_UNIT'\n{unit}MLTOOL_UNIT", what="write unit")
    session.run(f"{sc} daemon-reload && {sc} enable {AGENT_UNIT} && {sc} restart {AGENT_UNIT}", what="start the agent")
    if user_flag:
        session.run("loginctl enable-linger \"$USER\"", check=False)
    state = session.run(f"{sc} is-active {AGENT_UNIT}", check=False).out.strip()
    return {"unit": AGENT_UNIT, "path": path, "active": state, "action": "restart",
            "exec": unit.split("ExecStart=", 1)[1].split("\n", 1)[0], "secrets_in": env_path}


def service_logs(spec: str, name: str, lines: int = 100, ssh: SshOptions | None = None) -> str:
    """The last ``lines`` of the journal of the service `deploy --service` installed for ``name``."""
    with (ssh or SshOptions()).session(spec) as session:
        user_flag, _ = _systemd(session)
        r = session.run(f"journalctl {user_flag} -u {unit_name(name)} -n {int(lines)} --no-pager", check=False, what="journalctl")
        return r.out
