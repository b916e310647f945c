"""The last few hundred log records, kept in memory for the diagnostics bundle.

One handler per process on the root logger: `install()` adds it once and returns the same one to
every status application after that. Log lines are masked where they are written (loyalty IDs
show their last 4 characters); the bundle cuts known secrets out once more.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

CAPACITY = 500
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_install_lock = threading.Lock()


class LogBuffer(logging.Handler):
    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__()
        self._lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)

    def lines(self) -> list[str]:
        return list(self._lines)


def install(capacity: int = CAPACITY) -> LogBuffer:
    """The process's LogBuffer on the root logger, added on the first call."""
    root = logging.getLogger()
    with _install_lock:
        for handler in root.handlers:
            if isinstance(handler, LogBuffer):
                return handler
        handler = LogBuffer(capacity)
        root.addHandler(handler)
        return handler
