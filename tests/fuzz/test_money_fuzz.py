"""parse_decimal on any text: never raises, and whatever it returns is a plain, bounded amount.

The contract (issue 10): a POS or host amount has at most 12 digits before the point and 6 after,
no exponent, no NaN or Infinity; anything else reads as None. The bounds are being added to
app/money.py; until they land the bounded property fails (e.g. on "1E+99999").
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from app.money import parse_decimal
from tests.fuzz.corpus import AMOUNT_LIMIT, HOSTILE_NUMBERS, MAX_FRAC_DIGITS
from tests.fuzz.strategies import any_text, fuzz_settings, plain_decimals, timed

texts = st.one_of(st.none(), any_text, st.text(), st.text(max_size=5000))


@fuzz_settings(300)
@given(text=texts)
def test_parse_decimal_never_raises(text):
    value = timed(parse_decimal, text)
    assert value is None or isinstance(value, Decimal)


def assert_plain_and_bounded(text: str | None, value: Decimal | None) -> None:
    if value is None:
        return
    assert value.is_finite(), f"{text!r} -> {value!r}"
    assert value.copy_abs() < AMOUNT_LIMIT, f"{text!r} -> {value!r}: more than 12 integer digits"
    assert value.as_tuple().exponent >= -MAX_FRAC_DIGITS, f"{text!r} -> {value!r}: > 6 decimals"
    assert "e" not in text.lower(), f"{text!r} -> {value!r}: exponent accepted"
    # What the box formats from it stays short (Decimal('1e-999999999') formats to a GB).
    assert len(format(value, "f")) <= 21, f"{text!r} -> {value!r}"


@fuzz_settings(300)
@given(text=texts)
@example(text="1E+99999")
@example(text="1e-999999999")
@example(text="123456789012345678901234567890")
@example(text="1e2")
def test_parse_decimal_returns_only_bounded_plain_amounts(text):
    assert_plain_and_bounded(text, timed(parse_decimal, text))


def test_every_hostile_number_is_refused_or_bounded():
    outcomes = {text: parse_decimal(text) for text in HOSTILE_NUMBERS}
    unbounded = {}
    for text, value in outcomes.items():
        try:
            assert_plain_and_bounded(text, value)
        except AssertionError:
            unbounded[text[:40]] = repr(value)[:60]
    assert not unbounded, f"read but out of the amount contract: {unbounded}"


@fuzz_settings(200)
@given(text=plain_decimals())
@example(text=".18")
@example(text="1.4")
@example(text="-0")
@example(text="999999999999.999999")
def test_amounts_the_pos_writes_are_read_exactly(text):
    """The bounds must not refuse what a POS really writes ('.18', '1.4', '2', 12+6 digits)."""
    assert parse_decimal(text) == Decimal(text)
    assert parse_decimal(f"  {text} ") == Decimal(text)
