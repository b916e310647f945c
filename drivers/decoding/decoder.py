"""Frame → verdict: the decoding policy of `shared/cards.md` ("Frame → verdict")."""

from __future__ import annotations

import logging
from datetime import date

from .barcode import decode_barcode
from .magstripe import NON_PRINTABLE, START_SENTINELS, decode_magstripe
from .verdict import DecodeOptions, Verdict, ignore, is_printable, loyalty, reject

log = logging.getLogger(__name__)

STX, ETX = b"\x02", b"\x03"
TERMINATORS = b"\r\n\t"
NO_AIM = "no card sentinel and no AIM symbology identifier (unrecognised frame)"
BLANK = "blank text (no AIM symbology identifier)"
DEFAULT_OPTIONS = DecodeOptions()


def decode(
    frame: bytes, options: DecodeOptions = DEFAULT_OPTIONS, today: date | None = None
) -> Verdict:
    """Exactly one verdict for one frame; never raises."""
    try:
        verdict = _decode(bytes(frame), options or DecodeOptions(), today or date.today())
    except Exception as exc:  # a reader must never take the service down
        # The exception's text could quote the frame: log its type only.
        log.warning("card decoder failed on a frame (%s)", type(exc).__name__)
        verdict = reject(f"decoder error ({type(exc).__name__})")
    log.debug("frame decoded: %s", verdict.describe())
    return verdict


def _decode(frame: bytes, options: DecodeOptions, today: date) -> Verdict:
    data = frame.strip(TERMINATORS)
    if data.startswith(STX):
        data = data[1:]
    if data.endswith(ETX):
        data = data[:-1]
    data = data.strip(TERMINATORS)
    if not data:
        return ignore()
    text = data.decode("latin-1")  # one character per byte, never fails
    first = text[0]
    if first == "]":
        return decode_barcode(text, today)
    if first in START_SENTINELS:
        return decode_magstripe(text, options, today)
    if not is_printable(text):
        return reject(NON_PRINTABLE)
    if options.require_aim:
        return reject(NO_AIM)
    loyalty_id = text.strip()
    if not loyalty_id:
        return reject(BLANK)
    return loyalty(loyalty_id, "barcode", "none")
