"""A real HTTP server on loopback for pull-deploy tests and benchmarks: serves files (GET with
``Range``, HEAD) from a folder and accepts ``PUT`` into it, like an nginx WebDAV endpoint."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class ArtifactServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.fail_after: int | None = None  # GET: close the connection after this many bytes (once)
        self.status_for: dict[str, int] = {}  # path -> status to answer instead
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _file(self) -> Path:
                return outer.root / self.path.lstrip("/")

            def do_HEAD(self) -> None:
                self._get(head=True)

            def do_GET(self) -> None:
                self._get(head=False)

            def _get(self, head: bool) -> None:
                rng = self.headers.get("Range")
                outer.requests.append((self.command, self.path, rng))
                if self.path in outer.status_for:
                    self.send_response(outer.status_for[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                f = self._file()
                if not f.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = f.read_bytes()
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                if outer.fail_after is not None and not rng:
                    cut, outer.fail_after = outer.fail_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def do_PUT(self) -> None:
                outer.requests.append(("PUT", self.path, None))
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                f = self._file()
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> ArtifactServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
