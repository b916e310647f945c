"""The verdict a frame decodes to, and the per-reader decoding options.

A verdict is one of `id` (a loyalty ID), `dl` (a driver licence: only `over_21` and `age`),
`reject` (with a reason a technician understands) or `ignore` (an empty frame). Reasons never
carry card data: no card number, no licence data, only what is needed to fix a reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESULTS = ("id", "dl", "reject", "ignore")


@dataclass(frozen=True)
class DecodeOptions:
    """How one reader's frames are decoded (`[[readers.bind]]` in the configuration)."""

    luhn: bool = False  # magstripe card numbers must pass the Luhn check
    lrc: bool = False  # every magstripe track is followed by its LRC character, checked
    require_aim: bool = True  # text without sentinels must carry an AIM symbology identifier
    track1_formats: tuple[str, ...] = ("B", "A")  # allowed track-1 format codes


@dataclass(frozen=True)
class Verdict:
    result: str  # id | dl | reject | ignore
    loyalty_id: str | None = None
    source: str | None = None  # magstripe | barcode
    symbology: str | None = None  # track1 / track2, the AIM identifier (]E0 ...), or none
    over_21: bool | None = None
    age: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError("unknown verdict result")
        if self.result == "dl" and (
            self.loyalty_id is not None
            or self.source is not None
            or self.symbology is not None
            or self.reason is not None
        ):
            # A licence verdict carries the age result and nothing else, ever.
            raise ValueError("a licence verdict carries only over_21 and age")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of `connectbox card decode`: only the keys of this result."""
        if self.result == "id":
            return {
                "result": "id",
                "loyalty_id": self.loyalty_id,
                "source": self.source,
                "symbology": self.symbology,
            }
        if self.result == "dl":
            return {"result": "dl", "over_21": self.over_21, "age": self.age}
        if self.result == "reject":
            return {"result": "reject", "reason": self.reason}
        return {"result": "ignore"}

    def describe(self) -> str:
        """One line for logs and the status page; a loyalty ID shows only its last 4 chars."""
        if self.result == "id":
            return f"loyalty ID {mask_id(self.loyalty_id)} ({self.source}, {self.symbology})"
        if self.result == "dl":
            verdict = "over 21" if self.over_21 else "under 21"
            return f"driver licence: {verdict} (age {self.age})"
        if self.result == "reject":
            return f"rejected: {self.reason}"
        return "ignored: empty frame"


def mask_id(value: str | None) -> str:
    """Only the last 4 characters (IDs of 4 characters or fewer are masked entirely)."""
    if not value:
        return "-"
    if len(value) <= 4:
        return "*" * len(value)
    return "*" * min(len(value) - 4, 6) + value[-4:]


def loyalty(loyalty_id: str, source: str, symbology: str) -> Verdict:
    return Verdict("id", loyalty_id=loyalty_id, source=source, symbology=symbology)


def reject(reason: str) -> Verdict:
    return Verdict("reject", reason=reason)


def ignore() -> Verdict:
    return Verdict("ignore")


def licence(age: int) -> Verdict:
    return Verdict("dl", over_21=age >= 21, age=age)


def shown(text: str) -> str:
    """Frame characters safe to quote in a reason (non-printable ones as \\xNN)."""
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)


def is_printable(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)
