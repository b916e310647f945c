"""The time source of a thread that waits: the real one, or a test's that only moves when told.

A loop that sleeps until a deadline asks its `Clock` for the time and waits through it, so a
test can hand in a clock it advances by hand and see exactly one cycle per step, however slow
the machine is.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Until `event` is set (True) or `timeout` seconds of this clock passed (False)."""
        ...


class SystemClock:
    """`time.monotonic` and `Event.wait`: the clock of a running box."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


SYSTEM_CLOCK = SystemClock()
