"""The technician actions' guards: the site PIN with a lockout, and a per-session CSRF token.

The PIN (`[status] pin`) is compared in constant time. Five wrong PINs from one client address
within five minutes lock that address out for five minutes; twenty wrong PINs from any addresses
within five minutes lock everyone out for five minutes (guessing from many addresses). While
locked even the right PIN is refused. No PIN configured: the actions are disabled.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import session

MAX_FAILURES = 5  # per client address
GLOBAL_MAX_FAILURES = 20  # from all addresses together
LOCKOUT_S = 300.0
MAX_TRACKED_CLIENTS = 1000


@dataclass(frozen=True)
class PinCheck:
    ok: bool
    message: str = ""


@dataclass
class _Strikes:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class PinGate:
    def __init__(
        self,
        pin: str | None,
        max_failures: int = MAX_FAILURES,
        global_max_failures: int = GLOBAL_MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        clock: Callable[[], float] = time.monotonic,
        config_file: str = "",
    ) -> None:
        self._pin = pin.encode() if pin else None
        self.disabled_message = disabled_message(config_file)
        self.max_failures = max_failures
        self.global_max_failures = global_max_failures
        self.lockout_s = lockout_s
        self.clock = clock
        self._clients: dict[str, _Strikes] = {}
        self._global = _Strikes()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._pin is not None

    def locked_for(self, client: str) -> float:
        """Seconds until `client` may try again (0: not locked)."""
        now = self.clock()
        with self._lock:
            strikes = self._clients.get(client)
            until = max(self._global.locked_until, strikes.locked_until if strikes else 0.0)
        return max(0.0, until - now)

    def check(self, client: str, attempt: str | None) -> PinCheck:
        if self._pin is None:
            return PinCheck(False, self.disabled_message)
        left = self.locked_for(client)
        if left:
            return PinCheck(False, f"Too many wrong PINs: actions are locked for {_minutes(left)}.")
        if not attempt:
            return PinCheck(False, "Enter the site PIN to use the technician actions.")
        if hmac.compare_digest(attempt.encode(), self._pin):
            with self._lock:
                self._clients.pop(client, None)
            return PinCheck(True)
        locked = self._strike(client)
        if locked:
            return PinCheck(False, f"Wrong PIN. Actions are locked for {_minutes(self.lockout_s)}.")
        return PinCheck(False, "Wrong PIN.")

    def _strike(self, client: str) -> bool:
        """Count a failure; True when it locked the client or everyone."""
        now = self.clock()
        with self._lock:
            if client not in self._clients and len(self._clients) >= MAX_TRACKED_CLIENTS:
                self._forget_idle(now)
            strikes = self._clients.setdefault(client, _Strikes())
            client_locked = self._add(strikes, now, self.max_failures)
            global_locked = self._add(self._global, now, self.global_max_failures)
        return client_locked or global_locked

    def _add(self, strikes: _Strikes, now: float, limit: int) -> bool:
        failures = strikes.failures
        failures.append(now)
        while failures and failures[0] <= now - self.lockout_s:
            failures.popleft()
        if len(failures) < limit:
            return False
        strikes.locked_until = now + self.lockout_s
        failures.clear()
        return True

    def _forget_idle(self, now: float) -> None:
        for client, strikes in list(self._clients.items()):
            recent = strikes.failures and strikes.failures[-1] > now - self.lockout_s
            if not recent and strikes.locked_until <= now:
                del self._clients[client]


def disabled_message(config_file: str) -> str:
    """What the page says without a PIN, naming the file the box really read ("<demo>" and
    "<built-in>" are no file)."""
    where = config_file if config_file and not config_file.startswith("<") else ""
    return (
        "Technician actions are disabled: no site PIN is configured. Set pin in the [status] "
        f"section of {where or 'the configuration file'} and restart the service."
    )


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# ---- CSRF: one random token per browser session, in Flask's signed session cookie ------------

CSRF_FIELD = "csrf"


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_valid(submitted: str | None) -> bool:
    expected = session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), expected.encode())
