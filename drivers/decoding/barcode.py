"""Barcodes with an AIM symbology identifier (`]` + symbology + modifier, e.g. `]E0`, `]C1`)."""

from __future__ import annotations

import re
from datetime import date

from . import aamva
from .checks import gs1_valid
from .verdict import Verdict, is_printable, loyalty, reject, shown

GS = "\x1d"
GS1_FORMS = ("]C1", "]Q3", "]d2", "]e0")  # GS1-128, GS1 QR, GS1 DataMatrix, GS1 DataBar
ADD_ONS = ("]E1", "]E2", "]E3")
FREE_TEXT = "CQALz"  # Code 128, QR, Code 39, PDF417, Aztec
GSRN_AI = "8018"

# GS1 element strings of predefined length (AI's first two digits -> length with the AI): no
# GS separator follows them. Every other element string runs to the next GS or the end.
PREDEFINED_LENGTH = {
    "00": 20, "01": 16, "02": 16, "03": 16, "04": 18,
    "11": 8, "12": 8, "13": 8, "14": 8, "15": 8, "16": 8, "17": 8, "18": 8, "19": 8,
    "20": 4, "31": 10, "32": 10, "33": 10, "34": 10, "35": 10, "36": 10, "41": 16,
}  # fmt: skip

_FREE_ID = re.compile(r"[A-Za-z0-9-]{4,32}")

AIM_INCOMPLETE = "AIM symbology identifier incomplete"
GS1_MALFORMED = "GS1 barcode data malformed"
GSRN_FORMAT = "GSRN (AI 8018) must be 18 digits"
GSRN_CHECK = "GSRN (AI 8018) check digit wrong"
GSRN_TWICE = "GS1 barcode holds two different GSRNs (AI 8018)"


def decode_barcode(text: str, today: date) -> Verdict:
    aim, payload = text[:3], text[3:]
    if len(aim) < 3:
        return reject(AIM_INCOMPLETE)
    if not is_printable(aim):
        return reject("non-printable bytes in the AIM symbology identifier (noise)")
    symbology = aim[1]
    if aim == "]E0":
        return _ean(payload, aim, 13, "EAN-13/UPC-A")
    if aim == "]E4":
        return _ean(payload, aim, 8, "EAN-8")
    if aim in ADD_ONS:
        return reject(f"EAN/UPC with add-on ({aim}) not accepted: turn add-ons off")
    if symbology == "E":
        return reject(f"EAN/UPC variant {aim} not accepted")
    if aim in GS1_FORMS:
        return _gs1(payload, aim)
    if symbology == "L" and aamva.looks_like_pdf417_licence(payload):
        return aamva.decode_pdf417(payload, today)
    if symbology in FREE_TEXT:
        if _FREE_ID.fullmatch(payload):
            return loyalty(payload, "barcode", aim)
        if not is_printable(payload):
            return reject(f"barcode {aim}: non-printable bytes in the data")
        return reject(
            f"barcode {aim} is not a loyalty ID (need 4-32 letters, digits or '-', "
            f"got {len(payload)} characters)"
        )
    return reject(f"symbology {shown(aim)} not accepted")


def _ean(payload: str, aim: str, length: int, name: str) -> Verdict:
    if len(payload) != length or not payload.isascii() or not payload.isdigit():
        return reject(f"{name} ({aim}) needs {length} digits, got {len(payload)} characters")
    if not gs1_valid(payload):
        return reject(f"{name} ({aim}) check digit wrong")
    return loyalty(payload, "barcode", aim)


def _gs1(payload: str, aim: str) -> Verdict:
    """GS1 element strings: only AI 8018 (GSRN) gives an ID; other elements are passed over."""
    gsrn: str | None = None
    index = 0
    while index < len(payload):
        if payload[index] == GS:
            index += 1
            continue
        head = payload[index : index + 2]
        if len(head) < 2 or not head.isascii() or not head.isdigit():
            return reject(GS1_MALFORMED)
        if head in PREDEFINED_LENGTH:
            element = payload[index : index + PREDEFINED_LENGTH[head]]
            if len(element) != PREDEFINED_LENGTH[head] or GS in element:
                return reject(GS1_MALFORMED)
        else:
            end = payload.find(GS, index)
            element = payload[index : end if end >= 0 else len(payload)]
        if not is_printable(element):
            return reject(GS1_MALFORMED)
        index += len(element)
        if element.startswith(GSRN_AI):
            value = element[len(GSRN_AI) :]
            if len(value) != 18 or not value.isascii() or not value.isdigit():
                return reject(GSRN_FORMAT)
            if not gs1_valid(value):
                return reject(GSRN_CHECK)
            if gsrn is not None and gsrn != value:
                return reject(GSRN_TWICE)
            gsrn = value
    if gsrn is None:
        return reject(f"GS1 barcode ({aim}) without a GSRN (AI 8018): not a loyalty ID")
    return loyalty(gsrn, "barcode", aim)
