"""Logging to stderr (journald picks it up) and the masking every log line must use."""

from __future__ import annotations

import logging
import sys

from provisioning.redaction import mask_id

__all__ = ["mask_id", "setup_logging"]


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # requests/urllib3 log every retry at WARNING; ours say it better.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("waitress").setLevel(logging.WARNING)
