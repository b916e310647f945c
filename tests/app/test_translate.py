from decimal import Decimal

from app.host.translate import receipt_lines, translate_rewards
from app.pos.model import Line, TransactionData


def _basket() -> TransactionData:
    return TransactionData(
        lines=[
            Line(
                1, "item", quantity=Decimal(2), unit_price=Decimal("9.49"), amount=Decimal("18.98")
            ),
            Line(
                2,
                "fuel",
                quantity=Decimal("10.000"),
                unit_price=Decimal("3.459"),
                amount=Decimal("34.59"),
            ),
            Line(3, "item", status="void", quantity=Decimal(1), amount=Decimal("5.00")),
            Line(4, "tender", tender_amount=Decimal("60")),
        ]
    )


def _reward(**kw):
    base = {
        "reward_id": "R",
        "target_line": 1,
        "method": "amount_off",
        "value": "1.00",
        "receipt_short": "LOYALTY DISCOUNT",
        "receipt_long": "TOBACCO LOYALTY DISCOUNT 2026",
    }
    return base | kw


def test_passport_keeps_methods_and_trims_texts():
    out = translate_rewards(
        [
            _reward(),
            _reward(reward_id="P", method="percent_off", value="10"),
            _reward(reward_id="N", method="new_price", value="8.49", limit_quantity=1),
            _reward(reward_id="G", target_line=2, method="per_unit_off", value="0.10"),
        ],
        _basket(),
        "passport",
    )
    assert [(r.reward_id, r.method, r.value) for r in out.rewards] == [
        ("R", "amountOff", Decimal("1.00")),
        ("P", "percentOff", Decimal("10")),
        ("N", "newPrice", Decimal("8.49")),
        ("G", "newPrice", Decimal("3.359")),
    ]
    assert out.amounts == {
        "R": Decimal("1.00"),
        "P": Decimal("1.90"),
        "N": Decimal("1.00"),
        "G": Decimal("1.00"),
    }
    assert out.rewards[0].receipt_short == "LOYALTY" and len(out.rewards[0].receipt_long) == 24


def test_eps_gets_amount_off_only():
    out = translate_rewards(
        [
            _reward(method="percent_off", value="10"),
            _reward(reward_id="G", target_line=2, method="per_unit_off", value="0.10"),
        ],
        _basket(),
        "eps",
    )
    assert [(r.method, r.value) for r in out.rewards] == [
        ("amountOff", Decimal("1.90")),
        ("amountOff", Decimal("1.00")),
    ]


def test_rewards_that_would_go_negative_are_dropped():
    out = translate_rewards(
        [
            _reward(value="18.00"),
            _reward(reward_id="R2", value="1.00"),
            _reward(reward_id="T", target_line=0, value="100.00"),
            _reward(reward_id="V", target_line=3),
            _reward(reward_id="X", method="bogus"),
            _reward(reward_id="U", value="-1"),
        ],
        _basket(),
        "passport",
    )
    assert [r.reward_id for r in out.rewards] == ["R"]
    assert len(out.dropped) == 5
    assert any("line 1 negative" in d["reason"] for d in out.dropped)
    assert any("the ticket negative" in d["reason"] for d in out.dropped)


def test_receipt_lines_cut_to_40():
    assert receipt_lines(["x" * 50, "", None, "ok"]) == ["x" * 40, "ok"]
    assert receipt_lines("not a list") == []


def _prepay(amount="40.00", price="3.459", qty=None) -> TransactionData:
    """A prepay at pump 3 (pos-loyalty-interface.md, "Fuel rewards"): the grade's price, the
    prepaid amount, no quantity yet."""
    return TransactionData(
        fuel_position_id="3",
        outside_sale=True,
        lines=[
            Line(
                1,
                "fuel",
                grade="001",
                fuel_position="3",
                prepay=True,
                unit_price=Decimal(price),
                amount=Decimal(amount),
                quantity=Decimal(qty) if qty else None,
            )
        ],
    )


def _cents_per_gallon(**kw):
    return _reward(reward_id="FUEL10", method="per_unit_off", value="0.10", **kw)


def test_passport_gets_a_prepay_per_gallon_reward_as_a_roll_back_before_fueling():
    out = translate_rewards([_cents_per_gallon(limit_quantity=20)], _prepay(), "passport")
    [reward] = out.rewards
    assert (reward.method, reward.value, reward.limit_quantity) == (
        "newPrice",
        Decimal("3.359"),
        20,
    )
    # What it can take off at most: $40 buys 11.56 gal at full price, 10 cents each.
    assert out.amounts["FUEL10"] == Decimal("1.16")
    assert out.dropped == []


def test_a_roll_back_keeps_fuels_tenths_of_a_cent_on_the_wire():
    from app.pos.model import RequestHeader, Response, Reward
    from app.pos.xmlcodec import read_response, write_response

    roll_back = Reward("FUEL10", 1, "newPrice", Decimal("3.359"), 20, "FUEL", "10C OFF PER GAL")
    response = Response("GetRewards", RequestHeader(pos_sequence_id="1"), add_rewards=[roll_back])
    [read] = read_response(write_response(response, "passport")).add_rewards
    assert read.value == Decimal("3.3590") and read.limit_quantity == 20


def test_eps_cannot_carry_a_per_gallon_reward_before_fueling_and_says_why():
    out = translate_rewards([_cents_per_gallon(limit_quantity=20)], _prepay(), "eps")
    assert out.rewards == []
    [dropped] = out.dropped
    assert dropped["reward_id"] == "FUEL10" and "EPS carries only amountOff" in dropped["reason"]


def test_eps_gets_a_per_gallon_reward_as_an_amount_once_the_quantity_is_known():
    fueled = _prepay(amount="34.59", qty="10.000")
    out = translate_rewards([_cents_per_gallon(limit_quantity=8)], fueled, "eps")
    [reward] = out.rewards
    assert (reward.method, reward.value) == ("amountOff", Decimal("0.80"))  # 8 gal x 10c


def test_a_fuel_line_with_neither_amount_nor_quantity_needs_a_limit():
    bare = _prepay(amount="0")
    out = translate_rewards([_cents_per_gallon()], bare, "passport")
    assert out.rewards == [] and "limit_quantity" in out.dropped[0]["reason"]
    out = translate_rewards([_cents_per_gallon(limit_quantity=15)], bare, "passport")
    assert out.rewards[0].limit_quantity == 15 and out.amounts["FUEL10"] == Decimal("1.50")
