"""A real Mosquitto broker on loopback for tests and benchmarks (Debian's `mosquitto`), and a real
subscriber (`mosquitto_sub`, libmosquitto: not the client mltool publishes with).

Each broker gets its own directory: a generated config, optional password file (mosquitto_passwd),
optional TLS with a throwaway CA, persistence (so a restart keeps persistent sessions and their
queued messages), and a log file tests can read.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SUB_FORMAT = '{"topic":"%t","retain":%r,"qos":%q,"hex":"%x"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Tls:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(out: Path, name: str = "mltool test CA") -> Tls:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(key, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        os.chmod(path, 0o600)
        return path

    def cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = cert(name, ca_key, ca_name, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = cert("localhost", srv_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
               san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = cert("mltool-device", cli_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (out / "server.pem").write_bytes(srv.public_bytes(pem))
    (out / "client.pem").write_bytes(cli.public_bytes(pem))
    return Tls(out / "ca.pem", out / "server.pem", write_key(srv_key, out / "server.key"),
               out / "client.pem", write_key(cli_key, out / "client.key"))


class Broker:
    def __init__(self, workdir: Path, *, port: int | None = None, users: dict[str, str] | None = None,
                 tls: Tls | None = None, require_client_cert: bool = False, acl: str | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = users
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.acl = acl  # mosquitto acl_file text (user/topic/pattern lines)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "mosquitto.log"

    def _config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if self.users else 'true'}",
                 "persistence true", f"persistence_location {self.dir}/", "max_queued_messages 0",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "connection_messages true"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user 'mosquitto' and cannot write here
        if self.users:
            pw = self.dir / "passwd"
            pw.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password],
                               check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        if self.acl is not None:
            (self.dir / "acl").write_text(self.acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}"]
            if self.require_client_cert:
                lines.append("require_certificate true")
        cfg = self.dir / "mosquitto.conf"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self._config())], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}{(self.dir / 'stderr.log').read_text()[-1000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """A clean stop: persistent sessions and their queued messages are saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, prefix: str = "test", user: str | None = None) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}/{prefix}"


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """`mosquitto_sub` printing one JSON line per message (payload in hex, so JPEGs survive).
    ``persistent`` keeps its session (clean session off, fixed id, QoS 1) across broker restarts."""

    def __init__(self, broker: Broker, topics: list[str], *, persistent: bool = False, user: str | None = None,
                 password: str | None = None) -> None:
        self.broker = broker
        self.topics = topics
        self.id = f"sub-{uuid.uuid4().hex[:8]}"
        self.persistent = persistent
        self.auth = ["-u", user, "-P", password or ""] if user else []
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Subscriber:
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1", "-i", self.id,
                "-F", SUB_FORMAT, *self.auth, "-t", f"probe/{self.id}"]
        if self.persistent:
            args.append("-c")
        if self.broker.tls:
            args += ["--cafile", str(self.broker.tls.ca), "--cert", str(self.broker.tls.client_cert),
                     "--key", str(self.broker.tls.client_key)]
        for t in self.topics:
            args += ["-t", t]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._probe()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            d = json.loads(line)
            with self._cond:
                self.messages.append(Message(d["topic"], bytes.fromhex(d["hex"]), bool(d["retain"])))
                self._cond.notify_all()

    def _probe(self, timeout: float = 10) -> None:
        """Wait until the subscription is live: publish to our probe topic until it comes back."""
        topic = f"probe/{self.id}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-t", topic, "-m", "x", *self.auth]
            if self.broker.tls:
                args += ["--cafile", str(self.broker.tls.ca), "--cert", str(self.broker.tls.client_cert),
                         "--key", str(self.broker.tls.client_key)]
            subprocess.run(args, capture_output=True, timeout=10)
            if self.wait_for(lambda ms: any(m.topic == topic for m in ms), 0.5):
                with self._cond:
                    self.messages = [m for m in self.messages if m.topic != topic]
                return
        raise RuntimeError("mosquitto_sub did not subscribe")

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def json(self, topic: str) -> list[dict]:
        return [m.json() for m in self.on(topic)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
