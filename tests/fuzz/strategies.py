"""Hypothesis strategies and settings for the property tests in tests/fuzz/.

Everyday runs are derandomized and keep no example database, so CI sees the same examples on
every run and never flakes, and they do not shrink a failing example (that can take longer than
the whole folder; the known bugs have minimal @example cases). Set CONNECTBOX_FUZZ_EXAMPLES=<n>
to explore with fresh random examples, n per test, shrinking what fails (bench/fuzz.py is the
long run).
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from app.pos import wire
from app.pos.model import MESSAGE_STEMS, Line, TransactionData
from tests.fuzz.corpus import (
    HOSTILE_NUMBERS,
    MAX_FRAC_DIGITS,
    MAX_INT_DIGITS,
    XML_ENCODINGS,
    request_seeds,
    text_spans,
)

PER_CALL_LIMIT_S = 1.0  # generous on a loaded 2-core machine; catches unbounded work
_EXPLORE = int(os.environ.get("CONNECTBOX_FUZZ_EXAMPLES", "0"))


def fuzz_settings(max_examples: int) -> settings:
    """Settings for one property: deterministic in CI, wider with CONNECTBOX_FUZZ_EXAMPLES."""
    return settings(
        max_examples=_EXPLORE or max_examples,
        derandomize=not _EXPLORE,
        phases=list(Phase) if _EXPLORE else [p for p in Phase if p is not Phase.shrink],
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=False,
    )


def timed(call, *args):
    """Run call(*args); fail when that one call takes longer than PER_CALL_LIMIT_S."""
    started = time.perf_counter()
    try:
        return call(*args)
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < PER_CALL_LIMIT_S, f"{call.__name__} took {elapsed:.2f} s on one input"


# ---- numbers ----------------------------------------------------------------------------------


@st.composite
def plain_decimals(draw, signed: bool = True) -> str:
    """Decimal text inside the POS contract: <= 12 digits before the point, <= 6 after."""
    whole = draw(st.integers(0, 10**MAX_INT_DIGITS - 1))
    places = draw(st.integers(0, MAX_FRAC_DIGITS))
    fraction = draw(st.integers(0, 10**places - 1)) if places else 0
    sign = draw(st.sampled_from(["", "-", "+"])) if signed else ""
    text = f"{sign}{whole}" + (f".{fraction:0{places}d}" if places else "")
    if draw(st.booleans()) and text.lstrip("+-").startswith("0."):
        text = text.replace("0.", ".", 1)  # the POS writes ".18"
    return text


def bounded_amounts() -> st.SearchStrategy[Decimal]:
    """Non-negative amounts a POS line can carry (what the XML reader may hand on)."""
    return plain_decimals(signed=False).map(Decimal)


hostile_numbers = st.sampled_from(HOSTILE_NUMBERS)

number_texts = st.one_of(
    hostile_numbers,
    plain_decimals(),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers().map(str),
    st.from_regex(r"[ +-]?[0-9]{0,40}(\.[0-9]{0,40})?([eE][+-]?[0-9]{1,12})?[ ]?", fullmatch=True),
)

any_text = st.one_of(number_texts, st.text(max_size=80))


# ---- XML shaped like the real messages, with hostile values -----------------------------------

_xml_chars = st.characters(min_codepoint=0x20, exclude_categories=("Cs",))
short_text = st.text(_xml_chars, max_size=40)


@st.composite
def long_texts(draw) -> str:
    unit = draw(st.sampled_from(["x", "9", "0", " ", "&amp;", "é", "\U0001f600", "1e9"]))
    return unit * draw(st.integers(1000, 100_000))


_short_values = st.one_of(
    hostile_numbers,
    plain_decimals(),
    number_texts,
    short_text,
    st.sampled_from(["yes", "no", "YES", "true", "0", "1", "normal", "void", "cancel", ""]),
)


@st.composite
def xml_values(draw) -> str:
    """A value for any element or attribute; a long one now and then (payloads stay ~1 MiB)."""
    return draw(long_texts() if draw(st.integers(0, 24)) == 0 else _short_values)


def _name_variants(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), f"ns:{name}"])


@st.composite
def element(draw, name: str, content=None) -> str:
    """<name>content</name>, or the value in an attribute, in the spellings the reader accepts."""
    tag = draw(_name_variants(name))
    if content is None:
        value = draw(xml_values())
        if draw(st.integers(0, 4)) == 0:
            attr = draw(st.sampled_from(["value", "format", "x"]))
            return f"<{tag} {attr}={quoteattr(value)}/>"
        return f"<{tag}>{escape(value)}</{tag}>"
    attrs = draw(st.sampled_from(["", ' status="normal"', ' value="yes"', ' discountable="no"']))
    return f"<{tag}{attrs}>{''.join(content)}</{tag}>"


@st.composite
def some(draw, names, most: int | None = None) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(names), max_size=most or len(names)))
    return [draw(element(name)) for name in chosen]


@st.composite
def deep_nesting(draw) -> str:
    depth = draw(st.integers(1, 50_000))
    tag = draw(st.sampled_from(["a", "TransactionData", "Promotion", "ns:y"]))
    return f"<{tag}>" * depth + draw(short_text.map(escape)) + f"</{tag}>" * depth


@st.composite
def transaction_line(draw) -> str:
    kind = draw(st.sampled_from([*wire.LINE_KINDS, "Mystery"]))
    fields = draw(some([*wire.LINE_FIELDS.values(), wire.CODE_FORMAT, "ItemTax"]))
    if draw(st.booleans()):
        code = [draw(element(wire.CODE_FORMAT)), draw(element(wire.CODE))]
        fields.append(draw(element(wire.ITEM_CODE, code)))
    for _ in range(draw(st.integers(0, 3))):
        promo = draw(some([wire.REWARD_ID, wire.PROMOTION_AMOUNT, "PromotionReason"]))
        fields.append(draw(element(wire.PROMOTION, promo)))
    if draw(st.booleans()):
        fields.append(draw(element(wire.REWARD_ID)))
    body = draw(element(kind, draw(st.permutations(fields))))
    number = draw(element(wire.LINE_NUMBER))
    return draw(element(wire.LINE, [number, body]))


@st.composite
def transaction_data(draw) -> str:
    head_fields = draw(
        some(
            [
                *wire.TRANSACTION_HEADER_FIELDS.values(),
                wire.TRAINING_FLAG,
                wire.OUTSIDE_SALES_FLAG,
                "EventStartDate",
            ]
        )
    )
    if draw(st.booleans()):
        head_fields.append(draw(element(wire.BUSINESS_PERIOD, [draw(element(wire.BUSINESS_DATE))])))
    lines = draw(st.lists(transaction_line(), max_size=6))
    if lines and draw(st.integers(0, 9)) == 0:  # many copies of one line: repetition attack
        copies = min(draw(st.integers(100, 3000)), 1_100_000 // len(lines[0]))
        lines = lines[:1] * copies
    group = draw(element(wire.DETAIL_GROUP, lines))
    parts = [draw(element(wire.TRANSACTION_HEADER, head_fields)), group]
    parts += draw(some([wire.POINTS_REDEEMED, wire.FINAL_TOTAL]))
    return draw(element(wire.TRANSACTION_DATA, parts))


@st.composite
def request_xml(draw) -> bytes:
    """A request shaped like the real ones, with hostile values wherever a value goes."""
    stem = draw(st.sampled_from([*MESSAGE_STEMS, "Frobnicate", ""]))
    root = draw(_name_variants(stem + wire.REQUEST_SUFFIX))
    header_fields = draw(some([*wire.HEADER_FIELDS.values(), wire.OFFLINE_FLAG]))
    parts = [draw(element(wire.HEADER, header_fields))]
    if draw(st.booleans()):
        method = draw(st.sampled_from(["", ' entryMethod="manual"', ' method="scan"']))
        parts.append(f"<{wire.LOYALTY_ID}{method}>{escape(draw(xml_values()))}</{wire.LOYALTY_ID}>")
    if draw(st.booleans()):
        parts.append(draw(transaction_data()))
    top_level = [
        wire.REGISTER_ID,
        wire.OUTSIDE_SALES_FLAG,
        wire.POINTS_REDEEMED,
        wire.FINAL_TOTAL,
        "Surprise",
    ]
    parts += draw(some(top_level))
    for period in draw(st.lists(st.sampled_from(wire.END_PERIODS), max_size=2)):
        date = draw(element(wire.BUSINESS_DATE))
        parts.append(draw(element(period, [draw(element(wire.BUSINESS_PERIOD, [date]))])))
    if draw(st.integers(0, 5)) == 0:
        parts.append(draw(deep_nesting()))
    if draw(st.integers(0, 9)) == 0:  # many unknown top-level elements
        parts += [f"<Unknown{n}>x</Unknown{n}>" for n in range(draw(st.integers(50, 2000)))]
    # The ns: prefix of some names is declared, but not always: an unbound prefix is malformed.
    ns = draw(
        st.sampled_from(
            [' xmlns:ns="urn:x"', ' xmlns="urn:y" xmlns:ns="urn:x"', ' xmlns:ns="urn:x" a="b"', ""]
        )
    )
    body = f"<{root}{ns}>{''.join(draw(st.permutations(parts)))}</{root}>"
    prolog = draw(
        st.one_of(
            st.just(""),
            st.just('<?xml version="1.0"?>'),
            st.sampled_from(XML_ENCODINGS).map(lambda e: f'<?xml version="1.0" encoding="{e}"?>'),
        )
    )
    return (prolog + body).encode("utf-8")


# ---- byte-level mutation of the real messages --------------------------------------------------


@st.composite
def mutated_request(draw) -> bytes:
    """A captured or simulated request with a few byte-level and value-level mutations."""
    data = bytearray(draw(st.sampled_from(request_seeds())))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["value"] * 6 + ["flip", "cut", "dup", "insert", "truncate"]))
        size = len(data)
        if op == "value" and (spans := text_spans(bytes(data))):
            start, end = draw(st.sampled_from(spans))
            value = draw(st.one_of(hostile_numbers, number_texts, short_text, long_texts()))
            data[start:end] = escape(value).encode("utf-8")
        elif op == "flip" and size:
            at = draw(st.integers(0, size - 1))
            data[at] = draw(st.integers(0, 255))
        elif op == "cut" and size:
            at = draw(st.integers(0, size - 1))
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "dup" and size:
            at = draw(st.integers(0, size - 1))
            chunk = data[at : at + draw(st.integers(1, 256))]
            data[at:at] = chunk * draw(st.integers(1, 50))
        elif op == "insert":
            at = draw(st.integers(0, size))
            data[at:at] = draw(st.binary(max_size=16))
        elif op == "truncate" and size:
            del data[draw(st.integers(0, size - 1)) :]
    return bytes(data)


# ---- host answers: any JSON-like value ---------------------------------------------------------

# What json.loads can hand over: it accepts NaN and Infinity, and ints of up to 4300 digits.
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**30, -(10**30), 10**300, 2**63, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=60),
    hostile_numbers,
    plain_decimals(),
)

json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=12), children, max_size=6),
    ),
    max_leaves=30,
)

_methods = st.sampled_from(["amount_off", "percent_off", "new_price", "per_unit_off", "x", ""])
_line_numbers = st.one_of(
    st.integers(-2, 8),
    st.sampled_from(["1", "0", "1.5", " 2 ", "1e3", "", True, False, 1.0, 2.7, "1\x1c", "\u0661"]),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, 10**40]),
)
_limits = st.one_of(
    st.none(),
    st.integers(-5, 20),
    st.sampled_from([0, -1, 10**40, 1.5, "2", "2\x1f", "x", float("inf"), float("nan"), -1e300]),
)
_values = st.one_of(plain_decimals(), hostile_numbers, json_leaves)


@st.composite
def host_reward(draw) -> object:
    """One entry of /v1/rewards' "rewards": mostly reward-shaped, some anything at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    reward = {
        "reward_id": draw(st.one_of(st.sampled_from(["R1", "R2", "R3"]), json_leaves)),
        "target_line": draw(_line_numbers),
        "method": draw(st.one_of(_methods, json_leaves)),
        "value": draw(_values),
        "limit_quantity": draw(_limits),
        "receipt_short": draw(st.one_of(short_text, json_values)),
        "receipt_long": draw(st.one_of(long_texts(), short_text, json_values)),
    }
    keys = draw(st.lists(st.sampled_from(sorted(reward)), unique=True, min_size=3))
    return {key: reward[key] for key in keys}


host_rewards = st.one_of(st.lists(host_reward(), max_size=8), json_values)
host_receipt_lines = st.one_of(
    st.lists(st.one_of(json_leaves, long_texts(), json_values), max_size=10), json_values
)


@st.composite
def baskets(draw) -> TransactionData | None:
    """A basket the XML reader could have produced: bounded, non-negative POS amounts."""
    if draw(st.integers(0, 9)) == 0:
        return None
    maybe_amount = st.one_of(st.none(), bounded_amounts())
    lines = []
    for number in draw(st.lists(st.integers(0, 6), max_size=7)):
        lines.append(
            Line(
                line_number=number,
                kind=draw(st.sampled_from(["item", "merchandise", "fuel", "tender", "other"])),
                status=draw(st.sampled_from(["normal", "normal", "void"])),
                quantity=draw(maybe_amount),
                unit_price=draw(maybe_amount),
                amount=draw(maybe_amount),
            )
        )
    return TransactionData(lines=lines)
