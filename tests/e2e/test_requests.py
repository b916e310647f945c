"""Every request does its job, over real TCP in both dialects, against the reference host:
EndPeriod and CancelRedemption become events, GetRewardStatus answers from the journal,
EndCustomer forgets the customer, and events carry the POS's own facts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.box import Box
from simulators import pos as sim
from tests.openapi import host_request_schema, validate_host
from tests.waiting import wait_for

PHONE = "2142840123"
TOBACCO = "028200003843"
DIALECTS = ["passport", "eps"]


def _sale(counter: sim.SequenceCounter, business_date: str = "2026-11-23", training=False):
    txn = sim.transaction(
        "1",
        counter.new_transaction(),
        [sim.item_line(1, TOBACCO, 2, "9.49", description="MARLBORO GOLD BOX")],
        business_date=business_date,
    )
    txn.training = training
    return txn


def _rewards_then_finalize(pos, counter, txn, loyalty_id=PHONE):
    answer = pos.send(sim.get_rewards(counter.next(), txn, loyalty_id))
    applied = sim.AppliedRewards()
    applied.update(answer)
    applied.report(txn.lines)
    head = sim.header(counter.next(), answer.header.loyalty_sequence_id)
    pos.send(sim.finalize(head, txn, loyalty_id))
    return answer


def _events(host, kind):
    """The host's events of one kind; each body as docs/host-api.yaml documents it."""
    events = [e for e in host.store.events() if e["event"] == kind]
    for event in events:
        validate_host(event["body"], host_request_schema("/v1/transactions"))
    return events


@pytest.mark.parametrize("dialect", DIALECTS)
def test_end_period_reaches_the_host_with_the_box_counts_for_that_day(
    reference_host, make_box, dialect
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        _rewards_then_finalize(pos, counter, _sale(counter))  # discounted 1.00
        _rewards_then_finalize(pos, counter, _sale(counter, training=True))  # not counted
        _rewards_then_finalize(pos, counter, _sale(counter, business_date="2026-11-24"))
        closing = sim.end_period(counter.next(), "2026-11-23", "2026-11-24")
        closing.periods["from"].begin = "2026-11-23T05:00:00-06:00"
        closing.periods["from"].end = "2026-11-24T05:00:00-06:00"
        assert pos.send(closing).stem == "EndPeriod"
        pos.send(closing)  # a resend is the same event

    assert wait_for(lambda: _events(reference_host, "end_period"))
    [event] = _events(reference_host, "end_period")
    body = event["body"]
    assert body["business_date"] == "2026-11-23"
    assert body["period"] == {
        "type": "day",
        "begin": "2026-11-23T05:00:00-06:00",
        "end": "2026-11-24T05:00:00-06:00",
    }
    assert (body["transactions"], body["finalized"], body["discount_total"]) == (1, 1, "1.00")
    assert body["occurred_at"] == "2026-11-24T05:00:00-06:00"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_cancel_redemption_is_an_event_with_the_customer_and_the_rewards(
    reference_host, make_box, dialect
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        answer = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
        [reward] = answer.add_rewards
        cancel = sim.message(
            "CancelRedemption", sim.header(counter.next(), answer.header.loyalty_sequence_id)
        )
        cancel.reward_ids = [reward.reward_id]
        cancel.points_redeemed = Decimal("150")
        assert pos.send(cancel).stem == "CancelRedemption"

    assert wait_for(lambda: _events(reference_host, "cancel_redemption"))
    [event] = _events(reference_host, "cancel_redemption")
    body = event["body"]
    assert body["loyalty_id"] == {"value": PHONE}
    assert body["reward_ids"] == ["scan-data-1"]
    assert body["points"] == "150"
    assert body["session_id"] == answer.header.loyalty_sequence_id


@pytest.mark.parametrize("dialect", DIALECTS)
def test_get_reward_status_answers_what_the_box_granted(reference_host, make_box, dialect):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        answer = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
        [granted] = answer.add_rewards
        head = sim.header(counter.next(), answer.header.loyalty_sequence_id)
        status = pos.send(sim.message("GetRewardStatus", head))
        unknown = pos.send(sim.message("GetRewardStatus", sim.header(counter.next(), "nope")))

    [reported] = status.add_rewards
    assert (reported.reward_id, reported.method, reported.value, reported.target_line) == (
        granted.reward_id,
        granted.method,
        granted.value,
        granted.target_line,
    )
    assert unknown.add_rewards == []


def test_get_reward_status_survives_a_restart(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        answer = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
    box.stop()
    again = Box(box.config)  # the same journal: the session itself is gone with the process
    again.start()
    try:
        with sim.PosClient("127.0.0.1", again.pos_server.port) as pos:
            head = sim.header(counter.next(), answer.header.loyalty_sequence_id)
            status = pos.send(sim.message("GetRewardStatus", head))
    finally:
        again.stop()
    [reported] = status.add_rewards
    assert (reported.reward_id, reported.method) == ("scan-data-1", "amountOff")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_end_customer_forgets_the_customer_but_not_the_basket(reference_host, make_box, dialect):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        txn = _sale(counter)
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        lsid = answer.header.loyalty_sequence_id
        assert pos.send(sim.end_customer(sim.header(counter.next(), lsid))).stem == "EndCustomer"
        pos.send(sim.get_rewards(sim.header(counter.next(), lsid), txn))

    first, second = reference_host.store.rewards_requests()
    assert first["loyalty_id"]["value"] == PHONE
    assert second["loyalty_id"] is None and second["session_id"] == lsid


@pytest.mark.parametrize("dialect", DIALECTS)
def test_events_carry_the_pos_facts_and_training_sales_say_so(reference_host, make_box, dialect):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    txn = _sale(counter, training=True)
    txn.cashier_id = "91"
    txn.event_started_at = "2026-11-23T13:44:17-05:00"
    txn.event_ended_at = "2026-11-23T13:45:02-05:00"
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        _rewards_then_finalize(pos, counter, txn)

    assert wait_for(lambda: _events(reference_host, "finalize"))
    [event] = _events(reference_host, "finalize")
    pos_facts = event["body"]["pos"]
    assert pos_facts["training"] is True
    assert pos_facts["business_date"] == "2026-11-23"
    assert pos_facts["cashier_id"] == "91"
    assert pos_facts["event_started_at"] == "2026-11-23T13:44:17-05:00"
    assert event["body"]["occurred_at"] == "2026-11-23T13:45:02-05:00"
    assert event["body"]["recorded_at"][:4] >= "2026"
    assert event["body"]["rewards_dropped"] == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_page_shows_what_each_pos_was_last_told(reference_host, make_box, dialect):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        assert pos.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    [told] = box.status()["pos"]["online_status_told"]
    assert told["pos"] == "127.0.0.1" and told["prompt_for_loyalty"] is True
    assert told["vendor"] == "Gilbarco 12.23.03.02"
