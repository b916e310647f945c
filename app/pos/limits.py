"""What bounds one POS peer: the frame deadline clock, and log lines a flood cannot multiply.

A frame must be complete `frame_deadline_s` after its first byte arrived, however slowly the rest
trickles in; between frames only the idle timeout applies. Log lines about peers (connects,
refusals, cuts) go through a `LogThrottle`, so a peer that connects a thousand times a second
costs a few lines, not a thousand.
"""

from __future__ import annotations

import threading
import time


class FrameClock:
    """When the frame in progress began: the read that brought its first byte."""

    def __init__(self, frame_deadline_s: float, idle_timeout_s: float) -> None:
        self.frame_deadline_s = frame_deadline_s
        self.idle_timeout_s = idle_timeout_s
        self.started: float | None = None  # monotonic; None between frames

    def fed(self, pending_before: int, received: int, pending_after: int, at: float) -> None:
        """After a read of `received` bytes at `at`: the framer held `pending_*` partial bytes."""
        if pending_after == 0:
            self.started = None
        elif self.started is None or pending_after < pending_before + received:
            # A frame was completed by this read, so the bytes left over began with it.
            self.started = at

    def wait_s(self, now: float) -> float:
        """How long the next read may wait: the idle timeout, or what is left of the deadline."""
        if self.started is None:
            return self.idle_timeout_s
        return min(self.idle_timeout_s, self.started + self.frame_deadline_s - now)

    def in_frame(self) -> bool:
        return self.started is not None


class LogThrottle:
    """A token bucket for log lines: `burst` lines at once, then one per `every_s` seconds.

    `allow()` says whether to log this one and how many were left out since the last line, so
    the line that is logged can say so.
    """

    def __init__(self, burst: int, every_s: float) -> None:
        self.burst = burst
        self.every_s = every_s
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._skipped = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) / self.every_s)
            self._at = now
            if self._tokens < 1:
                self._skipped += 1
                return False, 0
            self._tokens -= 1
            skipped, self._skipped = self._skipped, 0
            return True, skipped


def skipped_note(skipped: int) -> str:
    """The tail of a throttled line: how many like it were not logged."""
    return f" ({skipped} more not logged)" if skipped else ""
