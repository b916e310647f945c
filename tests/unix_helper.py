"""A stand-in for the image's root helpers (socket units with Accept=yes): one connection at a
time, what it was sent recorded, an answer, then the connection closed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path


class Helper:
    """A stand-in root helper: takes one connection at a time, records what it was sent,
    answers `answer` and closes (like the socket units' Accept=yes instances)."""

    def __init__(self, path: Path, answer: bytes = b"", delay_s: float = 0.0) -> None:
        self.path, self.answer, self.delay_s = path, answer, delay_s
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a client that does not wait
                self.requests.append(conn.makefile("rb").read())
                time.sleep(self.delay_s)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()
