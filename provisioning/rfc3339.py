"""RFC 3339 times as the host API writes them ("2026-11-23T14:00:00-06:00", "...T20:00:00Z"):
the one parser and the one writer of the box. A time without its UTC offset is refused: it names
no moment. The box writes its local time with its offset, to the second. Here, not in `app/`, so
that `provisioning/` can use it too.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any


def parse_rfc3339(value: Any, name: str = "the time") -> datetime:
    """`value` as an aware datetime. ValueError, naming `name`, when it is not a string, not a
    time, or has no UTC offset."""
    if not isinstance(value, str):
        raise ValueError(f"{name} is missing")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not RFC 3339: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset")
    return moment


def format_rfc3339(timestamp: float) -> str:
    """Epoch seconds as the box's local time with its offset: '2026-11-23T14:00:00-06:00'."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def now_rfc3339() -> str:
    """Now, as `format_rfc3339` writes it. Every host call stamps its clock with it: the text
    is kept for the second it names (looking up the local offset took 3% of a GetRewards)."""
    global _now
    second = int(time.time())
    if _now[0] != second:
        _now = (second, format_rfc3339(second))  # one tuple: threads never see half of it
    return _now[1]


_now: tuple[int, str] = (-1, "")
