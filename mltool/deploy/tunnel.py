"""``mltool tunnel HOST 8000[:LOCAL]``: a local port forwarded to a port on the device, over the
same verified SSH connection deploy uses (like ``ssh -L``), so a server that listens only on
the device's loopback (`mltool serve`'s default) can be used from here without exposing it."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from mltool.deploy.errors import DeployError
from mltool.deploy.ssh import SshOptions
from mltool.errors import ConfigError


def parse_ports(spec: str) -> tuple[int, int]:
    """``8000`` -> (8000, 8000); ``8000:18000`` -> (remote 8000, local 18000)."""
    remote, _, local = spec.partition(":")
    try:
        r, loc = int(remote), int(local or remote)
    except ValueError:
        raise ConfigError(f"'{spec}' is not PORT or PORT:LOCAL_PORT", "e.g. 8000 or 8000:18000") from None
    if not (0 < r < 65536 and 0 <= loc < 65536):
        raise ConfigError(f"'{spec}' has a port outside 1-65535", "e.g. 8000 or 8000:18000")
    return r, loc


def _pump(conn: socket.socket, chan: Any, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            ready, _, _ = select.select([conn, chan], [], [], 0.5)
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    break
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(65536)
                if not data:
                    break
                conn.sendall(data)
    except OSError:
        pass
    finally:
        chan.close()
        conn.close()


def tunnel(spec: str, remote_port: int, local_port: int, *, ssh: SshOptions | None = None, remote_host: str = "127.0.0.1",
           bind: str = "127.0.0.1", on_ready: Callable[[dict[str, Any]], None] = lambda d: None,
           stop: threading.Event | None = None) -> dict[str, Any]:
    """Forward ``bind:local_port`` here to ``remote_host:remote_port`` as seen from the device,
    until ``stop`` is set or the SSH connection drops. Returns counts."""
    import paramiko

    stop = stop or threading.Event()
    connections = failures = 0
    with (ssh or SshOptions()).session(spec) as session:
        transport = session.client.get_transport()
        listener = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((bind, local_port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {bind}:{local_port} ({exc.strerror})", "pick another local port: PORT:LOCAL_PORT") from None
        listener.listen(64)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        on_ready({"event": "tunnel", "local": f"http://{bind}:{port}", "local_port": port, "host": session.target.label,
                  "remote": f"{remote_host}:{remote_port}"})
        try:
            while not stop.is_set():
                if not transport.is_active():
                    raise DeployError(f"the SSH connection to {session.target.label} was lost", "run mltool tunnel again")
                try:
                    conn, peer = listener.accept()
                except socket.timeout:
                    continue
                try:
                    chan = transport.open_channel("direct-tcpip", (remote_host, remote_port), peer[:2], timeout=10)
                except (paramiko.ChannelException, paramiko.SSHException, OSError) as exc:
                    failures += 1
                    conn.close()
                    if failures == 1:
                        import sys

                        print(f"tunnel: {session.target.label} refused {remote_host}:{remote_port} ({exc}); is the server running there?",
                              file=sys.stderr, flush=True)
                    continue
                connections += 1
                threading.Thread(target=_pump, args=(conn, chan, stop), daemon=True).start()
        finally:
            listener.close()
    return {"event": "tunnel_closed", "connections": connections, "refused": failures}
