"""The host link against the real reference host: one state, guards, recovery without traffic."""

from __future__ import annotations

import threading

import pytest

from provisioning.api import HostError
from provisioning.link import HostLink, LinkState, Refused
from simulators.host.runner import start_in_thread
from tests.ports import free_port
from tests.waiting import wait_for


@pytest.fixture
def link(reference_host):
    link = HostLink(reference_host.url, timeout_s=2, probe_min_s=0.05, probe_max_s=0.2)
    yield link
    link.stop()


def test_not_enrolled_makes_no_call_at_all(reference_host, link):
    with pytest.raises(Refused, match="not enrolled"):
        link.client.rewards({"device_id": "D-DEMO"})
    assert link.state is LinkState.NOT_ENROLLED
    assert reference_host.store.rewards_requests() == []
    assert link.counters == {"ok": 0, "timeout": 0, "error": 0}


def test_every_call_reports_and_a_refused_token_is_not_used_again(reference_host, link):
    link.use("D-DEMO", "demo-token")
    assert link.state is LinkState.UNKNOWN
    link.client.config()
    assert link.state is LinkState.ONLINE and link.last_ok is not None
    link.use("D-DEMO", "revoked-token")
    with pytest.raises(HostError) as refused:
        link.client.config()
    assert refused.value.unauthorized and link.state is LinkState.UNAUTHORIZED
    with pytest.raises(Refused):  # the refused token is not sent again
        link.client.config()
    # ...but a rotated token may be confirmed, and a 401 for it does not condemn the link.
    reply = link.client.request(
        "GET", "/v1/devices/D-DEMO/config", headers={"Authorization": "Bearer demo-token"}
    )
    assert reply.status_code == 200
    # An answer to another token says the host is reachable, not that the device's token is taken.
    assert link.state is LinkState.UNAUTHORIZED and link.refuses("revoked-token")
    assert link.last_ok is not None and not link.refuses("demo-token")
    link.use("D-DEMO", "demo-token")
    link.client.config()
    assert link.state is LinkState.ONLINE


def test_down_diagnoses_at_once_and_recovers_without_traffic():
    port = free_port()
    host = start_in_thread("127.0.0.1", port)
    link = HostLink(host.url, timeout_s=1, probe_min_s=0.05, probe_max_s=0.2)
    changes: list[LinkState] = []
    diagnosed = threading.Event()
    link.on_change(lambda health: changes.append(health.state))
    link.diagnose = lambda: diagnosed.set() or {"ok": False, "failed_layer": "tcp"}
    link.use("D-DEMO", "demo-token")
    link.start()
    try:
        assert wait_for(lambda: link.state is LinkState.ONLINE)  # the first probe
        host.stop()
        with pytest.raises(HostError):
            link.client.config()
        assert link.state is LinkState.DOWN
        assert diagnosed.wait(5), "no diagnosis when the link went down"
        assert link.snapshot()["diagnosis"] == {"ok": False, "failed_layer": "tcp"}
        host = start_in_thread("127.0.0.1", port)  # back, and nobody calls it
        assert wait_for(lambda: link.state is LinkState.ONLINE)
        assert changes[-2:] == [LinkState.DOWN, LinkState.ONLINE]
    finally:
        link.stop()
        host.stop()


def test_a_slow_answer_is_a_hint_the_next_answer_settles(link):
    link.use("D-DEMO", "demo-token")
    link.client.config()
    link.slow("GetRewards")
    assert link.state is LinkState.DEGRADED and link.known_down
    link.client.config()  # the late answer of a slow call: answering, but still slow
    assert link.state is LinkState.DEGRADED
    assert link.probe()  # a quick answer
    assert link.state is LinkState.ONLINE and not link.known_down


def test_probe_backoff_grows_to_its_cap_with_jitter():
    link = HostLink("http://127.0.0.1:9", probe_min_s=2, probe_max_s=15)
    delays = [link._probe_delay(n) for n in range(1, 12)]
    assert 1.5 <= delays[0] <= 2.0
    assert all(d <= 15 for d in delays) and delays[-1] >= 11.25
