"""The policy the reference host serves: a template whose dates stay valid while it runs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.json")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolicySource:
    """Renders the policy template for a site, with dates that stay valid while the host runs.

    Dates the template leaves out are filled in: `issued_at` moves forward every 7 days (and
    `policy_version` with it) and `expires_at` is 14 days after it, so the document, its
    signature and the config ETag stay the same for a week and a running demo never serves an
    expired policy. Program windows span the issue year (to the end of the expiry year).
    """

    RENEW_EVERY = timedelta(days=7)
    LIFETIME = timedelta(days=14)

    def __init__(self, template: dict[str, Any], started: datetime) -> None:
        self.template = template
        self.started = started.replace(microsecond=0)

    def render(self, site_id: str, now: datetime) -> dict[str, Any]:
        doc = copy.deepcopy(self.template)
        period = self.period(now)
        issued = self.started + period * self.RENEW_EVERY
        expires = issued + self.LIFETIME
        doc["site_id"] = site_id  # a policy is only ever used at its own site
        doc["policy_version"] = int(doc.get("policy_version") or 1) + period
        doc["issued_at"] = doc.get("issued_at") or _rfc3339(issued)
        doc["expires_at"] = doc.get("expires_at") or _rfc3339(expires)
        if not doc.get("subscription_valid_until"):
            doc["subscription_valid_until"] = (expires + timedelta(days=365)).date().isoformat()
        for program in doc.get("programs") or []:
            program["valid_from"] = program.get("valid_from") or f"{issued.year}-01-01"
            program["valid_to"] = program.get("valid_to") or f"{expires.year}-12-31"
        return doc

    def period(self, now: datetime) -> int:
        """How many times the dates were renewed (0 when the template sets its own)."""
        if self.template.get("issued_at") or self.template.get("expires_at"):
            return 0
        return max(0, (now - self.started) // self.RENEW_EVERY)


def load_policy(path: str | Path | None = None) -> dict[str, Any]:
    """A policy template from a JSON file (default: the package's default_policy.json)."""
    with open(path or DEFAULT_POLICY_PATH, encoding="utf-8") as handle:
        doc = json.load(handle)
    if not isinstance(doc, dict) or not isinstance(doc.get("programs", []), list):
        raise ValueError(f"{path}: a policy is a JSON object with a programs list")
    return doc
