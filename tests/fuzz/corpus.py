"""Seeds and hostile values for the fuzzers: real POS messages, host answers, bad numbers.

Shared by the property tests in this folder and the long-run fuzzers in bench/ (no Hypothesis
here). The seeds are what a real POS sends (the field capture in shared/) and what the simulator
writes in both dialects; the hostile values are the ones that break naive decimal, XML and JSON
handling.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from functools import cache
from pathlib import Path

from app.pos.framing import encode_eps, encode_passport
from app.pos.xmlcodec import write_request
from simulators import pos as sim

SHARED = Path(os.environ.get("CONNECTBOX_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CAPTURE = SHARED / "field-captures" / "passport-12.23.jsonl"

# The POS amount contract (issue 10): plain decimals, at most 12 digits before the point and 6
# after, no exponent. Anything a parser returns must be inside it.
MAX_INT_DIGITS = 12
MAX_FRAC_DIGITS = 6
AMOUNT_LIMIT = Decimal(10) ** MAX_INT_DIGITS

# Numbers that break naive decimal handling: exponents that are cheap to parse but a billion
# digits to format, more digits than the context's precision, the non-finite forms, signed zero,
# other scripts' digits, separators, and the plain-but-too-long forms.
HOSTILE_NUMBERS = [
    "1E+99999",
    "1e999999999",
    "-1e999999999",
    "1e-999999999",
    "1E-99999",
    "9e999999",
    "123456789012345678901234567890",
    "123456789012345678901234567890.123456789",
    "0.000000000000000000000000000001",
    "1000000000000",
    "999999999999.999999",
    "999999999999.9999999",
    "1.0000000",
    "NaN",
    "-NaN",
    "sNaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "-inf",
    "-0",
    "+0",
    "-0.00",
    "-.0",
    "0e0",
    "-0E-5",
    "1e2",
    "1E+2",
    "0x10",
    "1_000",
    "1,50",
    "١٢٣",
    "１２",
    "\u00a012",
    "12\u2009",
    "--1",
    "+-1",
    ".",
    "-",
    "e",
    "1e",
    "1.2.3",
    "",
    "   ",
    "9" * 4301,
    "0" * 500 + "1",
    "1" * 64,
]

# Encodings an XML declaration may name: unknown ones, non-text codecs, multi-byte ones that do
# not match the UTF-8 bytes, and harmless aliases.
XML_ENCODINGS = [
    "UTF-8",
    "utf8",
    "x-unknown",
    "utf-16",
    "UTF-32",
    "utf-7",
    "latin-1",
    "ISO-8859-1",
    "us-ascii",
    "cp037",
    "rot13",
    "hex",
    "base64",
    "zlib",
    "idna",
    "punycode",
    "utf-8-sig",
    "mbcs",
    "",
    "\u00e9",
    "x" * 300,
]


def _capture_lines() -> list[dict]:
    if not CAPTURE.is_file():
        return []
    return [json.loads(line) for line in CAPTURE.read_text().splitlines() if line.strip()]


@cache
def captured_requests() -> tuple[bytes, ...]:
    """Every request the real Passport POS sent in the field capture, as bytes."""
    return tuple(
        line["xml"].encode("utf-8") for line in _capture_lines() if line["direction"] == "pos->host"
    )


def _simulated() -> list[tuple[str, object]]:
    counter = sim.SequenceCounter(start=1, first_transaction=100)
    applied = {"SD-1": Decimal("1.00")}
    lines = [
        sim.item_line(1, "028200003843", 2, "9.49", description="MARLBORO GOLD BOX"),
        sim.fuel_line(2, "001", "3", "10.000", "3.459", prepay=True),
        sim.item_line(3, "012300000147", 1, ".99", status="void"),
        sim.tender_line(4, "cash", "60.00", applied=applied),
    ]
    txn = sim.transaction("1", counter.new_transaction(), lines, business_date="2026-11-23")
    head = sim.header(counter.next("01", txn.pos_transaction_id), "CB-1")
    return [
        ("online", sim.online_status(counter.next("00"))),
        ("begin", sim.begin_customer(counter.next())),
        ("rewards", sim.get_rewards(head, txn, "5125550123")),
        ("finalize", sim.finalize(head, txn, "5125550123", final_total="52.57", points_redeemed=0)),
        ("cancel", sim.cancel(head)),
        ("period", sim.end_period(counter.next("99"), "2026-11-23", "2026-11-24")),
    ]


@cache
def simulated_requests() -> tuple[bytes, ...]:
    """The simulator's requests (a sale with item, fuel, void and tender lines) in both dialects."""
    return tuple(
        write_request(request, dialect)
        for dialect in ("passport", "eps")
        for _, request in _simulated()
    )


@cache
def request_seeds() -> tuple[bytes, ...]:
    """Distinct real and simulated requests: the starting points for mutation."""
    return tuple(dict.fromkeys(captured_requests() + simulated_requests()))


def frame_seeds() -> list[bytes]:
    """Seed requests framed every way a POS frames them (both Passport CRC forms, EPS)."""
    frames = []
    for payload in request_seeds()[:12] + simulated_requests():
        frames.append(encode_passport(payload))
        frames.append(encode_passport(payload, complemented=True))
        frames.append(encode_eps(payload))
    frames.append(encode_passport(b"", action=2))
    return frames


_TEXT_NODE = re.compile(rb">([^<]+)<")


def text_spans(payload: bytes) -> list[tuple[int, int]]:
    """(start, end) of every non-empty text node: where a mutator puts hostile values."""
    return [match.span(1) for match in _TEXT_NODE.finditer(payload)]


# Host answers as /v1/rewards gives them (see host-api.md), plus the shapes translation must
# survive: every method, ticket-level rewards, limits, long receipt texts.
HOST_REWARDS = [
    {
        "reward_id": "SD-1",
        "target_line": 1,
        "method": "amount_off",
        "value": "1.00",
        "limit_quantity": 2,
        "receipt_short": "LOYALTY",
        "receipt_long": "TOBACCO LOYALTY DISCOUNT",
    },
    {"reward_id": "P-1", "target_line": 0, "method": "percent_off", "value": "10"},
    {"reward_id": "N-1", "target_line": 1, "method": "new_price", "value": "8.49"},
    {"reward_id": "F-1", "target_line": 2, "method": "per_unit_off", "value": "0.10"},
    {
        "reward_id": "L-1",
        "target_line": 2,
        "method": "new_price",
        "value": "3.00",
        "limit_quantity": 5,
        "receipt_short": "FUEL REWARD 10C",
        "receipt_long": "FUEL REWARD 10 CENTS PER GALLON ON UP TO 5",
    },
]
HOST_RECEIPT_LINES = ["You saved $1.00 today", "x" * 100, "", None, 5]


def sample_basket():
    """The simulator's sale (item, prepaid fuel, a void line, a tender) as TransactionData."""
    return _simulated()[2][1].transaction
