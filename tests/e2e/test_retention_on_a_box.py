"""Retention and `resend_events` on a running box whose journal spans the last 120 days: its
housekeeping deletes what the retention period lets go, the provider's command re-sends a window
to the real reference host over HTTP, and the page, /api/status and the heartbeat show the
journal's size and oldest event."""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests

from app.box import Box
from app.journal import Journal
from app.offline.engine import HOST_LAST_OK_AT
from provisioning.rfc3339 import format_rfc3339
from simulators.demo import demo_config
from tests.host_samples import PHONE, day_key, day_sale
from tests.waiting import wait_for

DAY = 86400.0
REFUSED, LATE = 5, 43  # the host refuses day 5's event (422); day 43's waits in the outbox


def _journal_of_120_days(path: Path, now: float) -> dict[int, float]:
    """One sale a day, the last half a day ago; delivered but for REFUSED and LATE. Returns
    each day's journal time."""
    at = {day: now - (119.5 - day) * DAY for day in range(120)}
    clock = [at[0]]
    journal = Journal(path, clock=lambda: clock[0])
    for day in range(120):
        clock[0] = at[day]
        event = "explode" if day == REFUSED else "finalize"  # the host refuses it: 422
        journal.add_event(day_key(day), "finalize", day_sale(day, event), loyalty_key=PHONE)
        if day not in (REFUSED, LATE):
            journal.mark_delivered([day_key(day)])
    journal.set_state(HOST_LAST_OK_AT, repr(now))
    journal.close()
    return at


def _results(host) -> dict[str, dict]:
    return {c["command_id"]: c["result"] for c in host.store.commands("D-DEMO")}


def test_retention_resend_and_what_the_box_shows(tmp_path, reference_host):
    config = demo_config(reference_host.url, 0, 0, tmp_path / "data")
    at = _journal_of_120_days(tmp_path / "data" / "journal.db", time.time())
    box = Box(config)
    box.start()
    try:
        # The outbox delivers LATE and gets 422 for REFUSED; housekeeping's first sweep deletes
        # the events the host holds that are older than 90 days. REFUSED stays: undelivered.
        kept = [day_key(REFUSED)] + [day_key(day) for day in range(30, 120)]
        assert wait_for(lambda: [e.event_id for e in box.journal.all_events()] == kept, 30)
        assert wait_for(lambda: box.journal.backlog().depth == 0)
        assert box.journal.get_event(day_key(REFUSED)).state == "rejected"

        def between(first: int, last: int) -> dict[str, str]:
            return {"from": format_rfc3339(at[first] - 60), "to": format_rfc3339(at[last] + 60)}

        store = reference_host.store
        good = store.queue_command("D-DEMO", "resend_events", between(40, 45))
        backwards = store.queue_command("D-DEMO", "resend_events", between(45, 40))
        no_end = store.queue_command("D-DEMO", "resend_events", {"from": between(40, 45)["from"]})
        too_long = store.queue_command("D-DEMO", "resend_events", between(40, 80))
        box.management.agent.heartbeat_now()
        assert wait_for(lambda: all(_results(reference_host).values()), 30)
        results = _results(reference_host)
        assert results[good]["ok"] is True
        assert results[good]["detail"].startswith("resent 6 of 6 events journaled from ")
        assert results[good]["detail"].endswith("(6 accepted)")
        assert results[backwards] == {"ok": False, "detail": "bad args: from is after to"}
        assert results[no_end] == {"ok": False, "detail": "bad args: to is missing"}
        assert not results[too_long]["ok"] and "longer than 31 days" in results[too_long]["detail"]
        # In journal order, under the original keys, flagged as a resend; LATE too, which the
        # outbox had delivered before the command came.
        resent = [b["keys"] for b in store.batches() if b["resend"]]
        assert resent == [[day_key(day) for day in range(40, 46)]]
        stored = {e["idempotency_key"]: e for e in store.events()}
        assert stored[day_key(42)]["body"] == day_sale(42)
        assert stored[day_key(LATE)]["deliveries"] == 2

        # What the technician and the provider see: 91 events, the oldest on day 5.
        oldest = format_rfc3339(at[REFUSED])
        db_size = (tmp_path / "data" / "journal.db").stat().st_size
        journal = requests.get(f"http://127.0.0.1:{box.status_port}/api/status", timeout=5)
        journal = journal.json()["journal"]
        assert (journal["events"], journal["oldest_event_at"]) == (91, oldest)
        assert journal["retention_days"] == 90 and journal["size_bytes"] >= db_size > 0
        box.management.agent.heartbeat_now()
        beat = store.heartbeats("D-DEMO")[-1]
        assert (beat["journal_events"], beat["journal_oldest_event_at"]) == (91, oldest)
        assert beat["journal_size_bytes"] >= db_size
        page = requests.get(f"http://127.0.0.1:{box.status_port}/", timeout=5).text
        day_5 = time.strftime("%Y-%m-%d %H:%M", time.localtime(at[REFUSED]))
        assert f"<dt>Oldest journal event</dt><dd>{day_5} (114 days ago)</dd>" in page
        assert "<dt>Delivered events kept</dt><dd>90 days</dd>" in page
        assert re.search(r"<dt>Journal size</dt><dd>[0-9.]+ (KiB|MiB)</dd>", page)

        # The provider shortens the period: the next sweep keeps 60 days.
        box.management.apply_config({"retention_days": 60})
        assert box.retention.sweep()
        kept = [day_key(REFUSED)] + [day_key(day) for day in range(60, 120)]
        assert [e.event_id for e in box.journal.all_events()] == kept
        assert box.status()["journal"]["retention_days"] == 60
    finally:
        box.stop()
