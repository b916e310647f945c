"""Whether the central host is answering, as the relay sees it (OctoPrint's connectivity checker).

`online` flips on real traffic: a good answer sets it, a failure or timeout clears it. Listeners
(the status page, later the offline engine) are told on each change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("connectbox.host")


class HostConnectivity:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._online: bool | None = None  # None until the first call
        self.last_ok: float | None = None
        self.last_error: str = ""
        self.unauthorized = False
        self.counters = {"ok": 0, "timeout": 0, "error": 0}
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def online(self) -> bool:
        return bool(self._online)

    @property
    def known_down(self) -> bool:
        """The last call failed (not merely: no call yet)."""
        return self._online is False

    def on_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def forget(self) -> None:
        """New credentials: what the host thought of the old ones no longer says anything."""
        with self._lock:
            self._online = None
            self.unauthorized = False

    def ok(self) -> None:
        with self._lock:
            self.counters["ok"] += 1
            self.last_ok = time.time()
            self.unauthorized = False
        self._set(True, "")

    def failed(self, reason: str, timeout: bool = False, unauthorized: bool = False) -> None:
        with self._lock:
            self.counters["timeout" if timeout else "error"] += 1
            self.last_error = reason
            self.unauthorized = self.unauthorized or unauthorized
        self._set(False, reason)

    def _set(self, online: bool, reason: str) -> None:
        with self._lock:
            changed = self._online != online
            self._online = online
        if not changed:
            return
        if online:
            log.info("central host reachable again")
        else:
            log.warning("central host not answering: %s", reason)
        for listener in self._listeners:
            listener(online)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "online": bool(self._online),
                "last_ok": self.last_ok,
                "last_error": self.last_error,
                "unauthorized": self.unauthorized,
                **self.counters,
            }
