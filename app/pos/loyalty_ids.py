"""What the POS put in `LoyaltyID`: a loyalty ID, a masked or cut repeat of one, or an age check.

Passport sends a scanned driver licence as `MM/DD/YYYY,MM/DD/YYYY` (birth date, expiry) in the
LoyaltyID element. That is an age check, never a loyalty ID: only "over 21: yes/no" survives.
Later GetRewards of a transaction may carry the ID masked (`******0123`) or truncated to 40
characters; they resolve to the full ID the session already holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

MASK_CHARS = "*Xx#"
_LICENCE_DATES = re.compile(r"^(\d{2})/(\d{2})/(\d{4}),(\d{2})/(\d{2})/(\d{4})$")
ADULT_AGE = 21


@dataclass(frozen=True)
class AgeCheck:
    over_21: bool


def read_age_check(value: str, today: date) -> AgeCheck | None:
    """An AgeCheck when the value is the POS's licence-date pair, else None."""
    match = _LICENCE_DATES.match(value.strip())
    if not match:
        return None
    bm, bd, by, em, ed, ey = (int(g) for g in match.groups())
    try:
        birth, expiry = date(by, bm, bd), date(ey, em, ed)
    except ValueError:
        return AgeCheck(over_21=False)  # impossible dates prove nothing
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return AgeCheck(over_21=age >= ADULT_AGE and expiry >= today)


def resolve(full: str | None, seen: str) -> str:
    """The session's full ID when `seen` is a masked or truncated form of it, else `seen`."""
    if not full or seen == full:
        return seen
    if full.startswith(seen) and len(seen) >= 8:
        return full  # truncated (Passport cuts scanned IDs to 40 characters)
    if any(c in MASK_CHARS for c in seen):
        if len(seen) == len(full) and all(
            s == f or s in MASK_CHARS for s, f in zip(seen, full, strict=True)
        ):
            return full
        tail = seen.lstrip(MASK_CHARS)
        if len(tail) >= 4 and full.endswith(tail):
            return full
    return seen
