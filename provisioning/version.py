"""The installed software version, without importing `app/`."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def software_version() -> str:
    try:
        return metadata.version("connectbox")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
