"""The host's answer, whatever JSON it is, turned into POS rewards: no exception, no unbounded
work, and every reward the POS gets is finite, non-negative and bounded by the basket."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from app.host.payload import basket_total
from app.host.translate import receipt_lines, translate_rewards
from app.pos import wire
from app.pos.model import RequestHeader, Response
from app.pos.xmlcodec import XmlError, parse_xml, write_response
from tests.fuzz.corpus import AMOUNT_LIMIT, HOST_RECEIPT_LINES, HOST_REWARDS, sample_basket
from tests.fuzz.strategies import (
    baskets,
    fuzz_settings,
    host_receipt_lines,
    host_reward,
    host_rewards,
    timed,
)

DIALECTS = st.sampled_from(["passport", "eps"])
CENTS = -2


def _ok_number(value: object, where: str, places: int) -> Decimal:
    assert isinstance(value, Decimal), f"{where}: {value!r}"
    assert value.is_finite(), f"{where}: {value!r}"
    assert value >= 0 and not value.is_signed(), f"{where}: {value!r} is negative"
    assert value < AMOUNT_LIMIT, f"{where}: {value!r} over the amount bound"
    assert value.as_tuple().exponent >= places, f"{where}: {value!r} has too many decimals"
    return value


def check_translation(rewards, txn, dialect) -> None:
    result = timed(translate_rewards, rewards, txn, dialect)
    total = basket_total(txn)
    lines = {line.line_number: line for line in txn.lines} if txn else {}
    for reward in result.rewards:
        where = f"reward {reward.reward_id[:30]!r} ({reward.method})"
        amount = _ok_number(result.amounts.get(reward.reward_id), f"{where} amount", CENTS)
        assert amount <= total, f"{where}: takes {amount} off a {total} basket"
        value = _ok_number(reward.value, f"{where} value", -6)
        if reward.method == "percentOff":
            assert value <= 100, f"{where}: {value} percent"
        elif reward.method == "newPrice":
            line = lines.get(reward.target_line)
            assert line is not None and line.unit_price is not None, where
            assert value <= line.unit_price, f"{where}: new price {value} over {line.unit_price}"
        elif reward.method == "amountOff":
            assert value <= total, f"{where}: {value} off a {total} basket"
        else:
            raise AssertionError(f"{where}: method the POS does not know")
        if dialect == "eps":
            assert reward.method == "amountOff", f"{where}: EPS honours only amountOff"
        assert len(reward.receipt_short) <= wire.RECEIPT_SHORT_MAX, where
        assert len(reward.receipt_long) <= wire.RECEIPT_LONG_MAX, where
    assert sum(result.amounts.values(), Decimal(0)) <= total
    # What the POS finally reads: the AddRewards as the box writes them, short and well-formed
    # (a receipt text with a control character or a lone surrogate must not reach the XML).
    response = Response(stem="GetRewards", header=RequestHeader(), add_rewards=result.rewards)
    assert_pos_can_read(response, dialect)


def assert_pos_can_read(response: Response, dialect: str) -> None:
    xml = timed(write_response, response, dialect)
    assert len(xml) < 2000 + 1000 * (len(response.add_rewards) + len(response.receipt_lines))
    try:
        parse_xml(xml)
    except XmlError as exc:
        raise AssertionError(f"the POS cannot read the answer: {exc}\n{xml[:600]!r}") from None


@fuzz_settings(200)
@given(rewards=host_rewards, txn=baskets(), dialect=DIALECTS)
@example(rewards=HOST_REWARDS, txn=sample_basket(), dialect="passport")
@example(rewards=HOST_REWARDS, txn=sample_basket(), dialect="eps")
def test_any_host_rewards_translate_without_error(rewards, txn, dialect):
    check_translation(rewards, txn, dialect)


# Each field of one otherwise valid reward replaced by a hostile value, against the simulator's
# real basket (item line 1, prepaid fuel line 2): the cases the recursive strategy hits rarely.
@fuzz_settings(300)
@given(
    base=st.sampled_from(HOST_REWARDS),
    hostile=host_reward(),
    dialect=DIALECTS,
)
@example(base=HOST_REWARDS[0], hostile={"value": "1e30"}, dialect="passport")
@example(base=HOST_REWARDS[0], hostile={"target_line": float("inf")}, dialect="passport")
@example(base=HOST_REWARDS[2], hostile={"limit_quantity": -1}, dialect="passport")
@example(base=HOST_REWARDS[0], hostile={"value": "-0"}, dialect="passport")
@example(base=HOST_REWARDS[1], hostile={"value": "1e-999999999"}, dialect="passport")
@example(base=HOST_REWARDS[0], hostile={"target_line": "1\x1c"}, dialect="passport")
@example(base=HOST_REWARDS[4], hostile={"limit_quantity": "2\x1f"}, dialect="eps")
@example(base=HOST_REWARDS[0], hostile={"receipt_short": "\x16"}, dialect="passport")
@example(base=HOST_REWARDS[0], hostile={"receipt_long": "\ud800"}, dialect="eps")
def test_one_hostile_field_in_a_real_reward(base, hostile, dialect):
    reward = dict(base)
    if isinstance(hostile, dict):
        reward.update(hostile)
    check_translation([reward], sample_basket(), dialect)


@fuzz_settings(150)
@given(lines=host_receipt_lines)
@example(lines=HOST_RECEIPT_LINES)
@example(lines=["You saved \x01 today"])
@example(lines=["\ud800"])
def test_any_receipt_lines_give_short_printable_lines(lines):
    printed = timed(receipt_lines, lines)
    assert isinstance(printed, list)
    assert len(printed) <= (len(lines) if isinstance(lines, list) else 0)
    for line in printed:
        assert isinstance(line, str) and 0 < len(line) <= wire.RECEIPT_LINE_MAX
    response = Response(stem="FinalizeRewards", header=RequestHeader(), receipt_lines=printed)
    assert_pos_can_read(response, "passport")
