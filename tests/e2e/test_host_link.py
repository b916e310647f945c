"""The host link with the box as a process and the reference host: one truth, recovered alone.

No POS traffic unless a test says so: the box must notice an outage and the host's return by
itself (its heartbeat while up, its probe while down), and every reader of the link agrees.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from simulators import pos as sim
from simulators.host.rules import DEFAULT_CONFIG
from simulators.host.runner import start_in_thread
from simulators.host.store import HostStore
from tests.boxproc import start_box, write_config
from tests.ports import free_port
from tests.waiting import wait_for

HEARTBEAT_S = 5
TIMEOUT_S = 2
PHONE = "2142840123"


class Site:
    """A reference host that can be stopped and started again on its port, and a box process."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.store = HostStore()
        self.config = {**DEFAULT_CONFIG, "heartbeat_s": HEARTBEAT_S}
        self.host = self.start_host()
        self.pos_port, self.status_port = free_port(), free_port()
        config = write_config(
            tmp_path,
            self.host.url,
            self.pos_port,
            self.status_port,
            f"timeout_s = {TIMEOUT_S}\nhedge_ms = 1000",  # a loaded CI machine answers slower
        )
        config.write_text(config.read_text() + f"[provisioning]\nheartbeat_s = {HEARTBEAT_S}\n")
        self.box = start_box(config, self.status_port)

    def start_host(self):
        self.host = start_in_thread("127.0.0.1", self.port, store=self.store, config=self.config)
        return self.host

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.status_port}{path}", timeout=5)

    def host_block(self) -> dict:
        return self.get("/api/status").json()["host"]

    def verdict(self) -> str:
        page = self.get("/").text
        title = re.search(r'<h1 id="verdict-title">(.*?)</h1>', page, re.S)
        return re.sub(r"\s+", " ", title.group(1)) if title else page

    def metric_state(self) -> str | None:
        found = re.search(r'connectbox_host_state\{state="(\w+)"\} 1', self.get("/metrics").text)
        return found.group(1) if found else None

    def close(self) -> None:
        self.box.terminate()
        self.box.wait(timeout=20)
        self.host.stop()


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    yield site
    site.close()


def test_stopped_host_and_its_return_are_seen_without_traffic(site):
    assert wait_for(lambda: site.host_block()["state"] == "online", 20)
    assert wait_for(lambda: "All Systems Online" in site.verdict(), 10), site.verdict()

    site.host.stop()
    stopped = time.monotonic()
    # The heartbeat notices within one interval plus its timeout (and some slack for CI).
    assert wait_for(lambda: site.host_block()["state"] == "down", HEARTBEAT_S + TIMEOUT_S + 5)
    noticed = time.monotonic() - stopped
    assert wait_for(lambda: not site.host_block()["diagnosing"], 15)
    host = site.host_block()
    # One truth: the API, the page, the metrics and the layered table agree.
    assert host["diagnosis"]["failed_layer"] == "tcp", host["diagnosis"]
    verdict = site.verdict()
    assert "The central host cannot be reached: the tcp check fails" in verdict, verdict
    assert site.metric_state() == "down"
    status = site.get("/api/status").json()
    assert status["network"]["check"]["failed_layer"] == "tcp"

    beats_before = len(site.store.heartbeats())
    site.start_host()  # back, and still nobody sells anything
    back = time.monotonic()
    assert wait_for(lambda: "All Systems Online" in site.verdict(), 20), site.verdict()
    recovered = time.monotonic() - back
    assert site.metric_state() == "online"
    # The layered check runs again on the change: shown as running, then passed.
    assert wait_for(lambda: site.get("/api/status").json()["network"]["check"]["ok"], 15)
    # The first heartbeat that reaches the host after the outage says online.
    assert wait_for(lambda: len(site.store.heartbeats()) > beats_before, HEARTBEAT_S + 5)
    first_after = site.store.heartbeats()[beats_before]
    assert first_after["status"] == "online"
    # Offline hours count from the last contact of any kind: the heartbeats reset it.
    assert time.time() - site.host_block()["last_ok"] < HEARTBEAT_S + 2
    print(f"\noutage noticed in {noticed:.1f} s, recovery shown in {recovered:.1f} s")


def test_after_a_hang_the_next_sale_is_the_hosts(site):
    assert wait_for(lambda: site.host_block()["state"] == "online", 20)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", site.pos_port) as pos:

        def sale():
            txn = sim.transaction(
                "1", counter.new_transaction(), [sim.item_line(1, "028200003843", 2, "9.49")]
            )
            return pos.send(sim.get_rewards(counter.next(), txn, PHONE))

        assert sale().loyalty_id_text != "ACCEPTED OFFLINE"
        site.host.set_fault("hang", 30)
        assert sale().loyalty_id_text == "ACCEPTED OFFLINE"  # decided by the box's policy
        assert site.host_block()["state"] in ("degraded", "down")
        site.host.set_fault("ok")
        # The very next sale: the host answers within the hedge, so the host decides.
        answer = sale()
        assert answer.loyalty_id_text != "ACCEPTED OFFLINE", answer.loyalty_id_text
        assert answer.add_rewards and answer.receipt_lines  # the host's receipt text
