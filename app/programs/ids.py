"""Which loyalty IDs a program of the policy document takes: a phone number, its cards, or any.

A program (host-api.md, `programs`) may declare
  "loyalty_id": "us_phone"   a valid US phone number (nanp.py);
  "card": {"min_length": 8, "ranges": [{"from": "60000000", "to": "60999999"}]}
                             a card number of at least `min_length` characters and, when
                             `ranges` is given, within one of them (inclusive; `from` and `to`
                             are digit strings of one length, which is then the card's length).
A program declaring either takes an ID that passes one of them; one declaring neither takes any
ID (the host judges it). Loyalty card makers give each program its own numbers (Centegra: "a
minimum of 8 digits", "distinct number ranges for individual programs"), so a card read at the
box that no program takes is refused there: it never reaches the host or an offline decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.programs.nanp import is_valid_us_phone, normalize_us_phone

MAX_CARD_LENGTH = 40  # the longest reference a card decoder gives (a plain track 1)
NO_PROGRAM_RANGE = "card number matches no program's number range"

_NUMBER = re.compile(f"[0-9]{{1,{MAX_CARD_LENGTH}}}")


@dataclass(frozen=True)
class CardRule:
    """A program's `card`: the card numbers it takes."""

    min_length: int = 1
    ranges: tuple[tuple[str, str], ...] = ()  # (from, to), inclusive, of equal length

    def takes(self, card: str) -> bool:
        if len(card) < self.min_length:
            return False
        if not self.ranges:
            return True
        # Equal-length digit strings compare as their numbers do.
        return _NUMBER.fullmatch(card) is not None and any(
            len(card) == len(low) and low <= card <= high for low, high in self.ranges
        )


def card_rule(program: dict[str, Any]) -> CardRule | None:
    """The program's `card` rule; None when it declares none, ValueError when malformed."""
    spec = program.get("card")
    if spec is None:
        return None
    name = f"program {program.get('program_id')!r}: card"
    if not isinstance(spec, dict):
        raise ValueError(f"{name} is not an object")
    min_length = spec.get("min_length", 1)
    if isinstance(min_length, bool) or not isinstance(min_length, int):
        raise ValueError(f"{name}.min_length is not an integer")
    if not 1 <= min_length <= MAX_CARD_LENGTH:
        raise ValueError(f"{name}.min_length is not 1-{MAX_CARD_LENGTH}")
    ranges = spec.get("ranges", [])
    if not isinstance(ranges, list):
        raise ValueError(f"{name}.ranges is not a list")
    parsed = []
    for entry in ranges:
        low, high = (entry.get("from"), entry.get("to")) if isinstance(entry, dict) else (0, 0)
        if not (isinstance(low, str) and isinstance(high, str)):
            raise ValueError(f"{name}.ranges: every range needs from and to strings")
        if not (_NUMBER.fullmatch(low) and _NUMBER.fullmatch(high) and len(low) == len(high)):
            raise ValueError(f"{name}.ranges: from and to must be digits of one length")
        if low > high:
            raise ValueError(f"{name}.ranges: from {low} is above to {high}")
        parsed.append((low, high))
    return CardRule(min_length, tuple(parsed))


def check_programs(doc: dict[str, Any]) -> None:
    """ValueError when a program of the policy document has a malformed `card` rule."""
    for program in doc.get("programs") or []:
        if isinstance(program, dict):
            card_rule(program)


def takes(program: dict[str, Any], loyalty_id: str | None) -> bool:
    """Whether `program` takes `loyalty_id` (a program with a malformed card rule takes none)."""
    if not isinstance(loyalty_id, str) or not loyalty_id.strip():
        return False
    try:
        rule = card_rule(program)
    except ValueError:
        return False
    phone = program.get("loyalty_id") == "us_phone"
    if not phone and rule is None:
        return True
    return (phone and is_valid_us_phone(loyalty_id)) or (
        rule is not None and rule.takes(loyalty_id.strip())
    )


def looks_like_phone(program: dict[str, Any], loyalty_id: str) -> bool:
    """Whether a refused ID was meant as the program's phone number rather than its card."""
    if program.get("loyalty_id") != "us_phone":
        return False
    return program.get("card") is None or normalize_us_phone(loyalty_id) is not None


def unmatched_read(programs: Any, loyalty_id: str) -> str | None:
    """Why no program takes a card read at the box; None when one does, or when no program
    declares card numbers (the host then judges every ID)."""
    programs = [p for p in programs if isinstance(p, dict)] if isinstance(programs, list) else []
    if all(p.get("card") is None for p in programs):
        return None
    if any(takes(p, loyalty_id) for p in programs):
        return None
    rules = [rule for p in programs if (rule := _rule_or_none(p)) is not None]
    shortest = min((rule.min_length for rule in rules), default=1)
    if len(loyalty_id) < shortest:
        return f"{NO_PROGRAM_RANGE} (shorter than the {shortest} characters a program asks for)"
    return NO_PROGRAM_RANGE


def _rule_or_none(program: dict[str, Any]) -> CardRule | None:
    try:
        return card_rule(program)
    except ValueError:
        return None
