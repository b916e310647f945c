"""The host goes away for a stretch of sales (refused or hanging), then comes back.

The POS is answered within the deadline throughout, offline discounts follow the signed policy
and its limits, and the whole backlog drains in order with nothing lost or duplicated.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import requests

from simulators import pos as sim
from simulators.host.runner import start_in_thread
from tests.waiting import wait_for

DEADLINE_MS = 400
REPEAT_PHONE = "2142840123"


def _sale(pos, counter, phone, upc="028200003843", department="TOBACCO"):
    line = sim.item_line(1, upc, 2, "9.49", department=department)
    txn = sim.transaction("1", counter.new_transaction(), [line], "2026-11-23")
    started = time.monotonic()
    rewards = pos.send(sim.get_rewards(counter.next(), txn, phone))
    applied = sim.AppliedRewards()
    applied.update(rewards)
    applied.report(txn.lines)
    head = sim.header(counter.next(), rewards.header.loyalty_sequence_id)
    pos.send(sim.finalize(head, txn, phone))
    return rewards, time.monotonic() - started, txn.pos_transaction_id


@pytest.mark.parametrize("outage", ["refused", "hangs"])
def test_outage_offline_policy_and_ordered_drain(make_box, outage):
    host = start_in_thread("127.0.0.1", 0)
    port = int(host.url.rsplit(":", 1)[1])
    box = make_box(host.url, deadline_ms=DEADLINE_MS)
    try:
        assert wait_for(lambda: box.policies.current() is not None), "no policy fetched"
        counter = sim.SequenceCounter()
        with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
            online, _, _ = _sale(pos, counter, "2142840199")
            assert online.add_rewards and box.link.online

            if outage == "refused":
                store = host.store
                host.stop()
            else:
                requests.post(
                    host.url + "/_sim/fault", json={"mode": "hang", "seconds": 3}, timeout=5
                )

            offline_answers = []
            for _ in range(6):  # the same phone six times: the policy allows 5 a day
                offline_answers.append(_sale(pos, counter, REPEAT_PHONE))
            invalid, _, _ = _sale(pos, counter, "5125550123")  # 555-01xx is fictional
            ineligible, _, _ = _sale(pos, counter, "2142840177", "049000000443", "SNACKS")

            # Every answer within the deadline (two requests per sale; the provider's config
            # may have set the deadline).
            for _, seconds, _ in offline_answers:
                assert seconds < 2 * box.service.deadline_s + 1.0  # slack for a loaded CI box
            granted = [r for r, _, _ in offline_answers if r.add_rewards]
            assert len(granted) == 5, "5 discounted transactions per ID per day"
            for rewards in granted:
                assert rewards.loyalty_id_text == "ACCEPTED OFFLINE"
                assert [r.value for r in rewards.add_rewards] == [Decimal("1.00")]
            assert offline_answers[5][0].add_rewards == []
            assert invalid.add_rewards == [] and invalid.loyalty_id_valid is False
            assert ineligible.add_rewards == []
            if outage == "refused":  # a hanging host still takes some events, 3 s each
                assert box.outbox.snapshot()["depth"] >= 8

            # The host comes back.
            if outage == "refused":
                host = start_in_thread("127.0.0.1", port, store=store)
            else:
                # Behind the held requests on a loaded machine: give the control call time.
                requests.post(host.url + "/_sim/fault", json={"mode": "ok"}, timeout=60)
            box.outbox.wake()
            assert wait_for(lambda: box.outbox.snapshot()["depth"] == 0, timeout=30)

        events = [e for e in host.store.events() if e["event"] == "finalize"]
        txn_ids = [e["body"]["pos"]["pos_transaction_id"] for e in events]
        expected = [t for _, _, t in offline_answers]
        assert len(txn_ids) == len(set(txn_ids)) == 9, "nothing lost, nothing duplicated"
        offline_part = [t for t in txn_ids if t in expected]
        if outage == "refused":
            assert offline_part == expected, "the backlog drains in journal order"
        else:
            assert sorted(offline_part) == sorted(expected)
        offline_events = [e for e in events if e["body"]["decision"]["origin"] == "offline"]
        assert len(offline_events) == 8
        granted_events = [e for e in offline_events if e["body"]["rewards_applied"]]
        assert len(granted_events) == 5
        assert all(e["body"]["decision"]["policy_version"] for e in offline_events)
        assert {e["body"]["decision"]["rule"] for e in granted_events} == {"granted"}
    finally:
        host.stop()
