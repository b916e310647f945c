"""Waiting on an event the test can observe, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds passed; its last answer. A long
    timeout costs nothing when things work: it only bounds a failing test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
