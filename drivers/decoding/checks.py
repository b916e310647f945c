"""Check characters: Luhn (card numbers), GS1 mod-10 (EAN/UPC, GSRN), magstripe track LRC."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """ISO/IEC 7812 Luhn check over a string of digits (the last one is the check digit)."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for `body` (all digits but the check digit)."""
    total = 0
    for position, char in enumerate(reversed(body)):
        total += int(char) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def gs1_valid(digits: str) -> bool:
    """GS1 mod-10 check (EAN-13, EAN-8, UPC-A, GTIN, GSRN ...)."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    return gs1_check_digit(digits[:-1]) == int(digits[-1])


# ISO/IEC 7811: track 1 is 6-bit (characters 0x20-0x5F, start sentinel '%'); tracks 2 and 3 are
# 4-bit (characters 0x30-0x3F, start sentinel ';'). The LRC is the XOR of the data bits of every
# character from the start sentinel to the end sentinel, sent as a character of the same set.
TRACK_CODING = {"6bit": (0x20, 0x3F, "%"), "4bit": (0x30, 0x0F, ";")}


def track_lrc(coding: str, data: str) -> str | None:
    """The LRC character of one track (`data` without sentinels), or None if not encodable."""
    base, mask, start = TRACK_CODING[coding]
    value = 0
    for char in start + data + "?":
        code = ord(char) - base
        if code < 0 or code > mask:
            return None
        value ^= code
    return chr(base + value)


def track_lrc_valid(coding: str, data: str, lrc: str) -> bool:
    expected = track_lrc(coding, data)
    return expected is not None and expected == lrc
