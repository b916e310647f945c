"""Durable first: a durable request the box acknowledged is in its journal, whatever it held.

Over real TCP against a running box and the reference host: hostile numbers, unknown encodings,
and a failure injected at each step between receiving a durable request and committing it.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest

from app.journal import JournalError
from app.pos.framing import encode_passport
from app.pos.model import Request
from app.pos.xmlcodec import read_response, write_request
from simulators import pos as sim
from tests.waiting import wait_for

PHONE = "2142840123"
TOBACCO = "028200003843"


def _sale(counter: sim.SequenceCounter):
    lines = [sim.item_line(1, TOBACCO, 2, "9.49", description="MARLBORO GOLD BOX")]
    return sim.transaction("1", counter.new_transaction(), lines, business_date="2026-11-23")


def _bytes(request: Request, old: bytes = b"", new: bytes = b"") -> bytes:
    payload = write_request(request, "passport")
    if old:
        assert old in payload, old
        payload = payload.replace(old, new)
    return payload


def _host_events(reference_host, kind: str) -> list[dict]:
    return [e for e in reference_host.store.events() if e["event"] == kind]


def _kept_rows(box) -> list[tuple[bytes, str, str | None]]:
    rows = box.journal._conn.execute("SELECT raw, state, event_id FROM received ORDER BY id")
    return [(bytes(raw), state, event_id) for raw, state, event_id in rows.fetchall()]


def _assert_kept(box, raw: bytes) -> str:
    """The bytes are journaled and settled into an event that is in the journal: its id."""
    settled = [(s, e) for r, s, e in _kept_rows(box) if r == raw and s != "kept"]
    assert settled, "acknowledged but not journaled"
    event_id = settled[0][1]
    assert event_id and box.journal.get_event(event_id) is not None
    return event_id


# ---- hostile values ---------------------------------------------------------------------------


def test_huge_number_finalize_is_kept_acknowledged_and_sent_as_unreadable(reference_host, make_box):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    request = sim.finalize(counter.next(), _sale(counter), PHONE, final_total="18.98")
    raw = _bytes(request, b"<FinalTransTotal>18.98<", b"<FinalTransTotal>1E+99999<")
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        answer = read_response(pos.send_raw(raw))
        assert answer.stem == "FinalizeRewards"
        assert answer.header.pos_sequence_id == request.header.pos_sequence_id
        # The box keeps serving on the same connection.
        assert pos.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    event_id = _assert_kept(box, raw)
    assert box.journal.get_event(event_id).kind == "unreadable"
    assert wait_for(lambda: _host_events(reference_host, "unreadable"))
    (event,) = _host_events(reference_host, "unreadable")
    assert base64.b64decode(event["body"]["raw"]) == raw
    assert event["body"]["request_type"] == "FinalizeRewards"
    assert "FinalTransTotal" in event["body"]["error"]
    assert _host_events(reference_host, "finalize") == []  # never pretends it understood
    status = box.status()
    assert status["journal"]["unreadable"] == 1


@pytest.mark.parametrize(
    "value",
    [b"1e999999999", b"1" * 30, b"NaN", b"-Infinity", b"1.0000001", b"\xd9\xa1\xd9\xa2"],
)
def test_out_of_range_get_rewards_is_answered_without_rewards(reference_host, make_box, value):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    request = sim.get_rewards(counter.next(), _sale(counter), PHONE)
    raw = _bytes(request, b"<SalesQuantity>2<", b"<SalesQuantity>" + value + b"<")
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        started = time.monotonic()
        answer = read_response(pos.send_raw(raw))
        assert time.monotonic() - started < box.service.deadline_s
        assert answer.stem == "GetRewards" and answer.add_rewards == []
        assert pos.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    assert box.service.counters.snapshot()["requests.refused"] == 1


@pytest.mark.parametrize("encoding", ["x-unknown", "ISO-8959-1"])
def test_unknown_encoding_is_the_readers_own_error(reference_host, make_box, caplog, encoding):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    prolog = f'<?xml version="1.0" encoding="{encoding}"?>'.encode()
    status_request = prolog + _bytes(sim.online_status(counter.next()))
    with sim.PosClient("127.0.0.1", box.pos_server.port) as other:
        with socket.create_connection(("127.0.0.1", box.pos_server.port), timeout=5) as bad:
            bad.sendall(encode_passport(status_request))
            assert bad.recv(1024) == b""  # that connection is closed, unanswered
        assert other.send(sim.online_status(counter.next())).prompt_for_loyalty is True
        # A durable request with the same declaration is kept and acknowledged.
        finalize = prolog + _bytes(sim.finalize(counter.next(), _sale(counter), PHONE))
        assert read_response(other.send_raw(finalize)).stem == "FinalizeRewards"
    assert box.journal.get_event(_assert_kept(box, finalize)).kind == "unreadable"
    assert box.pos_server.closed_bad_input == 1
    assert "Traceback" not in caplog.text and "LookupError" not in caplog.text
    assert "unreadable XML declaration" in caplog.text


# ---- a failure at each step -------------------------------------------------------------------


def _fail(exc: Exception):
    def raiser(*args, **kwargs):
        raise exc

    return raiser


# step name -> (object path on the box, attribute, exception, acknowledged, resulting kind)
STEPS = {
    "journal keeps the bytes": ("journal", "keep", JournalError("disk full"), False, "finalize"),
    "XML reader": ("service_module", "read_request", RuntimeError("bug"), True, "unreadable"),
    "session look-up": ("sessions", "get", RuntimeError("bug"), True, "unreadable"),
    "event body": ("service", "_event_body", RuntimeError("bug"), True, "unreadable"),
    "outbox claim": ("outbox", "claim", RuntimeError("bug"), True, "unreadable"),
    "event commit": ("journal", "add_event", JournalError("I/O error"), False, "finalize"),
    "host submit": ("relay", "submit", RuntimeError("bug"), True, "finalize"),
    "answer record": ("journal", "set_answer", RuntimeError("bug"), True, "finalize"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_at_any_step_never_ends_acknowledged_and_lost(
    reference_host, make_box, monkeypatch, step
):
    import app.pos.service as service_module

    box = make_box(reference_host.url)
    where, attribute, exc, acknowledged, kind = STEPS[step]
    target = service_module if where == "service_module" else getattr(box, where)
    counter = sim.SequenceCounter()
    txn = _sale(counter)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.send(sim.get_rewards(counter.next(), txn, PHONE))
        raw = _bytes(sim.finalize(counter.next(), txn, PHONE))
        with monkeypatch.context() as patch:
            patch.setattr(target, attribute, _fail(exc))
            try:
                answered = read_response(pos.send_raw(raw)).stem == "FinalizeRewards"
            except sim.PosClientError:
                answered = False
    assert answered is acknowledged
    if answered:
        event_id = _assert_kept(box, raw)
    else:
        # Unanswered: the POS keeps it. Whatever the box kept is settled at its next start,
        # and the POS's resend maps to the same event.
        box.service.settle_unsettled()
        with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
            assert read_response(pos.send_raw(raw)).stem == "FinalizeRewards"
        event_id = _assert_kept(box, raw)
    assert box.journal.get_event(event_id).kind == kind
    assert wait_for(lambda: len(_host_events(reference_host, kind)) == 1)
    assert [e["idempotency_key"] for e in reference_host.store.events()] == [event_id]
    assert all(state != "kept" for _, state, _ in _kept_rows(box))


# ---- the box as a process: one message must not stall it or grow it --------------------------


def test_huge_numbers_neither_stall_nor_grow_a_running_box(tmp_path, reference_host):
    from tests.boxproc import rss_mib, start_box, write_config
    from tests.ports import free_port

    pos_port, status_port = free_port(), free_port()
    box = start_box(write_config(tmp_path, reference_host.url, pos_port, status_port), status_port)
    counter = sim.SequenceCounter()
    try:
        with (
            sim.PosClient("127.0.0.1", pos_port) as pos,
            sim.PosClient("127.0.0.1", pos_port) as other,
        ):
            for _ in range(3):  # warm up: the first sales load code and fill pools
                pos.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
            before = rss_mib(box.pid)
            for value in (b"1e999999999", b"1e99999999", b"9" * 5000, b"1E+99999"):
                request = sim.get_rewards(counter.next(), _sale(counter), PHONE)
                raw = _bytes(request, b"<SalesQuantity>2<", b"<SalesQuantity>" + value + b"<")
                started = time.monotonic()
                answer = read_response(pos.send_raw(raw))
                assert time.monotonic() - started < 1.5, value[:12]
                assert answer.stem == "GetRewards" and answer.add_rewards == []
                # Another register is served meanwhile, with its rewards.
                sale = other.send(sim.get_rewards(counter.next(), _sale(counter), PHONE))
                assert sale.add_rewards
            grown = rss_mib(box.pid) - before
        assert grown < 20, f"RSS grew by {grown:.1f} MiB"
    finally:
        box.kill()
        box.wait(timeout=10)
