"""A real OpenSSH server on loopback for tests and benchmarks (Debian's openssh-server).

Throwaway host and user keys live in a temporary directory; nothing touches /etc/ssh or ~/.ssh.
The "device" it serves is this machine, so tests can look at the files a deploy wrote.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path), "-C", "mltool-test"], check=True)
    return path


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


class SshServer:
    def __init__(self, workdir: Path, client_pub: Path, port: int | None = None, sftp: bool = True) -> None:
        self.sftp = sftp  # False: no sftp subsystem, like Dropbear/BusyBox devices
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host_key = self.dir / "host_ed25519"
        if not self.host_key.exists():
            keygen(self.host_key)
        (self.dir / "authorized_keys").write_text(client_pub.read_text())
        os.chmod(self.dir / "authorized_keys", 0o600)
        self.proc: subprocess.Popen | None = None

    def new_host_key(self) -> None:
        self.host_key.unlink()
        (self.dir / "host_ed25519.pub").unlink()
        keygen(self.host_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.dir / "host_ed25519.pub")

    def _config(self) -> Path:
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            + ("Subsystem sftp internal-sftp\n" if self.sftp else "")
            + "LogLevel ERROR\nMaxStartups 100:30:200\nMaxSessions 100\n"
        )
        return cfg

    def start(self) -> SshServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self._config())],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "sshd.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    @property
    def target(self) -> str:
        import getpass

        return f"{getpass.getuser()}@127.0.0.1:{self.port}"


def stand_in_venv(venv: Path, repo: Path) -> Path:
    """A stand-in for a venv set up on the "remote" machine (this one): its ``bin/python`` runs
    this test interpreter on the checkout ``repo``. It refuses ``-m pip``: whatever is installed
    into it would land in the test environment itself."""
    import sys

    bindir = venv / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "this venv is the test environment: no pip here" >&2; exit 1; fi\n'
        f'PYTHONPATH={repo} exec {sys.executable} "$@"\n')
    os.chmod(bindir / "python", 0o755)
    return bindir / "python"
