"""Retention and resends on a real journal that spans 120 days (an injected clock), resent to the
real reference host over HTTP."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from app import outbox as outbox_module
from app import retention as retention_module
from app.config import StorageConfig, provider_settings
from app.journal import Journal
from app.offline.engine import HOST_LAST_OK_AT
from app.outbox import Backoff, Outbox
from app.retention import DEFAULT_DAYS, Retention, resend_window
from provisioning.link import HostLink
from provisioning.rfc3339 import format_rfc3339
from tests.host_samples import PHONE, day_key, day_sale
from tests.waiting import wait_for

DAY = 86400.0
T0 = 1_785_000_000.0  # day 0 of the journal, 2026-07-25
NOW = T0 + 120 * DAY
PENDING, REJECTED, CONFLICT = (5, 43), 10, 44  # days whose event the host does not hold (or 409)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path, clock: Clock):
    """One sale a day at noon for 120 days, each kept as the POS sent it, settled into its event,
    with its GetRewards decision; a CancelTransaction that made no event on days 3 and 100. The
    host holds every event but those of PENDING and REJECTED days (CONFLICT's answered 409)."""
    j = Journal(tmp_path / "journal.db", clock=clock)
    for day in range(120):
        clock.now = T0 + day * DAY + DAY / 2
        kept = j.keep(
            "FinalizeRewards", "passport", f"<Finalize id='{PHONE}' day='{day}'/>".encode()
        )
        j.record_decision(f"S{day}", "offline", {}, {}, discount=Decimal("1.00"), loyalty_key=PHONE)
        j.add_event(day_key(day), "finalize", day_sale(day), loyalty_key=PHONE, received_id=kept.id)
        if day == REJECTED:
            j.mark_final(day_key(day), "rejected", "422 invalid_event")
        elif day == CONFLICT:
            j.mark_final(day_key(day), "conflict", "409")
        elif day not in PENDING:
            j.mark_delivered([day_key(day)])
        if day in (3, 100):
            j.settle(j.keep("CancelTransaction", "passport", b"<Cancel/>").id, "no_event")
    clock.now = NOW
    j.set_state(HOST_LAST_OK_AT, repr(NOW - 60))  # the host answered a minute ago
    yield j
    j.close()


def keys_in(journal: Journal) -> list[str]:
    return [e.event_id for e in journal.all_events()]


def received_days(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT stem, received_at FROM received ORDER BY id").fetchall()
    return [(stem, int((at - T0) // DAY)) for stem, at in rows]


def day_at(day: float) -> str:
    return format_rfc3339(T0 + day * DAY)


# ---- retention ------------------------------------------------------------------------------


def test_delivered_events_leave_after_the_retention_period_undelivered_ones_never(
    journal: Journal, clock: Clock, tmp_path: Path
):
    before = journal.stats()
    assert (before["events"], before["decisions"]) == (120, 120)
    assert before["oldest_event_at"] == day_at(0.5)

    assert Retention(journal, clock, days=90).sweep()

    # Journaled before day 30 and held by the host: gone with their loyalty IDs. The pending
    # and rejected ones stay, whatever their age; the 409 on day 44 is within the period.
    kept = [day_key(5), day_key(10)] + [day_key(day) for day in range(30, 120)]
    assert keys_in(journal) == kept
    assert journal.get_event(day_key(0)) is None and journal.get_event(day_key(29)) is None
    # The exact bytes go with their event, stay with an event still there; the request that
    # made no event goes after the period too.
    assert journal.received_raw(day_key(0)) is None
    assert PHONE.encode() in (journal.received_raw(day_key(5)) or b"")
    assert received_days(tmp_path / "journal.db") == [
        ("FinalizeRewards", 5),
        ("FinalizeRewards", 10),
        *[("FinalizeRewards", day) for day in range(30, 101)],
        ("CancelTransaction", 100),
        *[("FinalizeRewards", day) for day in range(101, 120)],
    ]
    after = journal.stats()
    assert (after["events"], after["pending"], after["decisions"]) == (92, 2, 90)
    assert after["oldest_event_at"] == day_at(5.5)
    assert journal.backlog().depth == 2 and journal.backlog().rejected == 1

    # Nothing more to do until time passes; a day later, one more day goes.
    assert Retention(journal, clock, days=90).sweep() and len(keys_in(journal)) == 92
    clock.now += DAY
    assert Retention(journal, clock, days=90).sweep()
    assert keys_in(journal) == [day_key(5), day_key(10)] + [day_key(day) for day in range(31, 120)]


def test_decisions_the_offline_limits_still_count_stay(journal: Journal, clock: Clock):
    # The host last answered on day 20: the offline limits count every decision since then.
    journal.set_state(HOST_LAST_OK_AT, repr(T0 + 20 * DAY))
    exposure = journal.offline_exposure(T0 + 20 * DAY)
    assert exposure == (100, Decimal("100.00"))
    Retention(journal, clock, days=90).sweep()
    assert journal.stats()["decisions"] == 100
    assert journal.offline_exposure(T0 + 20 * DAY) == exposure
    assert journal.get_event(day_key(20)) is None  # the delivered events still go


def test_without_a_record_of_the_host_every_decision_stays(tmp_path: Path, clock: Clock):
    journal = Journal(tmp_path / "journal.db", clock=clock)
    try:
        journal.record_decision("S1", "offline", {}, {}, discount=Decimal("1"))
        clock.now += 200 * DAY
        Retention(journal, clock, days=90).sweep()
        assert journal.stats()["decisions"] == 1
    finally:
        journal.close()


def test_a_sweep_is_bounded_and_ticks_go_on_where_it_stopped(
    journal: Journal, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(retention_module, "BATCH", 7)
    monkeypatch.setattr(retention_module, "BATCHES_PER_TICK", 2)
    clock.now = NOW + DAY / 2 - 1800  # 11:30: the sale of day 30, at noon, is not due yet
    retention = Retention(journal, clock, days=90)
    retention.tick()  # two transactions of at most 7 rows of each kind
    assert retention.expired == 14 and len(keys_in(journal)) == 120 - 14
    retention.tick()  # not done yet: the next tick goes on
    retention.tick()  # finds nothing more: done
    assert len(keys_in(journal)) == 92
    assert retention.snapshot() == {"retention_days": 90, "expired_since_start": 28}
    clock.now += 2400  # 12:10: day 30's sale is due, but sweeps are an hour apart
    retention.tick()
    assert retention.expired == 28
    clock.now += 1200
    retention.tick()
    assert retention.expired == 29 and journal.get_event(day_key(30)) is None


def test_a_closed_journal_does_not_stop_housekeeping(journal: Journal, clock: Clock):
    journal.close()
    Retention(journal, clock).tick()  # logged, tried again at the next sweep


def test_retention_days_from_the_provider_are_checked_like_the_file():
    assert provider_settings({"retention_days": 30}) == {"retention_days": 30}
    for bad in (0, 99_999, "30", True, 1.5):
        assert provider_settings({"retention_days": bad}) == {}  # logged; the value in force stays
    assert Retention.__init__.__defaults__[-1] == DEFAULT_DAYS == StorageConfig().retention_days


# ---- resend_events ----------------------------------------------------------------------------


def test_the_window_is_checked():
    start, end = resend_window({"from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00-06:00"})
    assert end - start == 7 * DAY + 6 * 3600
    for args, problem in [
        ({"to": "2026-11-08T00:00:00Z"}, "from is missing"),
        ({"from": "2026-11-01T00:00:00Z", "to": "yesterday"}, "to is not RFC 3339"),
        ({"from": "2026-11-01T00:00:00", "to": "2026-11-08T00:00:00Z"}, "from has no UTC offset"),
        ({"from": "2026-11-08T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from is after to"),
        ({"from": "2026-09-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "longer than 31 days"),
    ]:
        with pytest.raises(ValueError, match=problem):
            resend_window(args)


def _outbox(journal: Journal, host, backoff: Backoff | None = None) -> Outbox:
    link = HostLink(host.url, timeout_s=5)
    link.use("D-DEMO", "demo-token")
    # Online before the outbox starts: its first answer would otherwise bring the link online,
    # and the outbox then skips the backoff of the event the tests keep pending.
    link.client.config()
    assert link.online
    return Outbox(journal, link, backoff or Backoff(base_s=0.01, max_s=0.01))


def _resend(outbox: Outbox, start: float, end: float) -> list[tuple[bool, str]]:
    done: list[tuple[bool, str]] = []
    outbox.resend(start, end, lambda ok, detail: done.append((ok, detail)))
    assert wait_for(lambda: done, 30)
    return done


def test_a_window_is_resent_in_journal_order_under_its_keys(
    journal: Journal, reference_host, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(outbox_module, "BATCH_SIZE", 2)  # several calls, still in order
    journal.defer([day_key(day) for day in PENDING], time.time() + 3600)  # waiting out a backoff
    outbox = _outbox(journal, reference_host)
    outbox.start()
    try:
        # From day 40 to noon on day 45, both included: the events the host holds (the 409
        # too), not the one still pending.
        [(ok, detail)] = _resend(outbox, T0 + 40 * DAY, T0 + 45.5 * DAY)
        expected = [day_key(40), day_key(41), day_key(42), day_key(44), day_key(45)]
        assert ok and detail.startswith(f"resent 5 of 5 events journaled from {day_at(40)}")
        assert detail.endswith("(5 accepted)")
        batches = reference_host.store.batches()
        assert [(b["resend"], b["keys"]) for b in batches] == [
            (True, expected[0:2]),
            (True, expected[2:4]),
            (True, expected[4:5]),
        ]
        stored = reference_host.store.events()
        assert [e["idempotency_key"] for e in stored] == expected
        assert [e["body"] for e in stored] == [day_sale(day) for day in (40, 41, 42, 44, 45)]
        # The pending events kept their place and their backoff; once due they go as usual.
        waiting = [journal.get_event(day_key(day)) for day in PENDING]
        assert [(e.state, e.attempts) for e in waiting] == [("pending", 0), ("pending", 0)]
        journal.defer([day_key(day) for day in PENDING], 0)
        outbox.wake()
        assert wait_for(lambda: journal.backlog().depth == 0)
    finally:
        outbox.stop()
    later = [e["idempotency_key"] for e in reference_host.store.events()][5:]
    assert later == [day_key(day) for day in PENDING]
    assert len(reference_host.store.batches()) == 3  # those two went alone, not resent
    assert journal.get_event(day_key(40)).state == "delivered"


def test_a_window_with_nothing_in_it_sends_nothing(journal: Journal, reference_host):
    outbox = _outbox(journal, reference_host)
    outbox.start()
    try:
        [(ok, detail)] = _resend(outbox, NOW + DAY, NOW + 2 * DAY)
    finally:
        outbox.stop()
    assert ok and detail.startswith("resent 0 of 0 events")
    assert not any(b["resend"] for b in reference_host.store.batches())


def test_a_host_that_keeps_failing_ends_the_resend_saying_how_far_it_got(
    journal: Journal, reference_host, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(outbox_module, "MAX_RESEND_FAILURES", 3)
    journal.mark_delivered([day_key(day) for day in PENDING])  # only the resend calls the host
    reference_host.set_fault("error500", 0)
    outbox = _outbox(journal, reference_host)  # a backoff of 10 ms between the tries
    outbox.start()
    try:
        [(ok, detail)] = _resend(outbox, T0 + 40 * DAY, T0 + 46 * DAY)
    finally:
        outbox.stop()
    assert not ok and detail.startswith("resent 0 of 6 events")
    assert "stopped: " in detail and "500" in detail
    assert reference_host.store.events() == []
