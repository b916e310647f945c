"""Fuel at the pump and customers before the basket, over real TCP in both dialects, against
the reference host (its fuel program: 10 cents a gallon for up to 20 gallons; its points
program: 1 point per dollar)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.pos.model import LoyaltyIdEntry
from simulators import pos as sim
from tests.openapi import host_request_schema, validate_host
from tests.waiting import wait_for

PHONE = "2142840123"
TOBACCO = "028200003843"


def _finalize_events(host):
    """The host's finalize events; each body as docs/host-api.yaml documents it."""
    events = [e for e in host.store.events() if e["event"] == "finalize"]
    for event in events:
        validate_host(event["body"], host_request_schema("/v1/transactions"))
    return events


def _pay(pos, counter, answer, txn, loyalty_id=PHONE):
    applied = sim.AppliedRewards()
    applied.update(answer)
    applied.report(txn.lines)
    head = sim.header(counter.next(), answer.header.loyalty_sequence_id)
    return pos.send(sim.finalize(head, txn, loyalty_id))


def _prepay_at_pump_3(counter):
    """$40 of regular prepaid at pump 3: the grade's price, no gallons yet."""
    prepay = sim.prepay_line(1, "001", "3", "40.00", "3.459")
    return sim.pump_transaction("3", counter.new_transaction(), [prepay], "2026-11-23")


def test_passport_gets_the_per_gallon_reward_of_a_prepay_before_fueling(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    txn = _prepay_at_pump_3(counter)
    with sim.PosClient("127.0.0.1", box.pos_server.port, "passport") as pos:
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        # Before the nozzle is lifted: a price roll-back for up to 20 gallons.
        [reward] = answer.add_rewards
        assert (reward.reward_id, reward.target_line, reward.method) == ("fuel-1", 1, "newPrice")
        assert reward.value == Decimal("3.359") and reward.limit_quantity == 20
        # Fueled: 11.5 gallons at the rolled-back price.
        txn.lines[0].quantity = Decimal("11.500")
        txn.lines[0].amount = Decimal("38.63")
        _pay(pos, counter, answer, txn)

    assert wait_for(lambda: _finalize_events(reference_host))
    [event] = _finalize_events(reference_host)
    body = event["body"]
    assert body["pos"]["outside_sale"] is True and body["pos"]["fuel_position"] == "3"
    assert body["rewards_dropped"] == []
    [sent] = reference_host.store.rewards_requests()
    assert sent["basket"]["lines"][0]["prepay"] is True
    assert "quantity" not in sent["basket"]["lines"][0]


def test_eps_cannot_take_a_prepays_per_gallon_reward_and_the_host_hears_it(
    reference_host, make_box
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    txn = _prepay_at_pump_3(counter)
    with sim.PosClient("127.0.0.1", box.pos_server.port, "eps") as pos:
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        assert answer.add_rewards == []
        _pay(pos, counter, answer, txn)

    assert wait_for(lambda: _finalize_events(reference_host))
    [event] = _finalize_events(reference_host)
    [dropped] = event["body"]["rewards_dropped"]
    assert dropped["reward_id"] == "fuel-1"
    assert "EPS carries only amountOff" in dropped["reason"]


def test_eps_gets_the_per_gallon_reward_as_an_amount_once_the_gallons_are_known(
    reference_host, make_box
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    fueled = sim.fuel_line(1, "001", "3", "25.000", "3.459")
    txn = sim.pump_transaction("3", counter.new_transaction(), [fueled], "2026-11-23")
    with sim.PosClient("127.0.0.1", box.pos_server.port, "eps") as pos:
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
    [reward] = answer.add_rewards
    assert (reward.method, reward.value) == ("amountOff", Decimal("2.00"))  # 20 gal x 10c


@pytest.mark.parametrize("dialect", ["passport", "eps"])
def test_a_points_customer_identified_before_the_basket_sees_the_balance(
    reference_host, make_box, dialect
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        # An earlier sale: $17.98 paid with the phone number, 17 points.
        txn = sim.transaction(
            "1", counter.new_transaction(), [sim.item_line(1, TOBACCO, 2, "9.49")], "2026-11-23"
        )
        _pay(pos, counter, pos.send(sim.get_rewards(counter.next(), txn, PHONE)), txn)
        assert wait_for(lambda: _finalize_events(reference_host))

        begin = sim.begin_customer(counter.next())
        begin.loyalty_id = LoyaltyIdEntry(PHONE, "manual")
        welcome = pos.send(begin)
        assert welcome.loyalty_id_valid is True
        assert welcome.loyalty_id_text == "Welcome: 17 points"
        assert welcome.receipt_lines == ["You have 17 points ($0.17)"]
        lsid = welcome.header.loyalty_sequence_id
        assert lsid  # the transaction's session, which the basket's GetRewards echoes

        again = pos.send(sim.message("GetCustomerMessaging", sim.header(counter.next(), lsid)))
        assert again.loyalty_id_text == "Welcome: 17 points"

        basket = sim.transaction(
            "1", counter.new_transaction(), [sim.item_line(1, TOBACCO, 1, "9.49")], "2026-11-23"
        )
        pos.send(sim.get_rewards(sim.header(counter.next(), lsid), basket))  # no ID of its own

    first, messaging = reference_host.store.identify_requests()
    for body in (first, messaging):
        validate_host(body, host_request_schema("/v1/customers/identify"))
    assert (first["purpose"], messaging["purpose"]) == ("begin_customer", "messaging")
    assert first["loyalty_id"]["value"] == PHONE and first["session_id"] == lsid
    # The customer identified at BeginCustomer is the basket's customer.
    assert reference_host.store.rewards_requests()[-1]["loyalty_id"]["value"] == PHONE


def test_begin_customer_without_the_host_answers_from_the_policy(reference_host, make_box):
    box = make_box(reference_host.url, deadline_ms=400)
    assert wait_for(lambda: box.policies.current() is not None)
    reference_host.set_fault("error500", 0)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        valid = sim.begin_customer(counter.next())
        valid.loyalty_id = LoyaltyIdEntry(PHONE, "manual")
        invalid = sim.begin_customer(counter.next())
        invalid.loyalty_id = LoyaltyIdEntry("5125550123", "manual")  # 555-01xx: fictional
        assert pos.send(valid).loyalty_id_text == "ACCEPTED OFFLINE"
        answer = pos.send(invalid)
        assert answer.loyalty_id_valid is False and answer.loyalty_id_text == "INVALID LOYALTY ID"
        plain = pos.send(sim.begin_customer(counter.next()))  # no ID: a header-only answer
        assert plain.loyalty_id_valid is None and plain.header.loyalty_sequence_id == ""


def test_points_earned_offline_are_kept_with_the_sale_and_delivered(reference_host, make_box):
    box = make_box(reference_host.url, deadline_ms=400)
    assert wait_for(lambda: box.policies.current() is not None)
    reference_host.set_fault("error500", 0)
    counter = sim.SequenceCounter()
    txn = sim.transaction(
        "1", counter.new_transaction(), [sim.item_line(1, TOBACCO, 2, "9.49")], "2026-11-23"
    )
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        assert answer.loyalty_id_text == "ACCEPTED OFFLINE"
        _pay(pos, counter, answer, txn)
    reference_host.set_fault("ok", 0)

    assert wait_for(lambda: _finalize_events(reference_host), timeout=30)
    [event] = _finalize_events(reference_host)
    assert event["body"]["decision"]["origin"] == "offline"
    [points] = event["body"]["points_pending"]
    # $18.98 less the $1.00 offline discount: 17 whole dollars, 1 point each.
    assert (points["program_id"], points["points"], points["status"]) == ("points", "17", "pending")


def test_the_technicians_test_sale_is_training_at_the_host(reference_host, make_box):
    from app.status.actions import test_sale

    box = make_box(reference_host.url)
    result = test_sale(box.controls)
    assert result.ok, result.message
    assert wait_for(lambda: _finalize_events(reference_host))
    [event] = _finalize_events(reference_host)
    assert event["body"]["pos"]["register_id"] == "TEST"
    assert event["body"]["pos"]["training"] is True
