"""Decimal amounts as the POS and the host write them.

The POS writes decimals loosely (".18", "1.4", "2"); the host API wants decimal strings, never
floats. Everything in between is `Decimal`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0")


def parse_decimal(text: str | None) -> Decimal | None:
    """Read a POS or host decimal; None for empty or unreadable text."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fmt_money(value: Decimal) -> str:
    """Currency as a two-decimal string: Decimal('0.5') -> '0.50'."""
    return str(to_cents(value))


def fmt_decimal(value: Decimal | None) -> str | None:
    """A quantity or price as a plain decimal string, keeping its precision ('.18' -> '0.18')."""
    if value is None:
        return None
    text = format(value, "f")
    return text
