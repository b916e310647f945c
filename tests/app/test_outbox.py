"""The outbox against the real reference host (HTTP on loopback) and a real journal file."""

from __future__ import annotations

import time

import pytest
import requests

from app.journal import Journal
from app.outbox import BATCH_THRESHOLD, Backoff, Outbox
from provisioning.api import HostError
from provisioning.link import HostLink, LinkState


def _event(n: int, **extra) -> dict:
    return {
        "device_id": "D-DEMO",
        "site_id": "S-1001",
        "event": "finalize",
        "pos": {"pos_transaction_id": str(n)},
        "rewards_applied": [],
        **extra,
    }


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "journal.db")
    yield journal
    journal.close()


def _outbox(journal, host, token="demo-token") -> Outbox:
    link = HostLink(host.url, timeout_s=5)
    link.use("D-DEMO", token)
    return Outbox(journal, link, Backoff(base_s=30))


def _host_keys(host) -> list[str]:
    return [e["idempotency_key"] for e in host.store.events()]


def test_small_backlog_goes_one_by_one_in_order(journal, reference_host):
    for n in range(5):
        journal.add_event(f"e{n}", "finalize", _event(n))
    outbox = _outbox(journal, reference_host)
    assert outbox.deliver_due()
    assert _host_keys(reference_host) == [f"e{n}" for n in range(5)]
    assert journal.backlog().depth == 0 and outbox.delivered == 5
    assert not outbox.deliver_due()  # nothing left


def test_large_backlog_goes_through_the_batch_endpoint(journal, reference_host):
    count = BATCH_THRESHOLD + 30
    for n in range(count):
        journal.add_event(f"b{n:03d}", "finalize", _event(n))
    outbox = _outbox(journal, reference_host)
    assert outbox.deliver_due()
    assert _host_keys(reference_host) == [f"b{n:03d}" for n in range(count)]
    assert journal.backlog().depth == 0


def test_conflicting_replay_ends_as_conflict_not_retried(journal, reference_host):
    # The host already holds this key with another body (e.g. an older software version's).
    requests.post(
        reference_host.url + "/v1/transactions",
        json=_event(1, final_total="1.00"),
        headers={"Authorization": "Bearer demo-token", "Idempotency-Key": "k1"},
        timeout=5,
    )
    journal.add_event("k1", "finalize", _event(1, final_total="2.00"))
    journal.add_event("k2", "finalize", _event(2))
    outbox = _outbox(journal, reference_host)
    outbox.deliver_due()
    backlog = journal.backlog()
    assert (backlog.depth, backlog.conflicts) == (0, 1)
    assert journal.get_event("k1").state == "conflict"
    assert journal.get_event("k2").state == "delivered"  # the conflict did not block the queue


def test_invalid_event_is_rejected_for_good(journal, reference_host):
    journal.add_event("bad", "finalize", {"device_id": "D-DEMO", "event": "explode"})
    outbox = _outbox(journal, reference_host)
    outbox.deliver_due()
    assert journal.get_event("bad").state == "rejected"
    assert journal.backlog().rejected == 1


def test_401_pauses_until_the_token_changes(journal, reference_host):
    journal.add_event("t1", "finalize", _event(1))
    outbox = _outbox(journal, reference_host, token="revoked")
    assert not outbox.deliver_due()
    assert outbox.paused and outbox.client.gate.unauthorized
    assert not outbox.deliver_due() and _host_keys(reference_host) == []
    outbox.client.token = "demo-token"  # a technician or the provider fixed it
    assert outbox.deliver_due()
    assert outbox.paused is None and _host_keys(reference_host) == ["t1"]


def test_paused_is_the_links_word_whoever_met_the_401(journal, reference_host):
    journal.add_event("t1", "finalize", _event(1))
    outbox = _outbox(journal, reference_host, token="revoked")
    with pytest.raises(HostError):  # another part (here: the policy refresh) meets the 401
        outbox.link.client.config()
    assert "refused" in outbox.paused and outbox.snapshot()["paused"] == outbox.paused
    assert not outbox.deliver_due() and _host_keys(reference_host) == []
    assert journal.get_event("t1").attempts == 0  # waiting for a token, not backing off
    outbox.link.use("D-DEMO", "demo-token")  # re-enrolled: the link has new credentials
    assert outbox.paused is None and outbox.deliver_due()
    assert _host_keys(reference_host) == ["t1"]


def test_the_link_going_online_skips_the_backoff(journal, reference_host):
    reference_host.set_fault("error500", 0)
    journal.add_event("r1", "finalize", _event(1))
    outbox = _outbox(journal, reference_host)
    assert not outbox.deliver_due() and outbox.link.state is LinkState.DOWN
    assert not outbox.deliver_due(), "waits out the backoff"
    reference_host.set_fault("ok", 0)
    outbox.link.client.config()  # any answer (a probe, a heartbeat) brings the link online
    assert outbox.deliver_due()
    assert _host_keys(reference_host) == ["r1"]


def test_5xx_retries_with_backoff_and_blocks_later_events(journal, reference_host):
    reference_host.set_fault("error500", 0)
    journal.add_event("r1", "finalize", _event(1))
    journal.add_event("r2", "finalize", _event(2))
    outbox = _outbox(journal, reference_host)
    assert not outbox.deliver_due()
    first = journal.get_event("r1")
    assert first.attempts == 1 and first.next_attempt_at > time.time() + 10  # 30 s +- 50 %
    assert "500" in first.last_error
    assert not outbox.deliver_due(), "waits out the backoff; r2 must not overtake r1"
    reference_host.set_fault("ok", 0)
    outbox.retry_now()  # the host was seen answering again
    assert outbox.deliver_due()
    assert _host_keys(reference_host) == ["r1", "r2"]


def test_backoff_grows_and_is_capped():
    backoff = Backoff(base_s=1, max_s=60)
    for attempts, cap in [(0, 1), (3, 8), (10, 60)]:
        delays = [backoff.delay(attempts) for _ in range(200)]
        assert cap * 0.5 <= min(delays) and max(delays) <= cap * 1.5
        assert max(delays) - min(delays) > cap * 0.3  # jittered, not all boxes at once


def test_thread_delivers_what_arrives(journal, reference_host):
    outbox = _outbox(journal, reference_host)
    outbox.start()
    try:
        journal.add_event("w1", "finalize", _event(1))
        outbox.wake()
        deadline = time.monotonic() + 5
        while journal.backlog().depth and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _host_keys(reference_host) == ["w1"]
    finally:
        outbox.stop()


def test_an_event_the_pos_thread_delivers_during_a_pass_is_not_sent_again(journal, reference_host):
    """The race of an inline finalize delivery with an outbox pass: the pass read the event as
    pending, then the POS thread delivered and released it. It must not go out twice."""
    outbox = _outbox(journal, reference_host)
    journal.add_event("race", "finalize", _event(1))
    read_pending = journal.due_events

    def due_events_then_the_pos_thread_finishes(limit, now=None):
        rows = read_pending(limit, now)
        journal.mark_delivered(["race"], {"race": {"receipt_lines": []}})  # inline delivery
        outbox.release("race")
        return rows

    journal.due_events = due_events_then_the_pos_thread_finishes
    outbox.deliver_due()
    assert _host_keys(reference_host) == []  # the (simulated) inline delivery was the only one
