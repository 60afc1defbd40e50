"""A real MJPEG-over-HTTP camera for tests: multipart/x-mixed-replace JPEG frames on loopback.

It can be stopped and restarted on the same port (to prove reconnection), told to stall (send
headers, then nothing) to prove that reads time out instead of hanging, and told to misbehave in
the ways hostile or broken cameras do (``MISBEHAVIOURS``) to prove memory stays bounded.
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


MISBEHAVIOURS = {
    "no_newline": "a part header, then bytes with no line break, as fast as the socket takes them",
    "negative_length": "Content-Length: -5",
    "huge_length": "Content-Length of 2 GB, then bytes forever",
    "endless_part": "a part without Content-Length whose boundary never comes",
    "trickle": "one byte every 50 ms, never completing a line",
}


class MjpegServer:
    def __init__(self, fps: float = 30.0, frames: list[bytes] | None = None, misbehave: str | None = None) -> None:
        self.fps = fps
        self.frames = frames or jpeg_frames()
        self.stall = False
        self.misbehave = misbehave
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
                if server.misbehave:
                    return self._misbehave(server.misbehave)
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

            def _misbehave(self, how: str) -> None:
                junk = bytes(range(14, 256)) * 256  # no \n, no \r
                head = {"no_newline": b"--frame\r\nContent-Type: image/jpeg\r\n",
                        "negative_length": b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: -5\r\n\r\n",
                        "huge_length": b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 2000000000\r\n\r\n",
                        "endless_part": b"--frame\r\nContent-Type: image/jpeg\r\n\r\n",
                        "trickle": b"--frame\r\nContent-Type: image/jpeg\r\n"}[how]
                try:
                    self.wfile.write(head)
                    while server.httpd is not None and not getattr(self.server, "_closing", False):
                        if how == "trickle":
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.05)
                        else:
                            self.wfile.write(junk)
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
