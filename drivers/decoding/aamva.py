"""Driver licences (AAMVA): magstripe track 2 and the PDF417 on the back of the card.

Only the birth date is read, and only the age result leaves this module. The licence number,
name, address and dates are never put in a verdict, a reason or a log line (US DPPA and state
laws restrict them): every reason below is a fixed text.
"""

from __future__ import annotations

import re
from datetime import date

from .verdict import Verdict, licence, reject

# AAMVA issuer identification numbers (US states, Canadian provinces, territories).
IIN_RANGES = ((636000, 636062), (604425, 604434))
# Canadian issuers: their PDF417 birth dates are CCYYMMDD whatever the AAMVA version.
CANADIAN_IINS = frozenset(
    {
        "604426",  # Prince Edward Island
        "604428",  # Quebec
        "604429",  # Yukon
        "604432",  # Alberta
        "604433",  # Nunavut
        "604434",  # Northwest Territories
        "636012",  # Ontario
        "636013",  # Nova Scotia
        "636016",  # Newfoundland and Labrador
        "636017",  # New Brunswick
        "636028",  # British Columbia
        "636044",  # Saskatchewan
        "636048",  # Manitoba
    }
)
OLDEST_AGE = 125

# Fixed reasons (no licence data ever goes into a reason).
UNREADABLE_BIRTH_DATE = "driver licence: birth date missing or unreadable"
FUTURE_BIRTH_DATE = "driver licence: birth date in the future"
IMPLAUSIBLE_BIRTH_DATE = "driver licence: implausible birth date"
UNREADABLE_HEADER = "driver licence barcode: AAMVA header unreadable"
NO_LICENCE_DATA = "card number in the driver-licence IIN range without licence data"

_PDF417_HEADER = re.compile(r"@\n[\x1e\x1c]\r(?:ANSI |AAMVA)")
_DIRECTORY_ENTRY = re.compile(r"[A-Z0-9]{2}\d{8}")


def is_licence_iin(number: str) -> bool:
    """Whether a card number starts with an AAMVA issuer identification number."""
    prefix = number[:6]
    if len(prefix) != 6 or not prefix.isascii() or not prefix.isdigit():
        return False
    value = int(prefix)
    return any(low <= value <= high for low, high in IIN_RANGES)


def age_on(birth: date, today: date) -> int:
    """Completed years on `today`; the birthday itself counts (21st birthday = 21)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def age_verdict(birth: date | None, today: date) -> Verdict:
    if birth is None:
        return reject(UNREADABLE_BIRTH_DATE)
    if birth > today:
        return reject(FUTURE_BIRTH_DATE)
    age = age_on(birth, today)
    if age > OLDEST_AGE:
        return reject(IMPLAUSIBLE_BIRTH_DATE)
    return licence(age)


def parse_date(digits: str, order: str) -> date | None:
    """`digits` as CCYYMMDD or MMDDCCYY; None unless 8 digits making a real date."""
    digits = digits.strip()
    if len(digits) != 8 or not digits.isascii() or not digits.isdigit():
        return None
    if order == "CCYYMMDD":
        year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    else:
        month, day, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    try:
        return date(year, month, day)
    except ValueError:
        return None


# ---- magstripe track 2 ------------------------------------------------------------------------


def decode_track2(data: str, today: date) -> Verdict:
    """Track 2 of a licence: IIN + licence number `=` expiry YYMM, birth date CCYYMMDD, ..."""
    _, separator, rest = data.partition("=")
    if not separator or len(rest) < 12 or not rest[:12].isdigit():
        return reject(UNREADABLE_BIRTH_DATE if separator else NO_LICENCE_DATA)
    return age_verdict(parse_date(rest[4:12], "CCYYMMDD"), today)


# ---- PDF417 -------------------------------------------------------------------------------------


def looks_like_pdf417_licence(payload: str) -> bool:
    """An AAMVA PDF417 payload (also a damaged one: it must never become a loyalty ID)."""
    if _PDF417_HEADER.match(payload):
        return True
    head = payload[:48]
    return payload.startswith("@") and ("ANSI " in head or "AAMVA" in head)


def decode_pdf417(payload: str, today: date) -> Verdict:
    """`@` LF RS CR (or FS for RS), `ANSI ` or `AAMVA`, IIN, version, directory, subfiles."""
    if not _PDF417_HEADER.match(payload):
        return reject(UNREADABLE_HEADER)
    rest = payload[9:]
    iin, version_text, rest = rest[:6], rest[6:8], rest[8:]
    if not (iin.isdigit() and version_text.isdigit()):
        return reject(UNREADABLE_HEADER)
    version = int(version_text)
    parsed = _directory(rest, version >= 2) or _directory(rest, version < 2)
    if parsed is None:
        return reject(UNREADABLE_HEADER)
    types, body = parsed
    elements = _elements(body, types)
    canada = iin in CANADIAN_IINS or elements.get("DCG", "").strip().upper() == "CAN"
    order = "MMDDCCYY" if version >= 2 and not canada else "CCYYMMDD"
    raw = elements.get("DBB")
    return age_verdict(parse_date(raw, order) if raw is not None else None, today)


def _directory(rest: str, has_jurisdiction_version: bool) -> tuple[list[str], str] | None:
    """Subfile types and the data after the header, if the header has this layout."""
    if has_jurisdiction_version:
        if not rest[:2].isdigit():
            return None
        rest = rest[2:]
    count_text = rest[:2]
    if not count_text.isdigit() or int(count_text) == 0:
        return None
    count = int(count_text)
    directory = rest[2 : 2 + 10 * count]
    if len(directory) != 10 * count:
        return None
    entries = [directory[i : i + 10] for i in range(0, len(directory), 10)]
    if not all(_DIRECTORY_ENTRY.fullmatch(entry) for entry in entries):
        return None
    return [entry[:2] for entry in entries], rest[2 + 10 * count :]


def _elements(body: str, types: list[str]) -> dict[str, str]:
    """Data elements (3-letter ID -> value) of all subfiles; the first value of an ID wins."""
    found: dict[str, str] = {}
    for segment in re.split(r"[\r\x1e\x1c]", body):
        segment = segment.lstrip("\n")
        if segment[:2] in types:
            segment = segment[2:]
        for element in segment.split("\n"):
            if len(element) >= 3:
                found.setdefault(element[:3], element[3:])
    return found
