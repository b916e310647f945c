"""Logging to stderr (journald picks it up) and the masking every log line must use."""

from __future__ import annotations

import logging
import sys


def mask_id(value: str | None) -> str:
    """A loyalty ID as logs and the status page may show it: only the last 4 characters."""
    if not value:
        return "-"
    tail = value[-4:]
    return "*" * min(max(len(value) - 4, 0), 6) + tail if len(value) > 4 else "*" * len(value)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # requests/urllib3 log every retry at WARNING; ours say it better.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("waitress").setLevel(logging.WARNING)
