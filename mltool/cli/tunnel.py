"""Forward a local port to a port on a device over SSH (verified host key), e.g. to open `mltool serve`'s live view."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mltool.cli._options import ssh_options


@ssh_options
def tunnel(
    target: Annotated[str, typer.Argument(help="[USER@]HOST[:PORT] of the device.", show_default=False)],
    ports: Annotated[str, typer.Argument(help="PORT on the device, optionally :LOCAL_PORT here (default: the same), e.g. 8000 or 8000:18000.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the tunnel's address as a JSON line on stdout.")] = False,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """Forward 127.0.0.1:LOCAL_PORT here to 127.0.0.1:PORT on the device until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from mltool.cli._output import print_json_line, stderr_console
    from mltool.deploy.tunnel import parse_ports
    from mltool.deploy.tunnel import tunnel as run_tunnel

    remote, local = parse_ports(ports)
    console = stderr_console()
    stop = threading.Event()

    def ready(info: dict[str, Any]) -> None:
        if json_out:
            print_json_line(info)
        console.print(f"forwarding {info['local']} -> {info['remote']} on {info['host']} (Ctrl-C to stop)", soft_wrap=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        res = run_tunnel(target, remote, local, ssh=ssh, on_ready=ready, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(f"tunnel closed after {res['connections']} connection(s)")
