"""What may leave the box or reach a screen: secrets cut out, loyalty IDs masked. One marker.

Every secret the box removes (from the status page, the API, the diagnostics bundle, the logs
it uploads) is replaced by `REDACTED`; a loyalty ID keeps only its last 4 characters
(`mask_id`). `cut_secrets` removes known secret strings from any text; `redact_log_text` also
finds the secrets and loyalty IDs that log lines spell out (`Bearer ...`, `pin=1234`, runs of
digits). Here, not in `app/`, so that `provisioning/` (log upload) can use it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 4  # shorter "secrets" would cut ordinary text to pieces

_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/=]+")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (\b(?:pin|pin_?code|passcode|password|passwd|pwd|secret|device_token|token|api_key)
     ["']?\s*[:=]\s*)
    ("[^"\n]*"|'[^'\n]*'|[^\s"',;&}]+)
    """
)
_DIGITS = re.compile(r"(?<![0-9])[0-9]{8,}(?![0-9])")
_PHONE = re.compile(r"(?<![0-9])\(?[2-9][0-9]{2}\)?[-. ][0-9]{3}[-. ][0-9]{4}(?![0-9])")


def mask_id(value: str | None) -> str:
    """A loyalty ID as logs and the status page may show it: only the last 4 characters (an ID
    of 4 characters or fewer is masked entirely; none at all is '-')."""
    if not value:
        return "-"
    if len(value) <= 4:
        return "*" * len(value)
    return "*" * min(len(value) - 4, 6) + value[-4:]


def cut_secrets(text: str, secrets: Iterable[str | None], whole_numbers: bool = False) -> str:
    """`text` with every known secret of `MIN_SECRET_LEN` characters or more replaced by
    `REDACTED`, longest first. With `whole_numbers`, an all-digit secret (a PIN) is cut only
    where it stands alone, not from the middle of a longer number."""
    literals = {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
    for secret in sorted(literals, key=len, reverse=True):
        if whole_numbers and secret.isdigit():
            text = re.sub(rf"(?<![0-9]){re.escape(secret)}(?![0-9])", REDACTED, text)
        else:
            text = text.replace(secret, REDACTED)
    return text


def redact_log_text(
    text: str, tokens: list[str | None] | None = None, secrets: list[str] | None = None
) -> str:
    """Log text fit to leave the box: tokens (`Bearer ...`, the literal current and pending
    tokens), PINs and passwords (`pin=1234`, `"password": "..."`, the literal `secrets`) are
    replaced by [REDACTED]; loyalty IDs (runs of 8+ digits, formatted US phone numbers) keep
    only their last 4 digits (`******1234`)."""
    text = cut_secrets(text, [*(tokens or []), *(secrets or [])], whole_numbers=True)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SECRET_FIELD.sub(_redact_field, text)
    text = _PHONE.sub(_mask_digits, text)
    return _DIGITS.sub(_mask_digits, text)


def _redact_field(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def _mask_digits(match: re.Match[str]) -> str:
    return mask_id(re.sub(r"[^0-9]", "", match.group(0)))
