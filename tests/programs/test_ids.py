"""Which loyalty IDs a program takes: its phone rule, its card number rule (minimum length and
number ranges), both, or neither; and a card read that matches no program."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from app.programs import scan_data
from app.programs.ids import NO_PROGRAM_RANGE, CardRule, card_rule, takes, unmatched_read

PHONE = "5124671234"
CARDS = {"min_length": 8, "ranges": [{"from": "60000000", "to": "60999999"}]}
GIFT = {"min_length": 8, "ranges": [{"from": "61000000", "to": "61499999"}]}


def program(program_id: str = "p", **fields: Any) -> dict[str, Any]:
    return {"program_id": program_id, "kind": "points", **fields}


def test_card_rule_parses_min_length_and_ranges():
    assert card_rule(program()) is None
    assert card_rule(program(card={})) == CardRule(1, ())
    assert card_rule(program(card=CARDS)) == CardRule(8, (("60000000", "60999999"),))
    two = {"ranges": [{"from": "0100", "to": "0199"}, {"from": "600000", "to": "600999"}]}
    assert card_rule(program(card=two)) == CardRule(1, (("0100", "0199"), ("600000", "600999")))


@pytest.mark.parametrize(
    ("card", "words"),
    [
        ("8", "not an object"),
        ({"min_length": "8"}, "min_length is not an integer"),
        ({"min_length": True}, "min_length is not an integer"),
        ({"min_length": 0}, "min_length is not 1-40"),
        ({"min_length": 41}, "min_length is not 1-40"),
        ({"ranges": {"from": "1", "to": "2"}}, "ranges is not a list"),
        ({"ranges": [{"from": 60000000, "to": 60999999}]}, "from and to strings"),
        ({"ranges": [{"from": "60000000"}]}, "from and to strings"),
        ({"ranges": ["60000000-60999999"]}, "from and to strings"),
        ({"ranges": [{"from": "6000000", "to": "60999999"}]}, "digits of one length"),
        ({"ranges": [{"from": "6000000A", "to": "60999999"}]}, "digits of one length"),
        ({"ranges": [{"from": "60999999", "to": "60000000"}]}, "is above to"),
    ],
)
def test_malformed_card_rules(card, words):
    with pytest.raises(ValueError, match=words):
        card_rule(program("centegra", card=card))
    assert not takes(program(card=card), "60000001")  # a rule the box cannot read takes nothing


def test_minimum_length():
    rule = program(card={"min_length": 8})
    assert takes(rule, "12345678") and takes(rule, "ABCD1234EF")
    assert not takes(rule, "1234567") and not takes(rule, "ABC1234")


def test_number_ranges_are_inclusive_and_fix_the_length():
    rule = program(card=CARDS)
    for card in ("60000000", "60123456", "60999999"):
        assert takes(rule, card), card
    for card in ("59999999", "61000000", "600000001", "6012345", "6012345A", "ABCDEFGH"):
        assert not takes(rule, card), card
    assert takes(rule, " 60123456 ")  # spaces around a keyed number


def test_phone_card_both_or_neither():
    phone_only = program(loyalty_id="us_phone")
    card_only = program(card=CARDS)
    both = program(loyalty_id="us_phone", card=CARDS)
    neither = program()
    assert takes(phone_only, PHONE) and not takes(phone_only, "60123456")
    assert takes(card_only, "60123456") and not takes(card_only, PHONE)
    assert takes(both, PHONE) and takes(both, "60123456") and not takes(both, "61123456")
    assert takes(neither, "anything-at-all") and takes(neither, PHONE)
    for rule in (phone_only, card_only, both, neither):
        assert not takes(rule, None) and not takes(rule, "  ")


def test_a_read_matching_no_program_says_so():
    programs = [program("loyalty", card=CARDS), program("gift", card=GIFT)]
    assert unmatched_read(programs, "60123456") is None
    assert unmatched_read(programs, "61234567") is None
    assert unmatched_read(programs, "62000000") == NO_PROGRAM_RANGE
    assert unmatched_read(programs, "6000001234567894") == NO_PROGRAM_RANGE
    short = unmatched_read(programs, "601234")
    assert short is not None and short.startswith(NO_PROGRAM_RANGE)
    assert "shorter than the 8 characters" in short


def test_reads_are_not_judged_without_card_rules():
    # No program declares its card numbers: the host judges every ID, as before.
    assert unmatched_read([], "62000000") is None
    assert unmatched_read(None, "62000000") is None
    assert unmatched_read([program("scan-data", loyalty_id="us_phone")], "62000000") is None


def test_a_program_without_card_rules_takes_any_read():
    programs = [program("loyalty", card=CARDS), program("any")]
    assert unmatched_read(programs, "62000000") is None
    # a phone program takes a phone number scanned from a loyalty app's barcode
    programs = [program("loyalty", card=CARDS), program("scan-data", loyalty_id="us_phone")]
    assert unmatched_read(programs, PHONE) is None
    assert unmatched_read(programs, "62000000") == NO_PROGRAM_RANGE


# Scan Data: the card rule decides before anything else about the basket.

BASKET = [
    {
        "line_number": 1,
        "kind": "item",
        "status": "normal",
        "code": "028200003843",
        "quantity": "1",
        "unit_price": "9.49",
        "amount": "9.49",
    }
]
SCAN_DATA = {
    "program_id": "scan-data",
    "kind": "scan_data",
    "eligible": {"upcs": ["028200003843"]},
    "discount": {"method": "amount_off", "value": "0.50", "per": "unit"},
}


def evaluate(entered: str, **fields: Any) -> scan_data.Decision:
    return scan_data.evaluate(
        {**SCAN_DATA, **fields}, BASKET, entered, None, date(2026, 6, 15), 0, None
    )


def test_scan_data_takes_only_its_cards():
    assert evaluate("60123456", card=CARDS).rule == scan_data.GRANTED
    assert evaluate("61123456", card=CARDS).rule == scan_data.CARD_OUT_OF_RANGE
    assert evaluate("6012345", card=CARDS).rule == scan_data.CARD_OUT_OF_RANGE
    assert evaluate("61123456", card=CARDS).rewards == []
    # with a phone rule too: a phone-shaped ID is judged as a phone
    assert evaluate(PHONE, loyalty_id="us_phone", card=CARDS).rule == scan_data.GRANTED
    assert evaluate("5125550150", loyalty_id="us_phone", card=CARDS).rule == scan_data.INVALID_PHONE
    assert evaluate("61123456", loyalty_id="us_phone", card=CARDS).rule == (
        scan_data.CARD_OUT_OF_RANGE
    )
    assert evaluate("61123456", loyalty_id="us_phone").rule == scan_data.INVALID_PHONE


def test_scan_data_with_a_malformed_card_rule_grants_nothing():
    assert evaluate("60123456", card={"min_length": "8"}).rule == scan_data.INVALID_PROGRAM
