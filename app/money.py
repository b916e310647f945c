"""Decimal amounts as the POS and the host write them, bounded before any arithmetic.

The POS writes decimals loosely (".18", "1.4", "2"); the host API wants decimal strings, never
floats. Everything in between is `Decimal`. A value from a peer is checked as text first: at
most `MAX_INT_DIGITS` digits before the point and `MAX_FRAC_DIGITS` after, no exponent, no NaN
or Infinity. `Decimal("1e999999999")` is cheap to build but formatting it writes a billion
digits, so nothing unbounded ever becomes a `Decimal`.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")
MAX_INT_DIGITS = 12  # $999,999,999,999.99: far above any sale, far below trouble
MAX_FRAC_DIGITS = 6  # fuel prices have 3 decimals, percentages a few
MAX_TEXT = 64  # longer text is not looked at (leading zeros or spaces included)
_DECIMAL = re.compile(
    rf"[+-]?(?:[0-9]{{1,{MAX_INT_DIGITS}}}(?:\.[0-9]{{0,{MAX_FRAC_DIGITS}}})?|\.[0-9]{{1,{MAX_FRAC_DIGITS}}})"
)


class BadNumber(ValueError):
    """A number from a peer that is malformed or out of bounds; the message says which."""


def read_decimal(text: str | None) -> Decimal | None:
    """A peer's decimal: None when absent or empty; BadNumber when present but not a plain,
    bounded decimal."""
    if text is None:
        return None
    if len(text) > MAX_TEXT:
        raise BadNumber(f"number of {len(text)} characters (at most {MAX_TEXT})")
    text = text.strip()
    if not text:
        return None
    if not _DECIMAL.fullmatch(text):
        raise BadNumber(
            f"{text[:24]!r} is not a plain decimal of at most {MAX_INT_DIGITS} digits before "
            f"the point and {MAX_FRAC_DIGITS} after"
        )
    value = Decimal(text)
    return value.copy_abs() if value.is_zero() else value  # "-0" is zero, never "-0.00"


def parse_decimal(text: str | None) -> Decimal | None:
    """Like `read_decimal`, but None for anything unreadable (the caller drops the value)."""
    try:
        return read_decimal(text)
    except BadNumber:
        return None


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fmt_money(value: Decimal) -> str:
    """Currency as a two-decimal string: Decimal('0.5') -> '0.50'."""
    return str(to_cents(value))


def fmt_decimal(value: Decimal | None) -> str | None:
    """A quantity or price as a plain decimal string, keeping its precision ('.18' -> '0.18')."""
    if value is None:
        return None
    return format(value, "f")
