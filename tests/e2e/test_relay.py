"""The relay end to end over real TCP: simulated POS -> box -> reference host (real HTTP)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from app.pos.model import MESSAGE_STEMS
from simulators import pos as sim
from tests.waiting import wait_for

PHONE = "2142840123"
TOBACCO = "028200003843"


def _sale(counter: sim.SequenceCounter, lines=None, register="1"):
    txn_id = counter.new_transaction()
    lines = lines or [sim.item_line(1, TOBACCO, 2, "9.49", description="MARLBORO GOLD BOX")]
    return sim.transaction(register, txn_id, lines, business_date="2026-11-23")


@pytest.mark.parametrize(
    "dialect, complement", [("passport", False), ("passport", True), ("eps", False)]
)
def test_discounted_tobacco_sale(reference_host, make_box, dialect, complement):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect, complement) as pos:
        status = pos.send(sim.online_status(counter.next()))
        assert status.prompt_for_loyalty is True
        pos.send(sim.begin_customer(counter.next()))
        txn = _sale(counter)
        answer = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        assert answer.loyalty_id_valid is True
        assert answer.header.loyalty_sequence_id  # assigned by the box
        [reward] = answer.add_rewards
        assert (reward.reward_id, reward.target_line) == ("scan-data-1", 1)
        assert reward.method == "amountOff" and reward.value == Decimal("1.00")
        assert len(reward.receipt_short) <= 8 and len(reward.receipt_long) <= 24

        applied = sim.AppliedRewards()
        applied.update(answer)
        applied.report(txn.lines)
        head = sim.header(counter.next(), answer.header.loyalty_sequence_id)
        done = pos.send(sim.finalize(head, txn, PHONE))
        assert done.receipt_lines, "the host's receipt lines reach the POS"

    [sent] = reference_host.store.rewards_requests()
    assert sent["loyalty_id"] == {"value": PHONE, "entry_method": "manual", "source": "pos"}
    assert sent["pos"]["dialect"] == dialect and sent["basket"]["total"] == "18.98"
    [event] = reference_host.store.events()
    assert event["event"] == "finalize" and event["deliveries"] == 1
    assert event["body"]["rewards_applied"] == [
        {"reward_id": "scan-data-1", "target_line": 1, "amount": "1.00"}
    ]
    assert event["body"]["decision"]["origin"] == "host"
    [recent] = box.status()["recent_transactions"]
    assert (recent["masked_id"], recent["register_id"], recent["origin"], recent["discount"]) == (
        "******0123",
        "1",
        "host",
        "1.00",
    )


@pytest.mark.parametrize("dialect", ["passport", "eps"])
def test_every_message_type_and_an_unknown_one_get_matching_answers(
    reference_host, make_box, dialect
):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect) as pos:
        txn = _sale(counter)
        for stem in MESSAGE_STEMS:
            request = sim.message(stem, counter.next(), txn if stem != "EndPeriod" else None)
            response = pos.send(request)  # checks name and POSSequenceID echo
            assert response.stem == stem
        unknown = pos.send(sim.message("FrobnicateWidget", "01-1^1^"))
        assert unknown.stem == "FrobnicateWidget"
        assert unknown.add_rewards == [] and unknown.loyalty_id_valid is None
        raw = pos.send_raw(b"<FrobnicateWidgetRequest/>")
        assert raw.startswith(b"<FrobnicateWidgetResponse") or b"FrobnicateWidgetResponse" in raw


def test_repeated_get_rewards_masked_id_stable_ids_and_removal(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        txn = _sale(counter)
        first = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        session = first.header.loyalty_sequence_id
        [granted] = first.add_rewards

        # Same basket again, ID masked by the POS: same session, same reward id.
        again = pos.send(sim.get_rewards(sim.header(counter.next(), session), txn, "******0123"))
        assert again.header.loyalty_sequence_id == session
        assert [r.reward_id for r in again.add_rewards] == [granted.reward_id]
        assert again.remove_reward_ids == [granted.reward_id]

        # Tobacco voided, coffee added: the reward no longer applies and is removed.
        changed = sim.transaction(
            "1",
            txn.pos_transaction_id,
            [
                sim.item_line(1, TOBACCO, 2, "9.49", status="void"),
                sim.item_line(2, "012345678905", 1, "1.99", department="COFFEE"),
            ],
        )
        third = pos.send(
            sim.get_rewards(sim.header(counter.next(), session), changed, "******0123")
        )
        assert third.remove_reward_ids == [granted.reward_id] and third.add_rewards == []

    bodies = reference_host.store.rewards_requests()
    assert [b["session_id"] for b in bodies] == [session] * 3
    assert [b["loyalty_id"]["value"] for b in bodies] == [PHONE] * 3  # masked ID resolved


def test_finalize_resend_same_answer_one_event(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        txn = _sale(counter)
        first = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        head = sim.header(counter.next(), first.header.loyalty_sequence_id)
        once = pos.send(sim.finalize(head, txn, PHONE))
        resend = sim.header(counter.next(), first.header.loyalty_sequence_id)
        twice = pos.send(sim.finalize(resend, txn, PHONE))
    assert twice.receipt_lines == once.receipt_lines and once.receipt_lines
    assert twice.header.pos_sequence_id == resend.pos_sequence_id
    events = reference_host.store.events()
    assert [(e["event"], e["deliveries"]) for e in events] == [("finalize", 1)]
    assert box.service.counters.snapshot()["finalize.resent"] == 1


def test_cancel_drops_the_session_and_tells_the_host(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        first = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
        session = first.header.loyalty_sequence_id
        assert box.sessions.get(session) is not None
        pos.send(sim.cancel(sim.header(counter.next(), session)))
        assert box.sessions.get(session) is None
        # A cancel for a transaction the box never saw still gets its answer.
        pos.send(sim.cancel(counter.next()))
    assert wait_for(lambda: [e["event"] for e in reference_host.store.events()] == ["cancel"])
    [event] = reference_host.store.events()
    assert event["body"]["session_id"] == session
    assert event["body"]["loyalty_id"]["value"] == PHONE


def test_reverse_becomes_one_event(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    txn = _sale(counter)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.send(sim.reverse(counter.next(), txn))
        pos.send(sim.reverse(counter.next(), txn))
    assert wait_for(lambda: len(reference_host.store.events()) == 1)
    assert reference_host.store.events()[0]["event"] == "reverse"


def test_licence_dates_are_an_age_check_not_a_loyalty_id(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        txn = _sale(counter)
        adult = pos.send(sim.get_rewards(counter.next(), txn, "01/15/1980,01/15/2099", "scan"))
        assert adult.loyalty_id_text == "AGE 21+ VERIFIED"
        minor = pos.send(sim.get_rewards(counter.next(), _sale(counter), "01/15/2015,01/15/2099"))
        assert minor.loyalty_id_text == "AGE 21+ NOT VERIFIED"
    first, second = reference_host.store.rewards_requests()
    assert first["loyalty_id"] is None and first["customer"]["age_verified"] is True
    assert second["loyalty_id"] is None and second["customer"]["age_verified"] is False
    assert "1980" not in str(reference_host.store.rewards_requests())


@pytest.mark.parametrize("kind", ["dead", "hanging"])
def test_pos_answered_within_deadline_when_host_is_dead_or_hangs(
    make_box, dead_host_url, silent_host, kind
):
    url = dead_host_url if kind == "dead" else silent_host.url
    box = make_box(url, deadline_ms=300)
    if kind == "dead":  # the link's own probe finds out before any sale
        assert wait_for(lambda: box.link.known_down)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        for _ in range(3):
            started = time.monotonic()
            answer = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
            assert (
                time.monotonic() - started < 0.3 + 0.7
            )  # the deadline, plus slack for a loaded CI machine
            assert answer.add_rewards == [] and answer.loyalty_id_valid is True
            assert answer.loyalty_id_text == "ACCEPTED OFFLINE"
        started = time.monotonic()
        pos.send(sim.finalize(counter.next(), _sale(counter), PHONE))
        assert (
            time.monotonic() - started < 0.3 + 0.7
        )  # the deadline, plus slack for a loaded CI machine
    counters = box.service.counters.snapshot()
    outcomes = {
        k: v for k, v in counters.items() if k.startswith("rewards.") and "granted" not in k
    }
    # A hanging host: the first sale finds it slow. After that (and from the start for a dead
    # host) the host is known down and the POS waits only the hedge for it.
    if kind == "hanging":
        assert outcomes == {"rewards.timeout": 1, "rewards.host_known_down": 2}
    else:
        assert outcomes == {"rewards.host_known_down": 3}
    assert box.link.known_down
    assert box.outbox.snapshot()["depth"] == 1  # the finalize waits in the journal


def test_host_500_is_a_failure_not_a_crash(reference_host, make_box):
    import requests

    requests.post(reference_host.url + "/_sim/fault", json={"mode": "error500"}, timeout=5)
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    assert wait_for(lambda: box.policies.current() is not None)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        answer = pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
    assert "500" in box.link.last_error
    # The box decided from its signed policy instead, and said so.
    assert answer.loyalty_id_text == "ACCEPTED OFFLINE"
    assert [r.reward_id for r in answer.add_rewards] == ["scan-data-1"]


def test_logs_mask_loyalty_ids(reference_host, make_box, caplog, dead_host_url):
    caplog.set_level("DEBUG")
    for url in (reference_host.url, dead_host_url):  # normal and failure paths both log
        box = make_box(url, deadline_ms=300)
        counter = sim.SequenceCounter()
        with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
            txn = _sale(counter)
            first = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
            head = sim.header(counter.next(), first.header.loyalty_sequence_id)
            pos.send(sim.finalize(head, txn, PHONE))
        wait_for(lambda: False, timeout=0.3)
    assert caplog.records, "the relay logs what it does"
    assert PHONE not in caplog.text and PHONE[:6] not in caplog.text
    assert "0123" in caplog.text  # the masked form is there


def test_healthz_follows_the_pos_server(reference_host, make_box):
    import requests

    box = make_box(reference_host.url)
    url = f"http://127.0.0.1:{box.status_port}/healthz"
    assert requests.get(url, timeout=2).status_code == 200
    box.pos_server.stop()
    assert requests.get(url, timeout=2).status_code == 503


def test_full_disk_finalize_is_not_acknowledged_and_the_box_keeps_serving(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    conn = box.journal._conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    # 20 kB of descriptions: the kept bytes need pages the full disk does not have.
    lines = [sim.item_line(n, TOBACCO, 2, "9.49", description="X" * 1000) for n in range(1, 21)]
    txn = _sale(counter, lines)
    pos = sim.PosClient("127.0.0.1", box.pos_server.port)
    with pos, pytest.raises(sim.PosClientError, match="closed the connection"):
        pos.send(sim.finalize(counter.next(), txn, PHONE))
    assert box.service.counters.snapshot()["journal_errors"] == 1
    assert reference_host.store.events() == []  # nothing half-done reached the host
    conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.send(sim.finalize(sim.header(counter.next(), offline=True), txn, PHONE))
    assert wait_for(lambda: len(reference_host.store.events()) == 1)


def test_the_box_records_which_pos_talks_to_it(reference_host, make_box):
    box = make_box(reference_host.url)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.send(sim.get_rewards("01-1^1^", _sale(sim.SequenceCounter(), register="4")))
        [live] = box.status()["pos"]["connections"]
        assert (live["vendor"], live["model_version"], live["register"]) == (
            "Gilbarco",
            "12.23.03.02",
            "4",
        )
    assert wait_for(lambda: box.status()["pos"]["past_peers"])
    [peer] = box.status()["pos"]["past_peers"]
    assert peer["peer"].startswith("127.0.0.1:") and peer["dialect"] == "passport"
    assert peer["interface_version"] == "1.2" and peer["messages"] == 1
