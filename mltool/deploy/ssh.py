"""SSH sessions with paramiko: ~/.ssh/config, strict host keys, timeouts, ProxyJump.

Host keys are checked against known_hosts. An unknown host is refused with its SHA256
fingerprint unless ``trust_new`` (then its key is recorded); a changed key is always refused.
Nothing here ever uses AutoAddPolicy.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltool.deploy.errors import CommandTimeout, DeployError, HostKeyError, UnreachableError


@dataclass
class Target:
    spec: str
    alias: str
    hostname: str
    user: str
    port: int
    identity_files: list[str] = field(default_factory=list)
    proxy_jump: str | None = None

    @property
    def label(self) -> str:
        return self.alias if self.port == 22 else f"{self.alias}:{self.port}"

    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


def ssh_config_path() -> Path:
    return Path(os.environ.get("MLTOOL_SSH_CONFIG", Path.home() / ".ssh" / "config"))


def parse_target(spec: str, *, port: int | None = None, identity: Path | None = None, user: str | None = None) -> Target:
    """``[USER@]HOST[:PORT]`` resolved through ~/.ssh/config (HostName, User, Port, IdentityFile,
    ProxyJump). What the spec says wins, then flags, then the config, then defaults."""
    from mltool.errors import ConfigError

    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"'{spec}' is not a target", "use [USER@]HOST[:PORT], e.g. pi@raspberrypi.local")
    alias = m.group("host").strip("[]")
    if m.group("port") and not 1 <= int(m.group("port")) <= 65535:
        raise ConfigError(f"'{spec}' has port {m.group('port')}, which is not a TCP port", "use a port from 1 to 65535")
    cfg: dict[str, Any] = {}
    path = ssh_config_path()
    if path.is_file():
        import paramiko

        cfg = paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    identities = [str(identity)] if identity else [os.path.expanduser(p) for p in cfg.get("identityfile", [])]
    return Target(
        spec=spec, alias=alias,
        hostname=cfg.get("hostname", alias),
        user=m.group("user") or user or cfg.get("user") or getpass.getuser(),
        port=_port(m.group("port") or port or cfg.get("port") or 22, spec),
        identity_files=[p for p in identities if os.path.exists(p)] if not identity else identities,
        proxy_jump=cfg.get("proxyjump"),
    )


def _port(value: Any, spec: str) -> int:
    from mltool.errors import ConfigError

    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"port {value!r} for {spec} is not a number", "use a port from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} for {spec} is not a TCP port", "use a port from 1 to 65535")
    return port


def qpath(path: str) -> str:
    """Shell-quote a remote path but keep a leading ~/ for the remote shell to expand."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def fingerprint(key: Any) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def default_known_hosts() -> Path:
    return Path(os.environ.get("MLTOOL_KNOWN_HOSTS", Path.home() / ".ssh" / "known_hosts"))


@dataclass
class SshOptions:
    """How to reach devices: shared by deploy, releases, rollback and logs."""

    identity: Path | None = None
    port: int | None = None
    known_hosts: Path | None = None
    trust_new_host: bool = False
    timeout: float = 10.0
    command_timeout: float = 120.0

    def session(self, spec: str) -> Session:
        """An unconnected :class:`Session` to ``spec`` (``[USER@]HOST[:PORT]`` or an ssh-config alias)."""
        target = parse_target(spec, port=self.port, identity=self.identity)
        return Session(target, known_hosts=self.known_hosts, trust_new=self.trust_new_host,
                       timeout=self.timeout, command_timeout=self.command_timeout)


@dataclass
class CommandResult:
    rc: int
    out: str
    err: str


class Session:
    """One connection to one device."""

    def __init__(self, target: Target, *, known_hosts: Path | None = None, trust_new: bool = False,
                 timeout: float = 10.0, command_timeout: float = 120.0) -> None:
        self.target = target
        self.known_hosts = known_hosts or default_known_hosts()
        self.trust_new = trust_new
        self.timeout = timeout
        self.command_timeout = command_timeout
        self.client: Any = None
        self._jump: Session | None = None
        self.bytes_sent = 0
        self.sftp_ok: bool | None = None  # None until tried; False: the device has no SFTP (exec upload)
        self.sftp_refused: str | None = None

    # ------------------------------------------------------------------ connect
    def connect(self) -> Session:
        import paramiko

        t = self.target
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        session = self

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                fp = fingerprint(key)
                if not session.trust_new:
                    raise HostKeyError(
                        f"unknown host key for {hostname} ({key.get_name()} {fp}); not in {session.known_hosts}",
                        "check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then pass --trust-new-host to record it",
                    )
                client.get_host_keys().add(hostname, key.get_name(), key)
                session.known_hosts.parent.mkdir(parents=True, exist_ok=True)
                with open(session.known_hosts, "a") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

        client.set_missing_host_key_policy(_Policy())
        sock = self._proxy_sock() if t.proxy_jump else None
        try:
            client.connect(
                t.hostname, port=t.port, username=t.user, key_filename=t.identity_files or None,
                timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                channel_timeout=self.timeout, allow_agent=True, look_for_keys=not t.identity_files, sock=sock,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"HOST KEY CHANGED for {t.label}: known_hosts has {fingerprint(exc.expected_key)}, the server offers "
                f"{fingerprint(exc.key)}; refusing to connect (possible man-in-the-middle)",
                f"if the device was reinstalled, verify the new key and run: ssh-keygen -R '{t.known_hosts_name()}' -f {self.known_hosts}",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise UnreachableError(
                f"authentication failed for {t.user}@{t.label} ({exc})",
                "pass --identity KEY, load your key into ssh-agent, or install it with ssh-copy-id",
            ) from None
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
            client.close()
            reason = str(exc) or type(exc).__name__
            raise UnreachableError(
                f"cannot reach {t.user}@{t.label} ({reason})",
                f"check that the device is on, on the network, and running sshd on port {t.port} (timeout {self.timeout:g}s)",
            ) from None
        transport = client.get_transport()
        transport.set_keepalive(15)
        self.client = client
        return self

    def _proxy_sock(self) -> Any:
        jump = parse_target(self.target.proxy_jump.split(",")[0])  # type: ignore[union-attr]
        self._jump = Session(jump, known_hosts=self.known_hosts, trust_new=self.trust_new, timeout=self.timeout).connect()
        return self._jump.client.get_transport().open_channel(
            "direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0), timeout=self.timeout)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._jump is not None:
            self._jump.close()

    def __enter__(self) -> Session:
        return self.connect() if self.client is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _lost(self, what: str, exc: BaseException) -> DeployError:
        reason = str(exc) or type(exc).__name__
        return DeployError(f"{what} on {self.target.label} failed: the SSH connection broke ({reason})",
                           "check the device and the network, then deploy again (nothing was switched)")

    def run(self, command: str, *, timeout: float | None = None, check: bool = True, what: str | None = None) -> CommandResult:
        import paramiko

        limit = timeout or self.command_timeout
        try:
            _stdin, stdout, stderr = self.client.exec_command(command, timeout=limit)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            rc = stdout.channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise CommandTimeout(f"{what or 'a command'} on {self.target.label} timed out after {limit:g}s",
                              "the device may be overloaded; raise --command-timeout") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(what or "a command", exc) from None
        if check and rc != 0:
            detail = (err.strip() or out.strip()).splitlines()
            raise DeployError(f"{what or 'command'} failed on {self.target.label} (exit {rc}"
                              + (f"): {detail[-1]}" if detail else ", no output)"),
                              "see the device's message above")
        return CommandResult(rc, out, err)

    def python(self, script: str, *args: str, interpreter: str = "python3", timeout: float | None = None,
               what: str | None = None, check: bool = True) -> CommandResult:
        cmd = " ".join([qpath(interpreter), "-c", shlex.quote(script), *map(shlex.quote, args)])
        return self.run(cmd, timeout=timeout, what=what, check=check)

    def put(self, local: Path, remote: str) -> int:
        """Upload ``local`` to ``remote``: SFTP's pipelined put (much faster than writing through
        a file object), or, on devices without an SFTP subsystem (Dropbear, BusyBox, a trimmed
        sshd), the bytes streamed into ``cat`` over an exec channel. Either way the caller verifies
        the SHA-256 on the device before anything is renamed into place."""
        import paramiko

        try:
            sftp = None
            if self.sftp_ok is not False:
                try:
                    sftp = self.client.open_sftp()
                    self.sftp_ok = True
                except (paramiko.SSHException, EOFError) as exc:  # "subsystem request failed", "Channel closed"
                    self.sftp_ok, self.sftp_refused = False, str(exc) or type(exc).__name__
            if sftp is not None:
                try:
                    sftp.put(str(local), remote, confirm=True)
                finally:
                    sftp.close()
            else:
                self.put_exec(local, remote)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"upload of {local.name}", exc) from None
        size = local.stat().st_size
        self.bytes_sent += size
        return size

    def put_exec(self, local: Path, remote: str, chunk: int = 1 << 18) -> None:
        """Stream ``local`` into ``cat > remote`` over an exec channel (no SFTP needed)."""
        chan = self.client.get_transport().open_session(timeout=self.timeout)
        try:
            chan.settimeout(self.command_timeout)
            chan.exec_command(f"cat > {qpath(remote)}")
            with open(local, "rb") as fh:
                for block in iter(lambda: fh.read(chunk), b""):
                    chan.sendall(block)
            chan.shutdown_write()
            rc = chan.recv_exit_status()
            err = chan.recv_stderr(4096) if chan.recv_stderr_ready() else b""
        finally:
            chan.close()
        if rc != 0:
            raise DeployError(f"upload of {local.name} to {self.target.label} failed (exit {rc}): "
                              f"{err.decode(errors='replace').strip()[-200:]}", "check free space and permissions on the device")


def connect(target: Target, **kw: Any) -> Session:
    return Session(target, **kw).connect()

