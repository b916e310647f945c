"""SIGTERM under load: the box stops its listeners, lets the POS requests in flight finish, then
closes the journal. Nothing in its log is an error, and every FinalizeRewards the POS got an
answer for is in the journal."""

from __future__ import annotations

import signal
import threading

import requests

from app.journal import Journal
from simulators import pos as sim
from tests import floods
from tests.boxproc import start_box, write_config
from tests.ports import free_port

REGISTERS = ("1", "2", "3")
BAD = ("ERROR", "CRITICAL", "Traceback", "Bad file descriptor", "status snapshot failed")


def sell(port: int, register: str, answered: list[str], progress: threading.Condition) -> None:
    """GetRewards then FinalizeRewards until the box goes away; record answered finalizes."""
    counter = sim.SequenceCounter()
    try:
        with sim.PosClient("127.0.0.1", port, timeout=10) as pos:
            while True:
                txn = sim.transaction(
                    register,
                    counter.new_transaction(),
                    [sim.item_line(1, floods.TOBACCO, 2, "9.49")],
                    business_date="2026-11-23",
                )
                rewards = pos.send(sim.get_rewards(counter.next(), txn, floods.PHONE))
                head = sim.header(counter.next(), rewards.header.loyalty_sequence_id)
                pos.send(sim.finalize(head, txn, floods.PHONE))
                with progress:
                    answered.append(f"{register}/{txn.pos_transaction_id}")
                    progress.notify_all()
    except (sim.PosClientError, OSError):
        return  # the box stopped: this sale's last request was not answered


def test_sigterm_with_requests_in_flight_stops_cleanly_and_keeps_every_answered_finalize(
    tmp_path, reference_host
):
    # Every host call takes a while, so requests are in flight when the signal comes.
    fault = {"mode": "hang", "seconds": 0.2}
    requests.post(reference_host.url + "/_sim/fault", json=fault, timeout=10).raise_for_status()
    pos_port, status_port = free_port(), free_port()
    config = write_config(tmp_path, reference_host.url, pos_port, status_port)
    log_path = tmp_path / "box.log"
    with log_path.open("w") as log_file:
        box = start_box(config, status_port, stderr=log_file)
    answered: list[str] = []
    progress = threading.Condition()
    sellers = [
        threading.Thread(target=sell, args=(pos_port, r, answered, progress), daemon=True)
        for r in REGISTERS
    ]
    try:
        with floods.StatusFlood(status_port, clients=8):
            for seller in sellers:
                seller.start()
            with progress:  # sales under way on every register, status pages being fetched
                assert progress.wait_for(lambda: len(answered) >= 10, timeout=60)
            box.send_signal(signal.SIGTERM)
            assert box.wait(timeout=30) == 0
        for seller in sellers:
            seller.join(15)
    finally:
        if box.poll() is None:
            box.kill()

    log = log_path.read_text()
    assert "stopped" in log
    for bad in BAD:
        assert bad not in log, f"{bad!r} in the box's log:\n{log[-4000:]}"
    journal = Journal(tmp_path / "data" / "journal.db")
    journaled = {
        f"{e.body['pos']['register_id']}/{e.body['pos']['pos_transaction_id']}"
        for e in journal.all_events()
        if e.kind == "finalize"
    }
    journal.close()
    assert len(answered) >= 10
    assert not set(answered) - journaled, "answered finalizes missing from the journal"
