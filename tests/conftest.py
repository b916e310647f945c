"""Shared fixtures: the real reference host, a real box on loopback ports, the shared/ folder."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.box import Box
from app.config import Config
from simulators.demo import demo_config

SHARED = Path(os.environ.get("CONNECTBOX_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "field-captures").is_dir():
        pytest.fail(f"shared/ not found at {SHARED}; set CONNECTBOX_SHARED")
    return SHARED


@pytest.fixture
def reference_host():
    from simulators.host.runner import start_in_thread

    host = start_in_thread("127.0.0.1", 0)
    yield host
    host.stop()


@pytest.fixture
def boxes_started(tmp_path) -> Iterator[Callable[[str, Callable[[Config], object]], Box]]:
    """`start(host_url, adjust)`: a Box from the demo configuration on free loopback ports,
    `adjust(config)` first; every box is stopped after the test."""
    boxes: list[Box] = []

    def start(host_url: str, adjust: Callable[[Config], object]) -> Box:
        config = demo_config(host_url, 0, 0, tmp_path / f"data{len(boxes)}")
        adjust(config)
        box = Box(config)
        box.start()
        boxes.append(box)
        return box

    yield start
    for box in boxes:
        box.stop()


@pytest.fixture
def make_box(boxes_started) -> Callable[..., Box]:
    """Build and start a Box on free loopback ports; every box is stopped after the test."""

    def make(
        host_url: str,
        dialect: str = "auto",
        deadline_ms: int = 1500,
        readers: list | None = None,
        pending_ttl_s: int = 120,
    ) -> Box:
        def adjust(config: Config) -> None:
            config.pos.dialect = dialect
            config.host.deadline_ms = deadline_ms
            config.readers.bindings = readers or []
            config.readers.pending_ttl_s = pending_ttl_s

        return boxes_started(host_url, adjust)

    return make


@pytest.fixture
def box_with(boxes_started, reference_host) -> Callable[..., Box]:
    """A started box on the reference host whose [pos] settings the test chooses."""

    def make(**pos: object) -> Box:
        return boxes_started(reference_host.url, lambda config: vars(config.pos).update(pos))

    return make


class SilentHost:
    """A 'host' that accepts connections and never answers: the hanging-host case."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_host():
    host = SilentHost()
    yield host
    host.close()


@pytest.fixture
def dead_host_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
