"""A real MJPEG-over-HTTP camera for tests: multipart/x-mixed-replace JPEG frames on loopback.

It can be stopped and restarted on the same port (to prove reconnection) and can be told to
stall (send headers, then nothing) to prove that reads time out instead of hanging.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


def jpeg_frames(n: int = 16, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    """Distinct JPEG frames, each with its number drawn in."""
    frames = []
    for i in range(n):
        img = np.full((size[1], size[0], 3), (i * 15) % 255, np.uint8)
        cv2.putText(img, str(i), (10, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        frames.append(cv2.imencode(".jpg", img)[1].tobytes())
    return frames


class MjpegServer:
    def __init__(self, fps: float = 30.0, frames: list[bytes] | None = None) -> None:
        self.fps = fps
        self.frames = frames or jpeg_frames()
        self.stall = False
        self.sent = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path == "/snapshot.jpg":
                    body = server.frames[server.sent % len(server.frames)]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while server.httpd is not None and not getattr(self.server, "_closing", False):
                        if server.stall:
                            time.sleep(0.05)
                            continue
                        body = server.frames[server.sent % len(server.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n")
                        self.wfile.flush()
                        server.sent += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        return Handler

    def start(self) -> MjpegServer:
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd._closing = True  # type: ignore[attr-defined]
            httpd.shutdown()
            httpd.server_close()
