"""Retention: what leaves the journal and when; and the provider's `resend_events` command.

Events the host holds (delivered, or answered 409) are deleted `retention_days` after they were
journaled (the provider's device config; default 90), with the exact request bytes they were
made from. So are the requests that made no event and the GetRewards decisions: all of them hold
loyalty IDs. Undelivered events (pending, rejected) and requests not settled yet are never
deleted, nor the decisions the offline limits still count (those since the host last answered).

`Retention.tick()` runs from the box's housekeeping: a sweep an hour, in transactions of at most
BATCH rows of each kind and at most BATCHES_PER_TICK of them per tick, so the journal's lock is
never held for long and a first sweep over years of events spreads over many ticks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from app.journal import Journal, JournalError
from app.offline.engine import HOST_LAST_OK_AT
from app.outbox import Outbox
from provisioning.agent import DEFER, Agent
from provisioning.rfc3339 import format_rfc3339, parse_rfc3339

log = logging.getLogger("connectbox.retention")

DAY_S = 86400.0
DEFAULT_DAYS = 90  # [storage] retention_days's default (app/config.py), for tests and tools
SWEEP_EVERY_S = 3600.0
BATCH = 500
BATCHES_PER_TICK = 20
# A longer window is refused rather than flooding the host: the provider sends one per month.
MAX_WINDOW_DAYS = 31


class Retention:
    def __init__(
        self, journal: Journal, clock: Callable[[], float] = time.time, days: int = DEFAULT_DAYS
    ) -> None:
        self.journal = journal
        self.clock = clock  # wall-clock time: events are kept by the time they were journaled
        self.days = days
        self.expired = 0  # events deleted since start
        self._next_at = 0.0  # the first tick sweeps

    def tick(self) -> None:
        """Part of a sweep, when one is due (the box's housekeeping calls this every few s)."""
        if self.clock() < self._next_at:
            return
        try:
            done = self.sweep(BATCHES_PER_TICK)
        except JournalError as exc:  # a full disk or a closed journal: the next sweep tries
            log.warning("retention: %s", exc)
            done = True
        if done:
            self._next_at = self.clock() + SWEEP_EVERY_S

    def sweep(self, batches: int = 1_000_000) -> bool:
        """Delete what the retention period lets go, in at most `batches` transactions. True
        when nothing is left to delete."""
        before = self.clock() - self.days * DAY_S
        decisions_before = min(before, self._host_last_ok())
        events = requests = decisions = 0
        more = True
        for _ in range(batches):
            expired = self.journal.expire(before, decisions_before, BATCH)
            events += expired.events
            requests += expired.requests
            decisions += expired.decisions
            more = expired.more
            if not more:
                break
        self.expired += events
        if events or requests or decisions:
            log.info(
                "retention: deleted %d events, %d POS requests and %d decisions journaled before"
                " %s (%d days)",
                events,
                requests,
                decisions,
                format_rfc3339(before),
                self.days,
            )
        return not more

    def _host_last_ok(self) -> float:
        """When the host last answered, as the box saved it: the offline limits count the
        offline decisions since then (`OfflineEngine`), so those stay. Never: all stay."""
        saved = self.journal.get_state(HOST_LAST_OK_AT)
        try:
            return float(saved) if saved is not None else 0.0
        except ValueError:
            return 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"retention_days": self.days, "expired_since_start": self.expired}


def journal_heartbeat(journal: dict[str, Any]) -> dict[str, Any]:
    """The journal's fields of the heartbeat, from the status's `journal` section."""
    return {
        "journal_size_bytes": journal.get("size_bytes"),
        "journal_events": journal.get("events"),
        "journal_oldest_event_at": journal.get("oldest_event_at"),
    }


# ---- resend_events -------------------------------------------------------------------------


def resend_window(args: dict[str, Any]) -> tuple[float, float]:
    """The command's `from` and `to` as unix times; ValueError saying what is wrong."""
    start = parse_rfc3339(args.get("from"), "from").timestamp()
    end = parse_rfc3339(args.get("to"), "to").timestamp()
    if start > end:
        raise ValueError("from is after to")
    if end - start > MAX_WINDOW_DAYS * DAY_S:
        raise ValueError(f"the window is longer than {MAX_WINDOW_DAYS} days: send several")
    return start, end


def resend_events(outbox: Outbox, agent: Agent, args: dict[str, Any]) -> Any:
    """The command's handler: checks the window, then the outbox's thread sends (a resend may
    take minutes; the heartbeat does not wait) and its result comes through `agent.complete`."""
    try:
        start, end = resend_window(args)
    except ValueError as exc:
        return False, f"bad args: {exc}"
    command_id = agent.running_command_id
    assert command_id is not None  # only the agent runs handlers

    def done(ok: bool, detail: str) -> None:
        agent.complete(command_id, ok, detail, "resend_events")

    outbox.resend(start, end, done)
    return DEFER
