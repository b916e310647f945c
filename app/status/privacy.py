"""What the status page, the API and the diagnostics bundle may show.

The parts already mask loyalty IDs and keep secrets to themselves; this is the second line, for
every section, including the ones still to come: values under secret keys are replaced, values
under loyalty-ID keys are masked to their last 4 characters, and known secret strings are cut out
of free text (log lines).
"""

from __future__ import annotations

from typing import Any

from provisioning.redaction import REDACTED, cut_secrets, mask_id

SECRET_KEYS = frozenset(
    {"token", "pin", "claim_code", "password", "secret", "secret_key", "api_key"}
)
ID_KEYS = frozenset({"loyalty_id", "masked_id", "loyalty_id_masked", "masked_loyalty_id", "pan"})


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secrets replaced and loyalty IDs masked, at any depth."""
    lowered = key.lower()
    if lowered in SECRET_KEYS and value not in (None, ""):
        return REDACTED
    if lowered in ID_KEYS:
        if isinstance(value, str):
            return mask_id(value) if value else value
        if isinstance(value, dict) and isinstance(value.get("value"), str):
            return {**value, "value": mask_id(value["value"])}
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def scrub_text(text: str, secrets: list[str | None]) -> str:
    """`text` with the known secrets cut out (wherever they stand, even inside a number)."""
    return cut_secrets(text, secrets)
