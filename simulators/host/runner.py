"""Serving the reference host: on a background thread (tests and the demo) or in the foreground
(`connectbox host-sim`), with waitress, stopped through `app/web_server.py`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from waitress import create_server

from app.web_server import serve_in_thread, stop_server
from simulators.host import keys
from simulators.host.context import SimState
from simulators.host.policy import load_policy
from simulators.host.routes import create_app
from simulators.host.store import DEMO_DEVICE, HostStore


@dataclass
class RunningHost:
    """A reference host serving on a background thread (tests and the demo)."""

    url: str
    store: HostStore
    app: Flask
    _server: Any
    _thread: threading.Thread
    _sim: SimState

    def set_fault(self, mode: str, seconds: float = 0.0) -> None:
        self._sim.set(mode, seconds)

    def publish(self, name: str, path: Path) -> str:
        """Serve the file at `path` as `/_sim/files/<name>` (HTTP Range too); its URL."""
        with self._sim.lock:
            self._sim.files[name] = Path(path)
        return f"{self.url}/_sim/files/{name}"

    def downloads(self) -> list[tuple[str, str | None]]:
        """The `/_sim/files/` requests so far: (name, Range header)."""
        with self._sim.lock:
            return list(self._sim.downloads)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; idempotent (a test may stop it, and then its fixture again)."""
        self._sim.stopping.set()  # release requests held by the "hang" fault
        stop_server(self._server, self._thread, timeout)

    def __enter__(self) -> RunningHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _server(app: Flask, host: str, port: int) -> Any:
    server = create_server(app, host=host, port=port, threads=8, clear_untrusted_proxy_headers=True)
    if not hasattr(server, "effective_port"):  # a name that resolved to several addresses
        stop_server(server)
        raise ValueError(f"listen on one address (e.g. 127.0.0.1), not {host!r}")
    return server


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    store: HostStore | None = None,
    policy_path: str | None = None,
    **app_options: Any,
) -> RunningHost:
    """Start a reference host on `host:port` (0: any free port) and return once it listens."""
    store = store or HostStore()
    sim = app_options.pop("sim", None) or SimState()
    policy = app_options.pop("policy", None)
    if policy is None and policy_path:
        policy = load_policy(policy_path)
    app = create_app(store, policy, sim=sim, **app_options)
    server = _server(app, host, port)
    thread = serve_in_thread(server, "reference-host")
    url = f"http://{_url_host(server.effective_host)}:{server.effective_port}"
    return RunningHost(url, store, app, server, thread, sim)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    host: str, port: int, store_path: str = ":memory:", policy_path: str | None = None
) -> None:
    """Serve the reference host until interrupted (blocking)."""
    store = HostStore(store_path)
    app = create_app(store, load_policy(policy_path))
    server = _server(app, host, port)
    url = f"http://{_url_host(server.effective_host)}:{server.effective_port}"
    print(f"reference host on {url}\n\n{box_settings(url)}", flush=True)
    try:
        server.run()
    finally:
        stop_server(server)  # the loop has ended (Ctrl-C): close what it left open
        store.close()


def box_settings(url: str) -> str:
    """The lines a box's configuration needs to use this host: its demo device, and its signing
    key among the trusted ones (else the box refuses the host's policy)."""
    device = DEMO_DEVICE
    return (
        "# For a box using this host (connectbox run --config FILE), paste into FILE. The key is\n"
        "# a public TEST key: never trust it on a real site.\n"
        f'[host]\nurl = "{url}"\ndevice_id = "{device.device_id}"\n'
        f'site_id = "{device.site_id}"\ntoken = "{device.token}"\n\n'
        f"[policy]\n# TEST signing key {keys.TEST_KEY_ID}, public key {keys.TEST_PUBLIC_KEY_B64}\n"
        f'trusted_keys = {{ {keys.TEST_KEY_ID} = "{keys.TEST_PUBLIC_KEY_B64}" }}\n'
    )
