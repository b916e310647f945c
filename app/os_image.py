"""Which OS image, version and root slot the box runs (docs/image.md, "A/B slots"): shown on
the status page and sent with the heartbeat, so the support desk sees a box that fell back to
its other slot, and which exact packages it runs (the manifest's hash). Outside the image
(development, tests) all are None."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from provisioning.osimage import CMDLINE, OS_VERSION_FILE, read_text, running_os

VARIANT = "/usr/lib/connectbox/variant"  # written by scripts/build-image
# Written by scripts/build-image: every Debian package and Python distribution with its version.
MANIFEST = "/usr/lib/connectbox/manifest.txt"


def os_image(
    cmdline_path: str | Path = CMDLINE,
    variant_path: str | Path = VARIANT,
    version_path: str | Path = OS_VERSION_FILE,
    manifest_path: str | Path = MANIFEST,
) -> dict[str, Any]:
    """{"slot": "a"/"b"/None, "version": the OS version or None, "variant": ...,
    "manifest": the manifest's SHA-256 (hex) or None}."""
    slot, version = running_os(Path(cmdline_path), Path(version_path))
    variant = read_text(Path(variant_path)).strip()
    try:
        manifest = hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()
    except OSError:
        manifest = None
    return {"slot": slot, "version": version, "variant": variant or None, "manifest": manifest}
