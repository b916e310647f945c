"""A clock that only moves when the test says so (see provisioning/clock.py)."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """`monotonic()` returns what the test set; `wait()` returns when its event is set or the
    test has advanced the clock past its deadline. `wait_parked()` tells when a thread waits
    for a moment still to come: whatever it does next needs the test to advance the clock."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._changed = threading.Condition()
        self._deadlines: dict[int, float] = {}  # waiting thread → until when

    def monotonic(self) -> float:
        with self._changed:
            return self._now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        me = threading.get_ident()
        with self._changed:
            self._deadlines[me] = self._now + timeout
            self._changed.notify_all()
            try:
                while not event.is_set() and self._now < self._deadlines[me]:
                    self._changed.wait(0.005)  # an Event tells no one: look again soon
            finally:
                del self._deadlines[me]
                self._changed.notify_all()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def wait_parked(self, timeout: float = 10.0) -> None:
        """Until some thread waits in `wait()` for a moment after now."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(d > self._now for d in self._deadlines.values()):
                left = deadline - time.monotonic()
                assert left > 0, "no thread is waiting on the clock"
                self._changed.wait(left)
