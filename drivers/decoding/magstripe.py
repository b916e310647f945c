"""Magnetic stripe frames: `%…?` track 1, `;…?` track 2, `+…?` `#…?` `!…?` `&…?` track 3.

ID TECH readers send a CR after every track and a second `%…?` (or `;…?`) for track 3; MagTek
readers may send `@…?` for a non-standard 7-bit track 2. Tracks 1 and 2 give loyalty IDs; track 2
is preferred, and when both give one they must agree. Track 3 is read only when neither gives
one, and only as a plain card reference (cards.md: loyalty card makers may put an alphanumeric
reference there). A licence is never a loyalty ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from . import aamva
from .checks import luhn_valid, track_lrc_valid
from .verdict import DecodeOptions, Verdict, is_printable, loyalty, reject, shown

START_SENTINELS = "%;+#!&@"
END_SENTINEL = "?"
BETWEEN_TRACKS = "\r\n\t"  # ID TECH: a CR after every track

NON_PRINTABLE = "non-printable bytes (wrong baud rate or line noise)"
PARTIAL = "partial read: a track has no end sentinel '?' (swipe again)"
BAD_FRAMING = "bad framing: data outside the track sentinels"
AFTER_TRACK = (
    "bad framing: data after a track's end sentinel (if the reader sends the LRC, set lrc = true)"
)
ALL_FAILED = "bad read: every track failed (E), swipe again"
TOO_MANY_TRACKS = "bad framing: more than three tracks in one swipe"
LRC_MISSING = "LRC character missing after a track (is the reader set to send the LRC?)"
ONLY_TRACK_3 = (
    "no track 1 or track 2 data (only track 3 read), and track 3 is not a card reference "
    "(4-40 letters or digits)"
)
LICENCE_FRAGMENT = "driver licence fragment: track 1 without a usable track 2"
LICENCE_WITHOUT_AIM = "driver licence barcode without AIM identifier (not accepted)"
TRACK2_CHARS = "track 2 holds characters other than digits and '='"
TRACK2_LENGTH = "track 2 card number must be 1-19 digits before '='"
TRACK1_B = "track 1 format B: card number must be 1-19 digits before the first '^'"
TRACK1_PLAIN = "track 1 without '^': a plain card reference must be 4-40 letters or digits"
TRACK1_PROPRIETARY = "track 1 format {code}: ID must be 4-19 letters or digits before the first '^'"
MISMATCH = (
    "track 1 / track 2 mismatch: the two tracks hold different card numbers "
    "(swipe again; if it repeats, the card is badly encoded)"
)
LUHN_FAILED = "Luhn check failed"
LUHN_NOT_NUMERIC = "Luhn check failed (ID is not all digits)"

_PAN = re.compile(r"[0-9]{1,19}")
_PROPRIETARY = re.compile(r"[A-Z0-9]{4,19}")
_PLAIN = re.compile(r"[A-Z0-9]{4,40}")
_TRACK2 = re.compile(r"[0-9=]*")


@dataclass(frozen=True)
class Track:
    number: int  # 1, 2 or 3; 0 for the non-standard 7-bit track 2 (`@`), never an ID
    sentinel: str
    data: str  # between the sentinels; track 1 upper-cased (caps-lock inverted swipes)
    failed: bool  # `E` (or nothing) between the sentinels


def decode_magstripe(text: str, options: DecodeOptions, today: date) -> Verdict:
    if text.startswith("@\n"):
        # A PDF417 licence scanned without an AIM prefix: never a card swipe, never an ID.
        return reject(LICENCE_WITHOUT_AIM)
    tracks = _split_tracks(text, options.lrc)
    if isinstance(tracks, Verdict):
        return tracks
    good = [track for track in tracks if not track.failed]
    if not good:
        return reject(ALL_FAILED)
    track1, track2, track3 = (next((t for t in good if t.number == n), None) for n in (1, 2, 3))

    # Licences first: a licence is never a loyalty ID, whatever its track 1 looks like.
    if track2 is not None and aamva.is_licence_iin(track2.data):
        return aamva.decode_track2(track2.data, today)
    if track1 is not None and "$" in _field(track1.data, 1):
        return reject(LICENCE_FRAGMENT)

    id2 = _track2_id(track2.data) if track2 is not None else None
    if isinstance(id2, Verdict):
        return id2
    id1 = _track1_id(track1.data, options.track1_formats) if track1 is not None else None
    if isinstance(id1, Verdict):
        return id1
    if id1 is not None and id2 is not None and id1 != id2:
        return reject(MISMATCH)
    if id2 is not None:
        loyalty_id, symbology = id2, "track2"
    elif id1 is not None:
        loyalty_id, symbology = id1, "track1"
    elif track3 is not None and _PLAIN.fullmatch(track3.data.upper()):
        loyalty_id, symbology = track3.data.upper(), "track3"
    else:
        return reject(ONLY_TRACK_3)
    if options.luhn and not luhn_valid(loyalty_id):
        return reject(LUHN_FAILED if loyalty_id.isdigit() else LUHN_NOT_NUMERIC)
    return loyalty(loyalty_id, "magstripe", symbology)


def _split_tracks(text: str, lrc: bool) -> list[Track] | Verdict:
    tracks: list[Track] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in BETWEEN_TRACKS:
            index += 1
            continue
        if char not in START_SENTINELS:
            if not is_printable(char):
                return reject(NON_PRINTABLE)
            return reject(AFTER_TRACK if text[index - 1 : index] == END_SENTINEL else BAD_FRAMING)
        end = text.find(END_SENTINEL, index + 1)
        if end < 0:
            return reject(NON_PRINTABLE if not is_printable(text[index:]) else PARTIAL)
        data = text[index + 1 : end]
        if any(c in BETWEEN_TRACKS or c in "%;" for c in data):
            return reject(PARTIAL)  # cut off: a terminator or a new track before its '?'
        if not is_printable(data):
            return reject(NON_PRINTABLE)
        failed = data.upper() in ("E", "")
        number = _track_number(char, tracks, "" if failed else data)
        if number == 1:
            data = data.upper()
        index = end + 1
        if lrc and not failed:
            if index >= len(text) or text[index] in BETWEEN_TRACKS:
                return reject(LRC_MISSING)
            check = text[index].upper() if number == 1 else text[index]
            coding = _lrc_coding(char, number)
            if coding is not None and not track_lrc_valid(coding, data, check):
                return reject(f"LRC check failed on track {number}")
            index += 1
        tracks.append(Track(number, char, data, failed))
        if len(tracks) > 3 or sum(1 for t in tracks if t.number == 3) > 1:
            return reject(TOO_MANY_TRACKS)
    return tracks


def _track_number(sentinel: str, before: list[Track], data: str) -> int:
    if sentinel == "@":
        return 0
    if sentinel == "%":
        # ID TECH: a second `%…?` in one swipe is track 3 (AAMVA 6-bit track 3).
        return 3 if any(t.number == 1 for t in before) else 1
    if sentinel == ";":
        # A second `;…?` is an ISO (numeric) track 3 whose sentinel the reader did not change;
        # one holding letters cannot be a 4-bit track 2: an alphanumeric track 3 (cards.md).
        if any(c.isascii() and c.isalpha() for c in data):
            return 3
        return 3 if any(t.number == 2 for t in before) else 2
    return 3


def _lrc_coding(sentinel: str, number: int) -> str | None:
    """How the LRC of a track is computed; None for 7-bit non-standard tracks (not checked)."""
    if sentinel in "%#!":
        return "6bit"
    if sentinel in ";+":
        return "4bit"
    return None


def _field(data: str, index: int) -> str:
    fields = data.split("^")
    return fields[index] if len(fields) > index else ""


def _track2_id(data: str) -> str | Verdict:
    """Track 2: the card number (up to 19 digits) before `=`."""
    if not _TRACK2.fullmatch(data):
        return reject(TRACK2_CHARS)
    pan = data.partition("=")[0]
    if not _PAN.fullmatch(pan):
        return reject(TRACK2_LENGTH)
    return pan


def _track1_id(data: str, allowed: tuple[str, ...]) -> str | Verdict:
    """Track 1: format B → card number before `^`; A (and configured others) → [A-Z0-9]{4,19};
    no `^` at all → the whole track is a plain reference (no format character), [A-Z0-9]{4,40}."""
    if "^" not in data:
        return data if _PLAIN.fullmatch(data) else reject(TRACK1_PLAIN)
    code, rest = data[:1], data[1:]
    formats = [str(f).upper() for f in allowed]
    if code not in formats:
        listed = ", ".join(formats) or "none"
        return reject(f"track 1 format code '{shown(code)}' not allowed (track1_formats: {listed})")
    head = rest.partition("^")[0]
    if code == "B":
        if not _PAN.fullmatch(head):
            return reject(TRACK1_B)
        if aamva.is_licence_iin(head):
            return reject(aamva.NO_LICENCE_DATA)
        return head
    if not _PROPRIETARY.fullmatch(head):
        return reject(TRACK1_PROPRIETARY.format(code=shown(code)))
    return head
