"""The status page under test: a real box (reference host, real POS port) and its status app.

`status_site(...)` builds a box with `make_box`, sets the site PIN, and serves a status app made
by `create_app` from the box's own controls on its own loopback port, with a status that merges
`site.extra` into the box's (the test hook for sections the box does not report yet, like a
reader gone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from flask import Flask
from waitress.server import create_server

from app.box import Box
from app.status.web import create_app
from app.web_server import serve_in_thread, stop_server
from simulators import pos as sim
from simulators.host.runner import start_in_thread
from tests.waiting import wait_for

PIN = "pin-4821"
PHONE = "2142840123"
TOBACCO = "028200003843"


@dataclass
class StatusSite:
    box: Box
    app: Flask = field(init=False)
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return {**self.box.status(), **self.extra}

    def serving(self) -> bool:
        return self.box.status_source.serving()

    def make_app(self, **controls: Any) -> Flask:
        """A status app of this site; `controls` replace some of the box's (e.g. network=None)."""
        return create_app(self, replace(self.box.controls, **controls))


def sale(box: Box, loyalty_id: str | None = PHONE, register: str = "1", pos=None, entry="manual"):
    """GetRewards + FinalizeRewards of two packs of cigarettes; on `pos` when given."""
    counter = sim.SHARED_COUNTER  # POS transaction ids keep rising across sales
    client = pos or sim.PosClient("127.0.0.1", box.pos_server.port)
    try:
        txn = sim.transaction(
            register,
            counter.new_transaction(),
            [sim.item_line(1, TOBACCO, 2, "9.49", description="MARLBORO GOLD BOX")],
        )
        first = client.send(sim.get_rewards(counter.next(register), txn, loyalty_id, entry))
        head = sim.header(counter.next(register), first.header.loyalty_sequence_id)
        return first, client.send(sim.finalize(head, txn, loyalty_id, entry))
    finally:
        if pos is None:
            client.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Serve a Flask app with waitress on a free loopback port; returns its base URL."""
    servers = []

    def start(app: Flask) -> str:
        server = create_server(app, host="127.0.0.1", port=0, threads=4)
        servers.append((server, serve_in_thread(server, "status-test-web")))
        return f"http://127.0.0.1:{server.effective_port}"

    yield start
    for server, thread in servers:
        stop_server(server, thread)


class Host:
    """The reference central host, which a test may stop to take the host away."""

    def __init__(self) -> None:
        self._running = start_in_thread("127.0.0.1", 0)
        self.url = self._running.url
        self.store = self._running.store

    def stop(self) -> None:
        self._running.stop()  # idempotent: the fixture stops it again


@pytest.fixture
def host() -> Iterator[Host]:
    running = Host()
    yield running
    running.stop()


@pytest.fixture
def status_site(host, make_box, serve) -> Callable[..., StatusSite]:
    def make(pin: str | None = PIN, **box_options: Any) -> StatusSite:
        box = make_box(host.url, **box_options)
        box.config.status.pin = pin  # the [status] pin setting
        site = StatusSite(box)
        site.app = site.make_app()
        site.url = serve(site.app)
        assert wait_for(lambda: box.policies.current() is not None), "no policy from the host"
        # first discovery runs in the background: let it finish
        wait_for(lambda: box.network.snapshot().get("refreshed_at") is not None)
        return site

    return make
