"""Card references as loyalty card makers encode them (shared/cards.md), and the programs' card
number rules (app/programs/ids.py), over generated input."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from app.programs.ids import CardRule
from drivers.decoding import DecodeOptions, decode
from tests.fuzz.strategies import fuzz_settings, timed

TODAY = date(2026, 6, 15)
REFERENCES = st.from_regex(r"[A-Z0-9]{4,40}", fullmatch=True)
NUMBERS = st.from_regex(r"[0-9]{4,19}", fullmatch=True).filter(
    lambda n: not n.startswith(("636", "6044"))  # licence IINs are never loyalty IDs
)
MAGSTRIPE_TEXT = st.text(alphabet="%;+#?E^=$ABZaz0123456789/ \r\n", max_size=60)


def _decode(frame: str):
    return timed(decode, frame.encode("latin-1"), DecodeOptions(), TODAY)


@fuzz_settings(200)
@given(REFERENCES, st.sampled_from(["%", "+"]), st.booleans())
def test_a_plain_reference_is_the_whole_track(reference, sentinel, caps_lock):
    verdict = _decode(f"{sentinel}{reference.lower() if caps_lock else reference}?\r")
    assert verdict.result == "id" and verdict.loyalty_id == reference, verdict


@fuzz_settings(200)
@given(NUMBERS, NUMBERS, st.sampled_from(["", "\r"]), st.booleans())
def test_a_numeric_reference_on_tracks_1_and_2_must_agree(one, two, gap, same):
    two = one if same else two
    verdict = _decode(f"%{one}?{gap};{two}?\r")
    if one == two:
        assert (verdict.result, verdict.loyalty_id, verdict.symbology) == ("id", one, "track2")
    else:
        assert verdict.result == "reject" and "mismatch" in str(verdict.reason), verdict
        assert one not in str(verdict.reason) and two not in str(verdict.reason)


@fuzz_settings(300)
@given(MAGSTRIPE_TEXT)
def test_a_magstripe_id_is_always_a_whole_reference(text):
    """Whatever the tracks, an ID is 1-40 upper-case letters or digits, never a fragment."""
    verdict = _decode("%" + text)
    assert verdict.result in ("id", "dl", "reject", "ignore")
    if verdict.result == "id":
        loyalty_id = str(verdict.loyalty_id)
        assert 1 <= len(loyalty_id) <= 40 and loyalty_id.isalnum() and loyalty_id.isascii()
        assert loyalty_id == loyalty_id.upper()
        assert verdict.symbology in ("track1", "track2", "track3")


@fuzz_settings(300)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(*[st.from_regex(f"[0-9]{{{n}}}", fullmatch=True)] * 3)
    ),
    st.from_regex(r"[0-9]{1,14}", fullmatch=True),
    st.integers(1, 14),
)
def test_card_rule_ranges_compare_as_numbers(bounds, other_length, min_length):
    low, high, card = bounds
    low, high = min(low, high), max(low, high)
    rule = CardRule(min_length, ((low, high),))
    expected = len(card) >= min_length and int(low) <= int(card) <= int(high)
    assert rule.takes(card) == expected
    # a number of another length is never in the range, whatever its value
    if len(other_length) != len(low):
        assert not rule.takes(other_length)
