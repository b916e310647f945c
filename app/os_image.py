"""Which OS image and root slot the box runs (docs/image.md, "A/B slots"): shown on the status
page and sent with the heartbeat, so the support desk sees a box that fell back to its other
slot, and which exact packages it runs (the manifest's hash). Outside the image (development,
tests) all are None."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CMDLINE = "/proc/cmdline"
VARIANT = "/usr/lib/connectbox/variant"  # written by scripts/build-image
# Written by scripts/build-image: every Debian package and Python distribution with its version.
MANIFEST = "/usr/lib/connectbox/manifest.txt"


def os_image(
    cmdline_path: str | Path = CMDLINE,
    variant_path: str | Path = VARIANT,
    manifest_path: str | Path = MANIFEST,
) -> dict[str, Any]:
    """{"slot": "a"/"b"/None, "variant": "production"/"development"/None,
    "manifest": the manifest's SHA-256 (hex) or None}."""
    slot = None
    for word in _read(cmdline_path).split():
        if word.startswith("connectbox.slot="):
            slot = word.split("=", 1)[1] or None
    try:
        manifest = hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()
    except OSError:
        manifest = None
    return {"slot": slot, "variant": _read(variant_path).strip() or None, "manifest": manifest}


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
