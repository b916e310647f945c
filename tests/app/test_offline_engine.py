"""OfflineEngine.decide: every Scan Data rule and every offline limit, one basket at a time.

The policy comes through the real PolicyManager (loaded from a signed state file, no host
needed); the journal's counters are an in-memory fake of the OfflineCounters protocol.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.offline.engine import HOST_LAST_OK_AT, OfflineDecision, OfflineEngine
from app.offline.policy import MAX_CLOCK_SKEW_S, PolicyManager
from app.programs.policy import sign_policy
from provisioning.api import HostClient
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64, test_private_key
from tests.host_samples import (
    EXAMPLE_TIME,
    MARLBORO,
    PHONE,
    fuel_line,
    item_line,
    pos_section,
    rewards_body,
)

SITE = "S-1001"
NOW = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
TODAY = date(2026, 11, 23)  # the site's local date at NOW
HOUR = 3600.0

PROGRAM: dict[str, Any] = {
    "program_id": "scan-data",
    "kind": "scan_data",
    "valid_from": "2026-01-01",
    "valid_to": "2026-12-31",
    "loyalty_id": "us_phone",
    "eligible": {"upcs": [MARLBORO, "012300000147"], "departments": ["TOBACCO"]},
    "discount": {"method": "amount_off", "value": "0.50", "per": "unit", "max_units": 2},
    "min_quantity": 1,
    "require_age_verified": False,
    "max_transactions_per_id_per_day": 5,
    "receipt_short": "LOYALTY",
    "receipt_long": "TOBACCO LOYALTY DISCOUNT",
}
POLICY: dict[str, Any] = {
    "policy_version": 7,
    "site_id": SITE,
    "issued_at": "2026-11-20T00:00:00Z",
    "expires_at": "2026-12-04T00:00:00Z",
    "subscription_valid_until": "2027-06-30",
    "programs": [PROGRAM],
    "offline_limits": {
        "max_offline_hours": 24,
        "max_discount_per_transaction": "5.00",
        "max_offline_discount_total": "250.00",
        "max_offline_transactions": 500,
    },
}
POINTS = {
    "program_id": "points",
    "kind": "points",
    "earn": {"per_currency": "1", "points": "1"},
    "redeem": {"points": "100", "value": "1.00"},
}


class FakeCounters:
    """In-memory stand-in for the journal's side of OfflineCounters."""

    def __init__(self) -> None:
        self.discounted: dict[tuple[str, str], int] = {}
        self.offline: list[tuple[float, Decimal]] = []  # (unix time, discount) per decision
        self.state: dict[str, str] = {HOST_LAST_OK_AT: repr(NOW.timestamp() - HOUR)}

    def discounted_transactions(self, loyalty_key: str, day: str) -> int:
        return self.discounted.get((loyalty_key, day), 0)

    def offline_exposure(self, since: float) -> tuple[int, Decimal]:
        amounts = [amount for at, amount in self.offline if at >= since]
        return len(amounts), sum(amounts, Decimal("0"))

    def get_state(self, key: str) -> str | None:
        return self.state.get(key)

    def add_offline(self, count: int, each: str, at: float | None = None) -> None:
        at = NOW.timestamp() - 60 if at is None else at
        self.offline += [(at, Decimal(each))] * count


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.today = TODAY


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counters() -> FakeCounters:
    return FakeCounters()


@pytest.fixture
def make_engine(tmp_path: Path, clock: Clock, counters: FakeCounters):
    """An engine over `doc` (None: no policy at all) as the box would load it from disk."""

    def make(doc: dict[str, Any] | None = POLICY) -> OfflineEngine:
        state = tmp_path / "policy.json"
        if doc is not None:
            signed = sign_policy(doc, test_private_key(), TEST_KEY_ID)
            state.write_text(json.dumps({"policy": signed, "etag": None}))
        # Never refreshed in these tests: the port is only there to satisfy the constructor.
        client = HostClient("http://127.0.0.1:9", "t", "D-DEMO")
        policies = PolicyManager(
            client, {TEST_KEY_ID: TEST_PUBLIC_KEY_B64}, SITE, state, lambda: clock.now
        )
        return OfflineEngine(
            policies, counters, today=lambda: clock.today, now=lambda: clock.now.timestamp()
        )

    return make


@pytest.fixture
def engine(make_engine) -> OfflineEngine:
    return make_engine()


def policy_with(program: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(POLICY)
    doc["programs"] = [{**PROGRAM, **(program or {})}]
    doc.update(changes)
    return doc


def line(number: int = 1, code: str = MARLBORO, qty: str = "2", price: str = "9.49", **kw: Any):
    amount = str(Decimal(qty) * Decimal(price))
    return {**item_line(number, code=code, quantity=qty, unit_price=price, amount=amount), **kw}


FUEL = fuel_line(9)


def body(
    loyalty_id: str | None = PHONE,
    lines: list[dict[str, Any]] | None = None,
    age_verified: bool | None = None,
    offline: bool = False,
) -> dict[str, Any]:
    """A /v1/rewards request body exactly as host-api.md shows it."""
    return rewards_body(
        loyalty_id,
        lines=[line()] if lines is None else lines,
        total="18.98",
        device_id="D-1",
        site_id=SITE,
        session_id="s-1",
        pos=pos_section(store_location_id=SITE, offline=offline),
        age_verified=age_verified,
        occurred_at=EXAMPLE_TIME,
    )


def granted(decision: OfflineDecision, discount: str) -> None:
    assert decision.rule == "granted", decision
    assert decision.discount == Decimal(discount)
    assert sum(Decimal(r["value"]) for r in decision.rewards) == Decimal(discount)


def refused(decision: OfflineDecision, rule: str) -> None:
    assert decision.rule == rule, decision
    assert decision.rewards == [] and decision.discount == 0


# The loyalty ID.


def test_valid_phone_is_granted_with_host_shaped_rewards(engine: OfflineEngine):
    decision = engine.decide(body())
    granted(decision, "1.00")
    assert decision.policy_version == 7 and decision.loyalty_id_valid is True
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
    answer = decision.as_rewards_answer()
    assert answer["rewards"] == decision.rewards and answer["loyalty_id_valid"] is True
    assert answer["receipt_lines"] == ["You saved $1.00 today"]


@pytest.mark.parametrize("phone", ["(512) 467-1234", "512.467.1234", "+1 512 467 1234"])
def test_formatted_valid_phone_is_granted(engine: OfflineEngine, phone: str):
    granted(engine.decide(body(phone)), "1.00")


@pytest.mark.parametrize(
    "phone",
    [
        "5125550100",  # 555-0100..0199 are fictional
        "5125550199",
        "5124111234",  # N11 exchange (411)
        "5129111234",  # N11 exchange (911)
        "0124671234",  # area code starts with 0
        "1124671234",  # area code starts with 1
        "5120671234",  # exchange starts with 0
        "5921234567",  # area code middle digit 9
        "2222222222",  # all one digit
        "512467123",  # 9 digits
        "51246712345",  # 11 digits without the country code 1
        "ABCDEFGHIJ",
    ],
)
def test_invalid_phone_gets_nothing_and_is_said_invalid(engine: OfflineEngine, phone: str):
    decision = engine.decide(body(phone))
    refused(decision, "invalid_phone")
    assert decision.loyalty_id_valid is False


def test_fictional_555_outside_01xx_is_valid(engine: OfflineEngine):
    granted(engine.decide(body("5125550200")), "1.00")


def test_no_loyalty_id_gets_nothing(engine: OfflineEngine):
    decision = engine.decide(body(None))
    refused(decision, "no_loyalty_id")
    assert decision.loyalty_id_valid is False


# Eligible products.


def test_eligible_upc_in_another_department(engine: OfflineEngine):
    granted(engine.decide(body(lines=[line(department="GROCERY")])), "1.00")


def test_eligible_upc_sent_as_ean13(engine: OfflineEngine):
    granted(engine.decide(body(lines=[line(code="0" + MARLBORO, department="X")])), "1.00")


def test_eligible_department_with_another_upc(engine: OfflineEngine):
    granted(engine.decide(body(lines=[line(code="099999999999")])), "1.00")


def test_not_eligible_product(engine: OfflineEngine):
    lines = [line(code="099999999999", department="GROCERY"), FUEL]
    refused(engine.decide(body(lines=lines)), "no_eligible_items")


def test_voided_eligible_line_is_not_eligible(engine: OfflineEngine):
    refused(engine.decide(body(lines=[line(status="cancel")])), "no_eligible_items")


# Program dates and subscription.


@pytest.mark.parametrize(
    "window",
    [
        {"valid_from": "2026-01-01", "valid_to": "2026-11-22"},  # ended yesterday
        {"valid_from": "2026-11-24", "valid_to": "2026-12-31"},  # starts tomorrow
    ],
)
def test_outside_program_dates(make_engine, window):
    refused(make_engine(policy_with(window)).decide(body()), "outside_dates")


def test_program_dates_are_inclusive(make_engine):
    engine = make_engine(policy_with({"valid_from": "2026-11-23", "valid_to": "2026-11-23"}))
    granted(engine.decide(body()), "1.00")


def test_subscription_expired(make_engine):
    engine = make_engine(policy_with(subscription_valid_until="2026-11-22"))
    refused(engine.decide(body()), "subscription_expired")
    assert engine.prompt_for_loyalty() is False


def test_subscription_last_day_still_valid(make_engine):
    engine = make_engine(policy_with(subscription_valid_until="2026-11-23"))
    granted(engine.decide(body()), "1.00")
    assert engine.prompt_for_loyalty() is True


# Quantities and the discount.


def test_min_quantity(make_engine):
    engine = make_engine(policy_with({"min_quantity": 3}))
    refused(engine.decide(body(lines=[line(qty="2")])), "below_min_quantity")
    granted(engine.decide(body(lines=[line(qty="3")])), "1.00")  # max_units 2 still caps


def test_min_quantity_counts_units_across_lines(make_engine):
    engine = make_engine(policy_with({"min_quantity": 3}))
    granted(engine.decide(body(lines=[line(1, qty="1"), line(2, qty="2")])), "1.00")


def test_per_unit_capped_by_max_units(engine: OfflineEngine):
    decision = engine.decide(body(lines=[line(qty="3")]))
    granted(decision, "1.00")
    assert decision.rewards[0]["limit_quantity"] == 2


def test_per_unit_max_units_shared_across_lines(engine: OfflineEngine):
    decision = engine.decide(body(lines=[line(1, qty="1"), line(2, qty="3")]))
    granted(decision, "1.00")
    assert [(r["target_line"], r["value"], r["limit_quantity"]) for r in decision.rewards] == [
        (1, "0.50", 1),
        (2, "0.50", 1),
    ]


def test_per_unit_without_max_units(make_engine):
    program = {"discount": {"method": "amount_off", "value": "0.50", "per": "unit"}}
    decision = make_engine(policy_with(program)).decide(body(lines=[line(qty="3")]))
    granted(decision, "1.50")
    assert decision.rewards[0]["limit_quantity"] == 3


def test_per_line_counts_lines_against_max_units(make_engine):
    program = {"discount": {"method": "amount_off", "value": "0.50", "per": "line", "max_units": 1}}
    decision = make_engine(policy_with(program)).decide(
        body(lines=[line(1, qty="3"), line(2, qty="3")])
    )
    granted(decision, "0.50")
    assert [r["target_line"] for r in decision.rewards] == [1]


def test_per_line_without_max_units(make_engine):
    program = {"discount": {"method": "amount_off", "value": "0.50", "per": "line"}}
    decision = make_engine(policy_with(program)).decide(
        body(lines=[line(1, qty="3"), line(2, qty="1")])
    )
    granted(decision, "1.00")
    assert [r["value"] for r in decision.rewards] == ["0.50", "0.50"]


def test_discount_never_exceeds_the_line(make_engine):
    program = {"discount": {"method": "amount_off", "value": "20.00", "per": "line"}}
    doc = policy_with(program)
    doc["offline_limits"]["max_discount_per_transaction"] = "50.00"
    granted(make_engine(doc).decide(body(lines=[line(qty="1")])), "9.49")


def test_two_programs_on_one_line_are_capped_to_the_line(make_engine):
    big = {**PROGRAM, "discount": {"method": "amount_off", "value": "9.00", "per": "line"}}
    doc = policy_with(programs=[big, {**big, "program_id": "second"}])
    doc["offline_limits"]["max_discount_per_transaction"] = "50.00"
    decision = make_engine(doc).decide(body(lines=[line(qty="1")]))
    granted(decision, "9.49")
    assert [r["value"] for r in decision.rewards] == ["9.00", "0.49"]


# Age verification.


@pytest.mark.parametrize(
    ("age_verified", "rule"),
    [(True, "granted"), (False, "age_not_verified"), (None, "age_not_verified")],
)
def test_require_age_verified(make_engine, age_verified, rule):
    engine = make_engine(policy_with({"require_age_verified": True}))
    assert engine.decide(body(age_verified=age_verified)).rule == rule


@pytest.mark.parametrize("age_verified", [True, False, None])
def test_age_not_required(engine: OfflineEngine, age_verified):
    granted(engine.decide(body(age_verified=age_verified)), "1.00")


def test_age_verified_must_be_a_real_boolean(make_engine):
    engine = make_engine(policy_with({"require_age_verified": True}))
    payload = body()
    payload["customer"]["age_verified"] = "true"
    refused(engine.decide(payload), "age_not_verified")


# Five discounted transactions per loyalty ID per day.


def test_fifth_transaction_of_the_day_is_granted(engine, counters: FakeCounters):
    counters.discounted[(PHONE, "2026-11-23")] = 4
    granted(engine.decide(body()), "1.00")


def test_sixth_transaction_of_the_day_is_refused(engine, counters: FakeCounters):
    counters.discounted[(PHONE, "2026-11-23")] = 5
    refused(engine.decide(body()), "daily_limit")


def test_daily_limit_counts_the_normalised_phone(engine, counters: FakeCounters):
    counters.discounted[(PHONE, "2026-11-23")] = 5
    refused(engine.decide(body("(512) 467-1234")), "daily_limit")


def test_daily_limit_is_per_local_day(engine, counters: FakeCounters, clock: Clock):
    counters.discounted[(PHONE, "2026-11-22")] = 5  # yesterday's five do not count today
    granted(engine.decide(body()), "1.00")
    counters.discounted[(PHONE, "2026-11-23")] = 5
    refused(engine.decide(body()), "daily_limit")
    clock.today = date(2026, 11, 24)  # local midnight passed (UTC may still say otherwise)
    granted(engine.decide(body()), "1.00")


def test_daily_limit_is_per_loyalty_id(engine, counters: FakeCounters):
    counters.discounted[("5124671235", "2026-11-23")] = 5
    granted(engine.decide(body()), "1.00")


# Offline limits: just below and at each.


def test_offline_hours_just_below_limit(engine, counters: FakeCounters):
    counters.state[HOST_LAST_OK_AT] = repr(NOW.timestamp() - 24 * HOUR + 1)
    granted(engine.decide(body()), "1.00")


def test_offline_hours_at_limit(engine, counters: FakeCounters):
    counters.state[HOST_LAST_OK_AT] = repr(NOW.timestamp() - 24 * HOUR)
    decision = engine.decide(body())
    refused(decision, "limit_offline_hours")
    assert decision.note and "24" in decision.note


def test_offline_hours_unknown_is_allowed_and_said(engine, counters: FakeCounters):
    del counters.state[HOST_LAST_OK_AT]
    decision = engine.decide(body())
    granted(decision, "1.00")
    assert decision.note and "unknown" in decision.note


def test_unknown_offline_hours_counts_all_offline_exposure(engine, counters: FakeCounters):
    del counters.state[HOST_LAST_OK_AT]
    counters.add_offline(500, "0.10", at=NOW.timestamp() - 30 * 24 * HOUR)
    refused(engine.decide(body()), "limit_offline_transactions")


def test_offline_transactions_just_below_limit(engine, counters: FakeCounters):
    counters.add_offline(499, "0.10")
    granted(engine.decide(body()), "1.00")


def test_offline_transactions_at_limit(engine, counters: FakeCounters):
    counters.add_offline(500, "0.10")
    refused(engine.decide(body()), "limit_offline_transactions")


def test_offline_exposure_counts_only_since_the_host_was_last_reached(engine, counters):
    counters.add_offline(500, "0.10", at=NOW.timestamp() - 2 * HOUR)  # before last contact
    granted(engine.decide(body()), "1.00")


def test_offline_discount_total_just_below_limit(engine, counters: FakeCounters):
    counters.add_offline(1, "248.99")
    granted(engine.decide(body()), "1.00")


def test_offline_discount_total_reaching_limit_exactly(engine, counters: FakeCounters):
    counters.add_offline(1, "249.00")  # + 1.00 = 250.00: the limit itself is allowed
    granted(engine.decide(body()), "1.00")


def test_offline_discount_total_passing_limit(engine, counters: FakeCounters):
    counters.add_offline(1, "249.01")
    decision = engine.decide(body())
    refused(decision, "limit_offline_discount_total")
    assert decision.note and "250.00" in decision.note


def test_offline_discount_total_at_limit(engine, counters: FakeCounters):
    counters.add_offline(1, "250.00")
    refused(engine.decide(body()), "limit_offline_discount_total")


UNCAPPED = {"discount": {"method": "amount_off", "value": "0.50", "per": "unit"}}


def test_discount_per_transaction_at_limit(make_engine):
    engine = make_engine(policy_with(UNCAPPED))
    granted(engine.decide(body(lines=[line(qty="10")])), "5.00")


def test_discount_per_transaction_above_limit(make_engine):
    engine = make_engine(policy_with(UNCAPPED))
    decision = engine.decide(body(lines=[line(qty="10"), line(2, qty="1")]))
    refused(decision, "limit_discount_per_transaction")  # no partial discount
    assert decision.note and "5.00" in decision.note


def test_policy_without_offline_limits_sets_none(make_engine, counters: FakeCounters):
    del counters.state[HOST_LAST_OK_AT]
    counters.add_offline(10_000, "1.00")
    engine = make_engine(policy_with(UNCAPPED, offline_limits={}))
    granted(engine.decide(body(lines=[line(qty="20")])), "10.00")


def test_scan_data_rule_decides_before_the_limits(engine, counters: FakeCounters):
    counters.add_offline(500, "0.10")
    refused(engine.decide(body("5125550150")), "invalid_phone")


# The POS's own offline flag, points, and no policy.


def test_sale_the_pos_stored_offline_is_never_discounted_again(engine: OfflineEngine):
    decision = engine.decide(body(offline=True))
    refused(decision, "pos_offline_flag")
    assert decision.loyalty_id_valid is True and decision.policy_version == 7


def test_points_are_pending_and_never_redeemed(make_engine):
    engine = make_engine(policy_with(programs=[PROGRAM, POINTS]))
    decision = engine.decide(body(lines=[line(qty="2"), FUEL]))
    granted(decision, "1.00")  # only the scan_data discount: no redemption reward
    assert [r["reward_id"] for r in decision.rewards] == ["scan-data-1"]
    # 18.98 + 34.59 spent, less the 1.00 discount: 52.57 -> 52 whole dollars, 1 point each.
    assert decision.points_pending == [
        {
            "program_id": "points",
            "loyalty_id": PHONE,
            "points": "52",
            "basis": "52.57",
            "status": "pending",
        }
    ]


def test_points_only_policy_grants_nothing_and_cannot_judge_the_id(make_engine):
    engine = make_engine(policy_with(programs=[POINTS]))
    decision = engine.decide(body("CARD-123", lines=[FUEL]))
    refused(decision, "no_program")
    assert decision.loyalty_id_valid is None  # accounts live on the host
    assert decision.points_pending[0]["points"] == "34"
    assert engine.prompt_for_loyalty() is True


def test_no_points_without_a_loyalty_id(make_engine):
    engine = make_engine(policy_with(programs=[PROGRAM, POINTS]))
    assert engine.decide(body(None)).points_pending == []


# Card numbers per program (Centegra: "a minimum of 8 digits", "distinct number ranges").

LOYALTY_CARDS = {"min_length": 8, "ranges": [{"from": "60000000", "to": "60999999"}]}
GIFT_CARDS = {"min_length": 8, "ranges": [{"from": "61000000", "to": "61999999"}]}


@pytest.fixture
def card_engine(make_engine) -> OfflineEngine:
    """Scan Data for phones and the loyalty cards' range; points only for the gift range."""
    scan = {**PROGRAM, "card": LOYALTY_CARDS}
    return make_engine(policy_with(programs=[scan, {**POINTS, "card": GIFT_CARDS}]))


def test_a_card_in_the_scan_data_range_is_discounted(card_engine: OfflineEngine):
    decision = card_engine.decide(body("60123456"))
    granted(decision, "1.00")
    assert decision.loyalty_id_valid is True and decision.points_pending == []


def test_a_card_of_another_program_gets_only_that_programs_points(card_engine: OfflineEngine):
    decision = card_engine.decide(body("61123456"))
    refused(decision, "card_out_of_range")
    assert decision.loyalty_id_valid is True  # the gift program takes it
    assert [p["program_id"] for p in decision.points_pending] == ["points"]


@pytest.mark.parametrize("card", ["62000000", "6012345", "6000001234567894", "ABCD1234EF"])
def test_a_card_matching_no_program_is_not_valid_and_earns_nothing(card_engine, card):
    decision = card_engine.decide(body(card))
    refused(decision, "card_out_of_range")
    assert decision.loyalty_id_valid is False and decision.points_pending == []
    assert card_engine.decide(body(card)).as_rewards_answer()["display_text"] == (
        "Loyalty ID not valid"
    )


def test_phone_numbers_still_work_beside_card_ranges(card_engine: OfflineEngine):
    decision = card_engine.decide(body(PHONE))
    granted(decision, "1.00")
    assert decision.points_pending == []  # the gift program takes only its cards


def test_no_policy(make_engine):
    engine = make_engine(None)
    decision = engine.decide(body())
    refused(decision, "no_policy")
    assert decision.policy_version is None and decision.loyalty_id_valid is None
    assert engine.prompt_for_loyalty() is False


def test_expired_policy(engine: OfflineEngine, clock: Clock):
    clock.now = datetime(2026, 12, 4, 0, 0, tzinfo=UTC)  # expires_at exactly
    decision = engine.decide(body())
    refused(decision, "policy_expired")
    assert decision.policy_version == 7 and decision.loyalty_id_valid is True
    assert engine.prompt_for_loyalty() is False


def test_policy_expired_before_the_box_started(make_engine, clock: Clock):
    clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    engine = make_engine()
    refused(engine.decide(body()), "policy_expired")
    assert engine.policies.refused and "expired" in engine.policies.refused


def test_clock_before_policy_issue_time(engine: OfflineEngine, clock: Clock):
    clock.now = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)
    decision = engine.decide(body())
    refused(decision, "clock_problem")
    assert decision.note and "issue time" in decision.note


def test_clock_skew_from_host_date(engine: OfflineEngine):
    engine.policies.clock_skew_s = MAX_CLOCK_SKEW_S + 1  # as measured at the last refresh
    decision = engine.decide(body())
    refused(decision, "clock_problem")
    assert decision.note and "ahead of the host's clock" in decision.note
    engine.policies.clock_skew_s = -MAX_CLOCK_SKEW_S  # at the tolerance: fine
    granted(engine.decide(body()), "1.00")


# GetLoyaltyOnlineStatus while the host is down.


def test_prompt_for_loyalty_with_a_policy(engine: OfflineEngine):
    assert engine.prompt_for_loyalty() is True


def test_no_prompt_when_no_program_runs_today(make_engine):
    engine = make_engine(policy_with({"valid_to": "2026-11-01"}))
    assert engine.prompt_for_loyalty() is False


# Odd bodies never raise.


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"basket": None, "loyalty_id": "5124671234", "pos": [], "customer": 3},
        {"basket": {"lines": ["x", None, 3]}, "loyalty_id": {"value": 5124671234}},
    ],
)
def test_odd_bodies_get_no_discount_and_no_exception(engine: OfflineEngine, payload):
    decision = engine.decide(payload)
    assert decision.rewards == [] and decision.rule in ("no_loyalty_id", "no_eligible_items")
