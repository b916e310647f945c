import copy
from datetime import date

import pytest

from app.programs.scan_data import Decision, evaluate
from tests.host_samples import MARLBORO, PHONE, fuel_line, item_line

TODAY = date(2026, 11, 23)


def program(**changes):
    """The program of host-api.md's example policy."""
    base = {
        "program_id": "scan-data",
        "kind": "scan_data",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
        "loyalty_id": "us_phone",
        "eligible": {"upcs": ["028200003843", "012300000147"], "departments": ["TOBACCO"]},
        "discount": {"method": "amount_off", "value": "0.50", "per": "unit", "max_units": 2},
        "min_quantity": 1,
        "require_age_verified": False,
        "max_transactions_per_id_per_day": 5,
        "receipt_short": "LOYALTY",
        "receipt_long": "TOBACCO LOYALTY DISCOUNT",
    }
    base.update(changes)
    return base


def item(number, quantity="2", amount="18.98", code=MARLBORO, department="TOBACCO", **kw):
    line = item_line(number, code=code, department=department, quantity=quantity, amount=amount)
    line.update(kw)
    return line


FUEL = fuel_line(2)


def run(
    prog=None,
    lines=None,
    loyalty_id=PHONE,
    age_verified=None,
    today=TODAY,
    count=0,
    subscription=date(2027, 6, 30),
) -> Decision:
    return evaluate(
        prog or program(),
        lines if lines is not None else [item(1), FUEL],
        loyalty_id,
        age_verified,
        today,
        count,
        subscription,
    )


def test_example_basket_gets_fifty_cents_off_two_packs():
    decision = run()
    assert decision.eligible and decision.rule == "granted"
    assert decision.rewards == [
        {
            "reward_id": "scan-data-1",
            "target_line": 1,
            "method": "amount_off",
            "value": "1.00",
            "limit_quantity": 2,
            "receipt_short": "LOYALTY",
            "receipt_long": "TOBACCO LOYALTY DISCOUNT",
        }
    ]


def test_reward_ids_are_stable_and_inputs_untouched():
    prog, lines = program(), [item(1), FUEL]
    before = copy.deepcopy((prog, lines))
    assert run(prog, lines) == run(prog, lines)
    assert (prog, lines) == before


def test_max_units_is_shared_by_the_whole_basket():
    lines = [item(1, quantity="1", amount="9.49"), item(3, quantity="3", amount="28.47")]
    rewards = run(lines=lines).rewards
    assert [(r["reward_id"], r["value"], r["limit_quantity"]) for r in rewards] == [
        ("scan-data-1", "0.50", 1),
        ("scan-data-3", "0.50", 1),
    ]


def test_no_max_units_discounts_every_unit():
    prog = program(discount={"method": "amount_off", "value": "0.50", "per": "unit"})
    rewards = run(prog, [item(1, quantity="4", amount="37.96")]).rewards
    assert rewards[0]["value"] == "2.00" and rewards[0]["limit_quantity"] == 4


def test_quantity_integer_part_counts():
    rewards = run(lines=[item(1, quantity="2.000")]).rewards
    assert rewards[0]["value"] == "1.00"


def test_per_line_discount_once_per_line():
    prog = program(discount={"method": "amount_off", "value": "0.75", "per": "line"})
    rewards = run(prog, [item(1, quantity="3", amount="28.47"), item(4)]).rewards
    assert [(r["target_line"], r["value"]) for r in rewards] == [(1, "0.75"), (4, "0.75")]


def test_reward_never_exceeds_the_line_amount():
    rewards = run(lines=[item(1, quantity="2", amount="0.30")]).rewards
    assert rewards[0]["value"] == "0.30"


def test_matches_by_upc_or_department_case_insensitively():
    by_upc = item(1, department="GROCERY")
    by_department = item(1, code="999999999999", department="tobacco")
    as_ean13 = item(1, code="0028200003843", department="GROCERY")
    for line in (by_upc, by_department, as_ean13):
        assert run(lines=[line]).eligible, line


def test_other_lines_are_not_eligible():
    other = item(1, code="999999999999", department="GROCERY")
    voided = item(1, status="void")
    refund = item(1, quantity="-1", amount="-9.49")
    decision = run(lines=[other, voided, refund, FUEL])
    assert not decision.eligible and decision.rule == "no_eligible_items"
    assert decision.rewards == []


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"loyalty_id": None}, "no_loyalty_id"),
        ({"loyalty_id": "  "}, "no_loyalty_id"),
        ({"loyalty_id": "5125550123"}, "invalid_phone"),
        ({"loyalty_id": "12345"}, "invalid_phone"),
        ({"today": date(2025, 12, 31)}, "outside_dates"),
        ({"today": date(2027, 1, 1)}, "outside_dates"),
        ({"subscription": date(2026, 11, 22)}, "subscription_expired"),
        ({"lines": [FUEL]}, "no_eligible_items"),
        ({"lines": []}, "no_eligible_items"),
        ({"prog": program(min_quantity=3)}, "below_min_quantity"),
        ({"prog": program(require_age_verified=True)}, "age_not_verified"),
        ({"prog": program(require_age_verified=True), "age_verified": False}, "age_not_verified"),
        ({"count": 5}, "daily_limit"),
        ({"prog": program(kind="points")}, "not_scan_data"),
        ({"prog": program(valid_to="31/12/2026")}, "invalid_program"),
        ({"prog": program(program_id=None)}, "invalid_program"),
        (
            {"prog": program(discount={"method": "percent_off", "value": "10", "per": "unit"})},
            "unsupported_discount",
        ),
    ],
)
def test_refusals(kwargs, rule):
    decision = run(**kwargs)
    assert decision.rule == rule
    assert not decision.eligible and decision.rewards == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"today": date(2026, 1, 1)},  # window is inclusive
        {"today": date(2026, 12, 31)},
        {"subscription": TODAY},  # valid through its last day
        {"subscription": None},  # the policy sets no end
        {"count": 4},
        {"loyalty_id": "(512) 467-1234"},
        {"prog": program(require_age_verified=True), "age_verified": True},
        {"prog": program(min_quantity=2)},
        {"prog": program(loyalty_id="card")},
    ],
)
def test_grants_at_the_edges(kwargs):
    assert run(**kwargs).rule == "granted"


def test_any_loyalty_id_when_program_does_not_require_a_phone():
    assert run(prog=program(loyalty_id="card"), loyalty_id="CARD-1").eligible
