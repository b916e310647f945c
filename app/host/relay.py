"""Calls to the host that must not hold the POS longer than its deadline.

Each call runs on a worker thread; the POS's thread waits at most until the deadline and then
goes on without the answer. A late call still finishes in the background (bounded by the HTTP
timeout), so a slow host costs threads for a while, never the POS's time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from app.host.connectivity import HostConnectivity
from provisioning.api import HostError

log = logging.getLogger("connectbox.host")


@dataclass
class Outcome:
    answer: Any = None
    error: HostError | None = None
    timed_out: bool = False
    waited_s: float = 0.0
    skipped: bool = False  # not asked: the host is known to be down

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


class HostRelay:
    def __init__(
        self,
        connectivity: HostConnectivity,
        workers: int = 16,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.connectivity = connectivity
        self.ready = ready  # False until the box is enrolled: no call without a token
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host")
        self._probe: Future[Any] | None = None
        self._probe_lock = threading.Lock()

    def call(self, fn: Callable[[], Any], deadline: float, label: str) -> Outcome:
        """Run `fn` on a worker; wait until the monotonic `deadline` at the latest.

        While the host is known to be down, do not make the POS wait: answer at once and let
        one background probe at a time find out when the host is back.
        """
        started = time.monotonic()
        if not self.ready():
            return Outcome(error=HostError("not enrolled yet"), skipped=True)
        if self.connectivity.unauthorized:  # a revoked token is not used again, not even to probe
            return Outcome(error=HostError("device token refused by the host"), skipped=True)
        if self.connectivity.known_down:
            with self._probe_lock:
                if self._probe is None or self._probe.done():
                    self._probe = self.submit(fn, f"{label} (probe)")
            return Outcome(error=HostError("host known to be down"), skipped=True)
        future: Future[Any] = self._pool.submit(self._tracked, fn, label)
        try:
            answer = future.result(timeout=max(0.0, deadline - started))
            return Outcome(answer=answer, waited_s=time.monotonic() - started)
        except FutureTimeout:
            log.warning("%s: host did not answer before the POS deadline", label)
            self.connectivity.failed(f"{label}: no answer before the POS deadline", timeout=True)
            return Outcome(timed_out=True, waited_s=time.monotonic() - started)
        except HostError as exc:
            return Outcome(error=exc, waited_s=time.monotonic() - started)

    def submit(self, fn: Callable[[], Any], label: str) -> Future[Any]:
        return self._pool.submit(self._tracked, fn, label)

    def _tracked(self, fn: Callable[[], Any], label: str) -> Any:
        try:
            answer = fn()
        except HostError as exc:
            log.warning("%s: %s", label, exc)
            if exc.retryable or exc.unauthorized:
                self.connectivity.failed(str(exc), unauthorized=exc.unauthorized)
            else:
                self.connectivity.ok()  # it answered: reachable, just not pleased with us
            raise
        self.connectivity.ok()
        return answer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
