"""Store-and-forward delivery of journal events to the host: at least once, in journal order.

One thread drains the journal's pending events. A small backlog goes one event per call
(`POST /v1/transactions`); a larger one through `POST /v1/transactions/batch`, 500 at a time, so
thousands of boxes coming back after an outage do not each send tens of thousands of requests.
Outcomes: 200 delivered; 409 on a replay is "already there, conflict recorded" (never retried);
other 4xx rejected for good (recorded, shown); 5xx, timeouts and connection errors retry with
exponential backoff and jitter. The first failing event stops the pass, so nothing overtakes an
earlier event. Delivery is paused while the host link refuses the device token (a 401 told it):
`paused` reads the link, and a new token resumes it. The link going online skips the rest of a
backoff.

The same thread runs the provider's `resend_events` commands (`resend`): events the host already
holds, sent again through the batch endpoint with `"resend": true`, one batch after each
delivery pass. Being the one thread that calls the host for the journal, it never races the
pending events, and a resend neither reorders them nor touches their backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.journal import Event, Journal
from provisioning.api import HostError
from provisioning.backoff import backoff_delay
from provisioning.link import Health, HostLink
from provisioning.rfc3339 import format_rfc3339

log = logging.getLogger("connectbox.outbox")

BATCH_THRESHOLD = 20  # a backlog at least this deep goes through the batch endpoint
BATCH_SIZE = 500  # host-api.md: at most 500 events per batch
FOREVER = 1e18  # "due by then": every pending event
# A resend gives up after this many failed calls in a row (about 8 minutes of backoff) and says
# how far it got: the provider learns it in minutes, not after an outage of unknown length.
MAX_RESEND_FAILURES = 10
_RESULT_WORDS = {200: "accepted", 409: "conflict", 422: "refused"}


@dataclass
class Backoff:
    base_s: float = 1.0
    max_s: float = 300.0

    def delay(self, attempts: int) -> float:
        """Exponential in the attempts so far, with +-50 % jitter to spread boxes apart."""
        return backoff_delay(attempts + 1, self.base_s, self.max_s, jitter=(0.5, 1.5))


@dataclass
class _Resend:
    """One `resend_events` command: the events the host holds, journaled from start to end."""

    start: float
    end: float
    done: Callable[[bool, str], None]
    total: int = -1  # -1: the window is not looked up yet
    after_seq: int = 0
    last_seq: int = 0
    sent: int = 0
    results: Counter[int | None] = field(default_factory=Counter)
    failures: int = 0
    next_try: float = 0.0


class Outbox:
    def __init__(
        self,
        journal: Journal,
        link: HostLink,
        backoff: Backoff | None = None,
        idle_poll_s: float = 1.0,
    ) -> None:
        self.journal = journal
        self.link = link
        self.client = link.client
        self.backoff = backoff or Backoff()
        self.idle_poll_s = idle_poll_s
        self._inflight: set[str] = set()  # events the POS thread is delivering right now
        self._released: set[str] = set()  # ... and those it finished during the current pass
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resends: deque[_Resend] = deque()
        self.delivered = 0
        link.on_change(self._link_changed)

    @property
    def paused(self) -> str | None:
        """Why delivery waits (the link refuses the device token), None while it may go on."""
        return self.link.health.reason if self.link.refuses(self.client.token) else None

    def _link_changed(self, health: Health) -> None:
        if health.online:
            self.retry_now()

    # ---- the POS thread's side ------------------------------------------------------------

    def claim(self, event_id: str) -> None:
        """The caller delivers this event itself now; the outbox leaves it alone until released."""
        with self._lock:
            self._inflight.add(event_id)

    def release(self, event_id: str) -> None:
        with self._lock:
            self._inflight.discard(event_id)
            self._released.add(event_id)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def retry_now(self) -> None:
        """The host link is back: skip the rest of the backoff."""
        self._hurry.set()
        self._wake.set()

    # ---- the delivery thread --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.deliver_due()
                worked = self._resend_next() or worked
            except Exception:  # a bug must not end delivery for good
                log.exception("outbox pass failed; retrying shortly")
                worked = False
            if not worked:
                self._wake.wait(self.idle_poll_s)
                self._wake.clear()

    def deliver_due(self) -> bool:
        """One pass over what is due. True when something was delivered or settled."""
        if self.paused is not None:
            return False
        with self._lock:
            self._released.clear()
        # The head of the queue in journal order, due or not: a later event never overtakes an
        # earlier one that is waiting out its backoff.
        head = self.journal.due_events(BATCH_SIZE, now=FOREVER)
        # Claimed now, or released since the query began (delivered by the POS thread after the
        # query read it as pending): not ours in this pass.
        with self._lock:
            skip = self._inflight | self._released
        due = [e for e in head if e.event_id not in skip]
        if not due:
            return False
        if due[0].next_attempt_at > time.time() and not self._hurry.is_set():
            return False
        self._hurry.clear()
        if len(due) >= BATCH_THRESHOLD:
            return self._deliver_batch(due)
        return self._deliver_each(due)

    def _deliver_each(self, events: list[Event]) -> bool:
        progressed = False
        for event in events:
            if self._stop.is_set():
                break
            try:
                answer = self.client.transaction(event.body, event.event_id)
            except HostError as exc:
                if not self._settle_error(event, exc.status, str(exc)):
                    self._retry([event], str(exc))
                    return progressed
                progressed = True
                continue
            self.journal.mark_delivered([event.event_id], {event.event_id: _answer_of(answer)})
            self._delivered(1)
            progressed = True
        return progressed

    def _deliver_batch(self, events: list[Event]) -> bool:
        try:
            results = self.client.transactions_batch([(e.event_id, e.body) for e in events])
        except HostError as exc:
            self._retry(events, str(exc))
            return False
        delivered: list[str] = []
        answers: dict[str, dict[str, Any]] = {}
        for event, result in zip(events, results, strict=True):
            status = result.get("status") if isinstance(result, dict) else None
            if status == 200:
                delivered.append(event.event_id)
                answers[event.event_id] = _answer_of(result)
            elif not self._settle_error(event, status, str(result.get("error") or status)):
                # A result the batch endpoint should not give: deliver it alone later.
                self._retry([event], f"batch result {status}")
        if delivered:
            self.journal.mark_delivered(delivered, answers)
            self._delivered(len(delivered))
        log.info("batch of %d events: %d delivered", len(events), len(delivered))
        return True

    def _settle_error(self, event: Event, status: int | None, reason: str) -> bool:
        """End an event's delivery for a final answer; False when it is worth retrying."""
        if status == 409:
            log.warning(
                "event %s: host reports a conflicting replay (409); recorded", event.event_id
            )
            self.journal.mark_final(event.event_id, "conflict", reason)
            return True
        if status == 401:
            return False  # the link heard it too: paused until the token changes
        if status is not None and 400 <= status < 500 and status != 429:
            log.error(
                "event %s rejected by the host (%s); recorded, not retried", event.event_id, reason
            )
            self.journal.mark_final(event.event_id, "rejected", reason)
            return True
        return False

    def _retry(self, events: list[Event], reason: str) -> None:
        if self.paused is not None:
            return
        delay = self.backoff.delay(events[0].attempts)
        ids = [e.event_id for e in events]
        self.journal.mark_retry(ids, reason, time.time() + delay)
        log.warning("%d event(s) not delivered (%s); next try in %.0f s", len(ids), reason, delay)

    def _delivered(self, count: int) -> None:
        self.delivered += count

    # ---- resend_events ----------------------------------------------------------------------

    def resend(self, start: float, end: float, done: Callable[[bool, str], None]) -> None:
        """Send the events the host holds that were journaled from `start` to `end` again, in
        journal order, on the delivery thread; `done(ok, detail)` is called once at the end."""
        with self._lock:
            self._resends.append(_Resend(start, end, done))
        self._wake.set()

    def _resend_next(self) -> bool:
        """One batch of the oldest resend; True when a batch went out or a resend ended."""
        with self._lock:
            job = self._resends[0] if self._resends else None
        if job is None or self.paused is not None or job.next_try > time.time():
            return False
        if job.total < 0:
            job.total, first, job.last_seq = self.journal.delivered_span(job.start, job.end)
            job.after_seq = first - 1
        events = self.journal.delivered_events(
            job.start, job.end, job.after_seq, job.last_seq, BATCH_SIZE
        )
        if not events:
            self._resend_done(job, True)
            return True
        try:
            results = self.client.transactions_batch(
                [(e.event_id, e.body) for e in events], resend=True
            )
        except HostError as exc:
            if exc.unauthorized:
                return False  # the link heard it too: paused until the token changes
            job.failures += 1
            if not exc.retryable or job.failures >= MAX_RESEND_FAILURES:
                self._resend_done(job, False, f"stopped: {exc}")
                return True
            delay = self.backoff.delay(job.failures - 1)
            job.next_try = time.time() + delay
            log.warning("resend: batch not sent (%s); next try in %.0f s", exc, delay)
            return False
        job.results.update(r.get("status") if isinstance(r, dict) else None for r in results)
        job.sent += len(events)
        job.after_seq = events[-1].seq
        job.failures = 0
        return True

    def _resend_done(self, job: _Resend, ok: bool, problem: str = "") -> None:
        with self._lock:
            self._resends.remove(job)
        detail = (
            f"resent {job.sent} of {job.total} events journaled from {format_rfc3339(job.start)}"
            f" to {format_rfc3339(job.end)}"
        )
        if job.results:
            words = (f"{n} {_RESULT_WORDS.get(s, f'status {s}')}" for s, n in job.results.items())
            detail += f" ({', '.join(words)})"
        if problem:
            detail += f"; {problem}"
        log.info("resend_events: %s", detail)
        try:
            job.done(ok, detail)
        except Exception:  # the command's result is the agent's business; delivery goes on
            log.exception("resend: reporting the result failed")

    def snapshot(self) -> dict[str, Any]:
        backlog = self.journal.backlog()
        oldest = backlog.oldest_pending_at
        return {
            "depth": backlog.depth,
            "oldest_pending_s": round(time.time() - oldest) if oldest else 0,
            "conflicts": backlog.conflicts,
            "rejected": backlog.rejected,
            "delivered_since_start": self.delivered,
            "paused": self.paused,
        }


def _answer_of(answer: Any) -> dict[str, Any]:
    lines = answer.get("receipt_lines") if isinstance(answer, dict) else None
    return {"receipt_lines": lines if isinstance(lines, list) else []}
