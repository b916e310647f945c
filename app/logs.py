"""Logging to stderr (journald picks it up) and the masking every log line must use."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from provisioning.redaction import mask_id

__all__ = ["JournalLevels", "JournalSync", "mask_id", "setup_logging"]


FORMAT = "%(levelname)s %(name)s: %(message)s"


class JournalLevels(logging.Formatter):
    """Under journald, each line starts with its syslog priority (`<4>` for a warning), which
    journald takes off and keeps as the line's PRIORITY: `journalctl -p warning` finds them."""

    SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.SYSLOG.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        return f"<{priority}>{super().format(record)}"


def setup_logging(level: str = "INFO", journal_sync: Path | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # systemd sets JOURNAL_STREAM when stderr is a journal stream.
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JournalLevels(FORMAT) if journal else logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if journal_sync is not None:  # after the stderr handler: the line is out before the ask
        root.addHandler(JournalSync(journal_sync))
    root.setLevel(level.upper())
    # requests/urllib3 log every retry at WARNING; ours say it better.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("waitress").setLevel(logging.WARNING)


class JournalSync(logging.Handler):
    """Warnings and errors reach the disk at once, not at journald's next interval.

    journald writes to disk at once only for CRIT and above (the rest every SyncIntervalSec),
    and `journalctl --sync` needs root. The image's `connectbox-journal-sync.socket` runs it for
    the service: one connection, one sync, and the helper closes the connection once the
    journal (with every line sent before the connection) is on disk. `emit` only raises a flag,
    so logging never waits; one thread makes the connections, and lines logged during a sync get
    one more sync after it (at most one every `min_gap_s`)."""

    def __init__(self, socket_path: Path, timeout_s: float = 10.0, min_gap_s: float = 0.2) -> None:
        super().__init__(logging.WARNING)
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.min_gap_s = min_gap_s
        self.syncs = 0
        self.last_error: str | None = None
        self._wanted = threading.Event()
        threading.Thread(target=self._run, name="journal-sync", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.sync()
            except OSError as exc:
                # Not through logging: a warning here would ask for another sync.
                if str(exc) != self.last_error:
                    print(f"journal sync helper: {exc}", file=sys.stderr, flush=True)
                self.last_error = str(exc)
            time.sleep(self.min_gap_s)

    def sync(self) -> None:
        """One sync through the helper; returns once the journal is on disk."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.socket_path))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        self.syncs += 1
        self.last_error = None
