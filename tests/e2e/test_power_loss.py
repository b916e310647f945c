"""Pulled power cord: the box process is SIGKILLed under POS load, again and again.

Every FinalizeRewards the POS got an answer for must be in the journal and reach the reference
host exactly once (the host stores by idempotency key and counts deliveries).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import requests

from app.journal import Journal
from simulators import pos as sim
from tests.boxproc import start_box, write_config
from tests.ports import free_port

KILLS = 20
PHONE = "2142840123"


def pos_load(
    port: int, register: str, counter: sim.SequenceCounter, answered: list[str], stop
) -> None:
    """Sales until the box dies: GetRewards then FinalizeRewards; record answered finalizes."""
    try:
        with sim.PosClient("127.0.0.1", port, timeout=5) as pos:
            while not stop.is_set():
                txn = sim.transaction(
                    register,
                    counter.new_transaction(),
                    [sim.item_line(1, "028200003843", 2, "9.49")],
                    business_date="2026-11-23",
                )
                rewards = pos.send(sim.get_rewards(counter.next(), txn, PHONE))
                head = sim.header(counter.next(), rewards.header.loyalty_sequence_id)
                pos.send(sim.finalize(head, txn, PHONE))
                answered.append(f"{register}/{txn.pos_transaction_id}")
    except (sim.PosClientError, OSError):
        return  # the box was killed: this sale's finalize was not answered


def test_sigkill_under_load_loses_no_answered_finalize(tmp_path, reference_host):
    pos_port, status_port = free_port(), free_port()
    config = write_config(tmp_path, reference_host.url, pos_port, status_port)
    answered: list[str] = []
    # One counter per register for the whole test: transaction numbers never repeat.
    counters = {r: sim.SequenceCounter() for r in ("1", "2")}
    rng = random.Random(2026)
    for _ in range(KILLS):
        box = start_box(config, status_port)
        stop = threading.Event()
        load = [
            threading.Thread(target=pos_load, args=(pos_port, r, c, answered, stop))
            for r, c in counters.items()
        ]
        before = len(answered)
        for thread in load:
            thread.start()
        # Under way first (a sale answered: on a slow machine that takes a while), then the
        # cord is pulled at a random moment of the stream.
        deadline = time.monotonic() + 30
        while len(answered) == before:
            assert time.monotonic() < deadline, "the load did not get going"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.7))
        box.send_signal(signal.SIGKILL)
        box.wait()
        stop.set()
        for thread in load:
            thread.join(timeout=10)

    # Power back: the outbox delivers whatever was still pending.
    box = start_box(config, status_port)
    try:
        deadline = time.monotonic() + 60
        depth = None
        while time.monotonic() < deadline:
            status = requests.get(f"http://127.0.0.1:{status_port}/api/status", timeout=2).json()
            depth = status["outbox"]["depth"]
            if depth == 0:
                break
            time.sleep(0.2)
        assert depth == 0, f"backlog not drained: {depth}"
    finally:
        box.terminate()
        box.wait(timeout=15)

    journal = Journal(tmp_path / "data" / "journal.db")
    journaled = {
        f"{e.body['pos']['register_id']}/{e.body['pos']['pos_transaction_id']}"
        for e in journal.all_events()
        if e.kind == "finalize"
    }
    journal.close()
    host_events = [e for e in reference_host.store.events() if e["event"] == "finalize"]
    at_host = [
        f"{e['body']['pos']['register_id']}/{e['body']['pos']['pos_transaction_id']}"
        for e in host_events
    ]
    missing_journal = sorted(set(answered) - journaled)
    missing_host = sorted(set(answered) - set(at_host))
    duplicated = sorted({t for t in at_host if at_host.count(t) > 1})
    print(
        json.dumps(
            {
                "kills": KILLS,
                "finalize_answered": len(answered),
                "in_journal": len(journaled),
                "at_host": len(set(at_host)),
                "host_deliveries": sum(e["deliveries"] for e in host_events),
                "missing_in_journal": len(missing_journal),
                "missing_at_host": len(missing_host),
                "duplicated_at_host": len(duplicated),
            }
        )
    )
    assert len(answered) >= KILLS, "the load did not get going"
    assert len(set(answered)) == len(answered)
    assert not missing_journal and not missing_host and not duplicated
