"""Fixtures for provisioning tests: the real reference host on 127.0.0.1, with every request
recorded (method, path, Authorization header, status), and an enrolled box's credentials and
host link."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioning.api import HostClient
from provisioning.enrollment import Enroller
from provisioning.link import HostLink
from provisioning.store import CREDENTIALS_FILE, Credentials, CredentialStore
from simulators.host.runner import RunningHost, start_in_thread

SITE = "S-1001"


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None
    status: int | None = None
    if_none_match: str | None = None


@dataclass
class Recorder:
    """WSGI middleware around the reference host: records every request, and can fail some
    (`fail(predicate, mode)`: "before" answers 500 without reaching the host, "after" lets the
    host handle it and then answers 500, as if the answer was lost on the way)."""

    app: Any
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[Callable[[str, str], bool], str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        call = Call(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("HTTP_AUTHORIZATION"),
            if_none_match=environ.get("HTTP_IF_NONE_MATCH"),
        )
        with self.lock:
            self.calls.append(call)
            mode = next((m for pred, m in self.faults if pred(call.method, call.path)), None)
        if mode == "before":
            call.status = 500
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"error": {"code": "test_fault", "message": "injected"}}']
        if mode == "after":
            result = self.app(environ, lambda *a, **k: lambda data: None)
            try:
                for _ in result:
                    pass
            finally:
                if hasattr(result, "close"):
                    result.close()
            call.status = 500
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"error": {"code": "test_fault", "message": "answer lost"}}']

        def recording_start(status: str, headers: list, exc_info: Any = None) -> Any:
            call.status = int(status.split()[0])
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start)

    def fail(self, predicate: Callable[[str, str], bool], mode: str = "before") -> None:
        with self.lock:
            self.faults.append((predicate, mode))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


def record(host: RunningHost) -> Recorder:
    recorder = Recorder(host.app.wsgi_app)
    host.app.wsgi_app = recorder  # type: ignore[method-assign]
    return recorder


@pytest.fixture
def host(request: pytest.FixtureRequest) -> Iterator[RunningHost]:
    options = getattr(request, "param", None) or {}
    running = start_in_thread("127.0.0.1", 0, **options)
    running.recorder = record(running)  # type: ignore[attr-defined]
    yield running
    running.stop()


@dataclass
class Box:
    """An enrolled box: its credentials store, credentials and host link (with its client)."""

    data_dir: Path
    store: CredentialStore
    creds: Credentials
    link: HostLink

    @property
    def client(self) -> HostClient:
        return self.link.client


def enroll(host: RunningHost, data_dir: Path, code: str = "TEST-0001", serial: str = "SN-1") -> Box:
    host.store.add_claim_code(code, SITE)
    store = CredentialStore(data_dir / CREDENTIALS_FILE)
    creds = Enroller(host.url, store, serial, code, timeout_s=5).enroll_once()
    return Box(data_dir, store, creds, link_for(host.url, creds.device_id, creds.token))


def link_for(url: str, device_id: str, token: str) -> HostLink:
    """A host link with these credentials (its probing thread is not started)."""
    link = HostLink(url, timeout_s=5)
    link.use(device_id, token)
    return link


@pytest.fixture
def box(host: RunningHost, tmp_path: Path) -> Box:
    return enroll(host, tmp_path / "box")
