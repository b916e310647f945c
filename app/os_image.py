"""Which OS image and root slot the box runs (docs/image.md, "A/B slots"): shown on the status
page and sent with the heartbeat, so the support desk sees a box that fell back to its other
slot. Outside the image (development, tests) both are None."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CMDLINE = "/proc/cmdline"
VARIANT = "/usr/lib/connectbox/variant"  # written by scripts/build-image


def os_image(
    cmdline_path: str | Path = CMDLINE, variant_path: str | Path = VARIANT
) -> dict[str, Any]:
    """{"slot": "a"/"b"/None, "variant": "production"/"development"/None}."""
    slot = None
    for word in _read(cmdline_path).split():
        if word.startswith("connectbox.slot="):
            slot = word.split("=", 1)[1] or None
    return {"slot": slot, "variant": _read(variant_path).strip() or None}


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
