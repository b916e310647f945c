"""The diagnostics bundle a technician downloads for the support desk: one zip file with the
configuration without its secrets, the status JSON, the verdict and the recent log lines."""

from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile
from typing import Any

from app.status.privacy import redact, scrub_text
from app.status.verdict import Verdict


def config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = dataclasses.asdict(config)
    else:
        raw = dict(vars(config))
    # Attributes added to a section after it was built (not dataclass fields) count too.
    for name, part in vars(config).items():
        if dataclasses.is_dataclass(part) and isinstance(raw.get(name), dict):
            for key, value in vars(part).items():
                raw[name].setdefault(key, value)
    return redact(json.loads(json.dumps(raw, default=str)))


def bundle(
    config: Any,
    status: dict[str, Any] | None,
    verdict: Verdict,
    log_lines: list[str],
    secrets: list[str | None],
    now: float | None = None,
) -> tuple[str, bytes]:
    """(file name, zip bytes)."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    device = (status or {}).get("device_id") or "box"
    folder = f"connectbox-diagnostics-{device}-{stamp}"
    files = {
        "config.json": json.dumps(config_dict(config), indent=2, sort_keys=True),
        "status.json": json.dumps(redact(status), indent=2, default=str),
        "verdict.txt": _verdict_text(verdict),
        "log.txt": "\n".join(log_lines) + "\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"{folder}/{name}", scrub_text(content, secrets))
    return f"{folder}.zip", buffer.getvalue()


def _verdict_text(verdict: Verdict) -> str:
    lines = [verdict.title]
    if verdict.detail:
        lines.append(f"  ({verdict.detail})")
    if verdict.action:
        lines.append(f"What to do: {verdict.action}")
    for other in verdict.others:
        lines.append(f"Also: {other.title}" + (f" ({other.detail})" if other.detail else ""))
    return "\n".join(lines) + "\n"
