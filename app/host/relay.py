"""Calls to the host that must not hold the POS longer than its deadline.

Each call runs on a worker thread; the POS's thread waits at most until the deadline and then
goes on without the answer. A late call still finishes in the background (bounded by the HTTP
timeout), so a slow host costs threads for a while, never the POS's time.

While the host link is known to be down (or slow), a call is still made, but the POS waits only
a short hedge for it: when the host answers within the hedge, the host decides, so the first
sale after the host is back is the host's; otherwise the offline policy decides at once. The
link's client refuses calls by itself when the box is not enrolled or its token was refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from provisioning.api import HostError
from provisioning.link import HostLink, Refused

log = logging.getLogger("connectbox.host")
DEFAULT_HEDGE_S = 0.25


@dataclass
class Outcome:
    answer: Any = None
    error: HostError | None = None
    timed_out: bool = False
    waited_s: float = 0.0
    skipped: bool = False  # not asked: not enrolled, or the token was refused
    hedged: bool = False  # the host was known down: the POS waited only the hedge

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


class HostRelay:
    def __init__(self, link: HostLink, workers: int = 16, hedge_s: float = DEFAULT_HEDGE_S) -> None:
        self.link = link
        self.hedge_s = hedge_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host")

    def call(self, fn: Callable[[], Any], deadline: float, label: str) -> Outcome:
        """Run `fn` on a worker; wait until the monotonic `deadline` at the latest, or only
        the hedge while the link is known to be down."""
        started = time.monotonic()
        wait = max(0.0, deadline - started)
        hedged = self.link.known_down
        if hedged:
            wait = min(wait, self.hedge_s)
        future: Future[Any] = self._pool.submit(self._logged, fn, label)
        try:
            answer = future.result(timeout=wait)
            self.link.answered_in_time()
            return Outcome(answer=answer, waited_s=time.monotonic() - started)
        except FutureTimeout:
            if not hedged:
                log.warning("%s: host did not answer before the POS deadline", label)
                self.link.slow(label)
            return Outcome(timed_out=True, waited_s=time.monotonic() - started, hedged=hedged)
        except Refused as exc:
            return Outcome(error=exc, skipped=True)
        except HostError as exc:
            return Outcome(error=exc, waited_s=time.monotonic() - started, hedged=hedged)

    def submit(self, fn: Callable[[], Any], label: str) -> Future[Any]:
        return self._pool.submit(self._logged, fn, label)

    def _logged(self, fn: Callable[[], Any], label: str) -> Any:
        try:
            return fn()
        except Refused:
            raise  # the link says why, once
        except HostError as exc:
            log.warning("%s: %s", label, exc)
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
