"""The box clock when NTP cannot reach it: set from the host's `Date`, through a helper.

A site may block NTP; a box with a flat RTC battery then starts at its image's build time or
at its last shutdown. The host's answers carry `Date`, so while NTP has not synchronized the
clock, each housekeeping tick compares the clock with the host's time (the latest `Date` plus
the time since that answer arrived) and, when they are more than TOLERANCE_S apart, asks the
image's clock helper (connectbox-clock.socket, the only holder of CAP_SYS_TIME) to set it. The
helper bounds each step and logs it (image/overlay/usr/lib/connectbox/set-clock).

Offline decisions depend on dates (policy validity, daily limits): with a helper configured
they wait until the clock was synchronized by NTP or checked against the host (`problem()`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger("connectbox.clock")

SYNCED_FLAG = Path("/run/systemd/timesync/synchronized")  # timesyncd touches it at each sync
TOLERANCE_S = 5.0  # `Date` counts whole seconds, and the answer took a while to come
MAX_DATE_AGE_S = 3600.0  # an older `Date` is not used


class DateSource(Protocol):
    """The host client: its latest `Date` header and when (monotonic) that answer came."""

    last_date_header: str | None
    last_date_at: float | None


class ClockKeeper:
    def __init__(
        self,
        source: DateSource,
        helper: Path | None,
        *,
        synced_flag: Path = SYNCED_FLAG,
        on_step: Callable[[], None] = lambda: None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.helper = helper
        self.synced_flag = synced_flag
        self.on_step = on_step
        self._wall = wall
        self._monotonic = monotonic
        self.state = "unchecked"
        """"ntp" (synchronized), "host" (within TOLERANCE_S of the host's time) or "unchecked"."""
        self.last_answer: str | None = None
        """What the helper said the last time it was asked."""

    def host_time(self) -> float | None:
        """The host's time now, from its latest `Date`; None without a recent one."""
        header, at = self.source.last_date_header, self.source.last_date_at
        if not header or at is None or self._monotonic() - at > MAX_DATE_AGE_S:
            return None
        try:
            then = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError):
            return None
        return then + 0.5 + (self._monotonic() - at)  # 0.5: the header's second is truncated

    def tick(self) -> None:
        if self.helper is None:
            return
        if self.synced_flag.exists():
            self.state = "ntp"
            return
        host = self.host_time()
        if host is None:
            return
        offset = host - self._wall()
        if abs(offset) <= TOLERANCE_S:
            self.state = "host"
            return
        self.state = "unchecked"
        side = "behind" if offset > 0 else "ahead of"
        log.warning(
            "the box clock is %.0f s %s the host's and NTP has not synchronized it: "
            "asking the clock helper to set it",
            abs(offset),
            side,
        )
        try:
            self.last_answer = self._ask(host)
        except OSError as exc:
            self.last_answer = f"the clock helper cannot be reached: {exc}"
            log.error("%s", self.last_answer)
            return
        log.warning("clock helper: %s", self.last_answer)
        self.on_step()

    def _ask(self, target: float) -> str:
        assert self.helper is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10.0)
            sock.connect(str(self.helper))
            sock.sendall(f"{target:.3f}\n".encode())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        return answer.decode(errors="replace").strip() or "no answer"

    def problem(self) -> str | None:
        """Why time-dependent decisions must wait; None when the clock can be trusted."""
        if self.helper is None or self.state != "unchecked":
            return None
        return (
            "the box clock is not set yet (NTP has not synchronized it and the host's time has "
            "not confirmed it): offline discounts wait for it"
        )
