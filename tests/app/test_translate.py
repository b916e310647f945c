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
