"""US phone numbers (NANP) as loyalty IDs: normalisation and the validity rules of DESIGN.md.

Deliberately rule-based and dependency-free: the offline engine runs it on every basket, and the
rules are the ones the manufacturers' programs publish, not a carrier database.
"""

from __future__ import annotations

import re

# What people and POS keypads put between the digits.
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would accept '²' or Arabic digits


def normalize_us_phone(value: str) -> str | None:
    """The 10 digits of a US phone number, or None when `value` is not shaped like one.

    Accepts "(512) 467-1234", "512.467.1234", "+1 512 467 1234", "15124671234". Only shape is
    checked here; `is_valid_us_phone` applies the numbering rules.
    """
    if not isinstance(value, str):
        return None
    text = _SEPARATORS.sub("", value)
    if text.startswith("+"):
        # An explicit country code must be +1 followed by the 10 digits.
        if not (text.startswith("+1") and len(text) == 12):
            return None
        text = text[2:]
    elif len(text) == 11 and text.startswith("1"):
        text = text[1:]
    if len(text) != 10 or not _DIGITS.fullmatch(text):
        return None
    return text


def is_valid_us_phone(value: str) -> bool:
    """True for a 10-digit number that could be a real, assignable NANP number."""
    digits = normalize_us_phone(value)
    if digits is None:
        return False
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    if area[0] in "01" or exchange[0] in "01":
        return False
    if area[1] == "9":  # reserved for expansion of the plan
        return False
    if exchange[1:] == "11":  # N11 service codes (411, 911, ...)
        return False
    if exchange == "555" and "0100" <= line <= "0199":  # reserved for fiction
        return False
    return len(set(digits)) > 1  # 222-222-2222 and the like are keyed to skip the prompt
