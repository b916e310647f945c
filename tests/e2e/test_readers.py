"""Card reads on virtual serial readers (real pseudo-terminals) reaching the host via the POS."""

from __future__ import annotations

import time

import pytest
import requests

from app.readers import ReaderBinding
from simulators import pos as sim
from simulators.readers.virtual import VirtualSerialReader
from tests.box_readers import BANNER_WINDOW_S, wait_until_reading
from tests.waiting import wait_for

CARD = "6000001234567894"
SWIPE = f"%B{CARD}^LOYAL/JANE^2912101000000000?;{CARD}=29121010000000000000?\r".encode()
# AAMVA track 2 of a licence: IIN 636014, expiry 2912, birth date 20100115 (under 21).
MINOR_LICENCE = b";6360141234567890=291220100115?\r"


@pytest.fixture
def reader(tmp_path):
    virtual = VirtualSerialReader(directory=tmp_path)
    yield virtual
    virtual.close()


def _box_with_reader(make_box, host, reader, register="1", ttl=120):
    box = make_box(host.url, readers=[ReaderBinding(register, path=reader.path)], pending_ttl_s=ttl)
    wait_until_reading(box, reader.path)
    return box


def _wait_for_read(box, register: str) -> None:
    """Until the box holds a read for `register`; a failure shows what the reader saw."""
    assert box.readers.pending.wait(register, timeout=10), box.readers.snapshot()


def _get_rewards(box, register, loyalty_id=None):
    counter = sim.SequenceCounter()
    txn = sim.transaction(
        register, counter.new_transaction(), [sim.item_line(1, "028200003843", 2, "9.49")]
    )
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        return pos.send(sim.get_rewards(counter.next(), txn, loyalty_id))


def test_read_goes_to_its_registers_next_get_rewards(reference_host, make_box, reader):
    box = _box_with_reader(make_box, reference_host, reader)
    reader.swipe(SWIPE)
    _wait_for_read(box, "1")
    _get_rewards(box, "2")  # another register: not its read
    _get_rewards(box, "1")
    _get_rewards(box, "1")  # consumed once
    other, mine, again = reference_host.store.rewards_requests()
    assert other["loyalty_id"] is None
    assert mine["loyalty_id"] == {"value": CARD, "entry_method": "swipe", "source": "reader"}
    assert again["loyalty_id"] is None
    [state] = box.readers.snapshot()
    assert state["reads"] == 1 and CARD not in state["last_verdict"]


def test_pos_loyalty_id_wins_and_the_read_waits(reference_host, make_box, reader):
    box = _box_with_reader(make_box, reference_host, reader)
    reader.swipe(SWIPE)
    _wait_for_read(box, "1")
    _get_rewards(box, "1", "2142840123")
    _get_rewards(box, "1")
    keyed, read = reference_host.store.rewards_requests()
    assert keyed["loyalty_id"]["value"] == "2142840123"
    assert read["loyalty_id"]["value"] == CARD


def test_expired_read_is_not_used(reference_host, make_box, reader):
    box = _box_with_reader(make_box, reference_host, reader, ttl=5)
    box.readers.pending.ttl_s = 0.2  # shorter than the configuration allows, for the test
    reader.swipe(SWIPE)
    _wait_for_read(box, "1")
    time.sleep(0.4)
    _get_rewards(box, "1")
    [body] = reference_host.store.rewards_requests()
    assert body["loyalty_id"] is None


def test_under_21_licence_marks_the_sale_not_age_verified(reference_host, make_box, reader):
    box = _box_with_reader(make_box, reference_host, reader)
    reader.swipe(MINOR_LICENCE)
    _wait_for_read(box, "1")
    _get_rewards(box, "1", "2142840123")
    [body] = reference_host.store.rewards_requests()
    assert body["customer"]["age_verified"] is False
    assert body["loyalty_id"]["value"] == "2142840123"  # a licence is never the loyalty ID
    assert "6360141234567890" not in str(body) and "20100115" not in str(box.readers.snapshot())


def test_reader_found_by_vendor_on_hot_plug(reference_host, make_box, reader):
    """Discovery matches a plugged-in MagTek (vendor 0801) to register 1, also after a re-plug."""
    from app.box import Box
    from app.readers import ReaderService
    from drivers.discovery import DeviceInfo

    bus: list[DeviceInfo] = []
    magtek = DeviceInfo(reader.path, "serial", "0801", "0011", "B123", "1-1.2", "MagTek")
    box: Box = make_box(reference_host.url)
    service = ReaderService(
        [ReaderBinding("1", match={"vendor_id": "0801"})], lister=lambda: list(bus)
    )
    service.start()
    try:
        assert service.states == {}
        bus.append(magtek)  # plugged in after start-up
        deadline = time.monotonic() + 5
        while service.states.get(reader.path) is None or (
            service.states[reader.path].state != "connected"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        connected_at = time.monotonic()
        assert service.states[reader.path].vendor == "0801"
        bus.clear()  # unplugged
        while service.states[reader.path].state != "gone":
            assert time.monotonic() < deadline + 5
            time.sleep(0.02)
        bus.append(magtek)
        while service.states[reader.path].state != "connected":  # the re-plug is seen
            assert time.monotonic() < deadline + 10
            time.sleep(0.02)
        # The port stayed open all along: its sign-on banner window counts from the first open.
        time.sleep(max(0.0, connected_at + BANNER_WINDOW_S + 0.1 - time.monotonic()))
        reader.swipe(SWIPE)
        assert service.pending.wait("1", timeout=5)
        assert service.pending.take_id("1").loyalty_id == CARD
    finally:
        service.stop()
        assert box.pos_server.running


# Card number ranges per program, from the provider's signed policy (app/programs/ids.py).

CENTEGRA = {
    "program_id": "centegra",
    "kind": "points",
    "earn": {"per_currency": "1", "points": "1"},
    "card": {"min_length": 8, "ranges": [{"from": "60000000", "to": "60999999"}]},
}


@pytest.fixture
def card_host():
    from simulators.host.policy import load_policy
    from simulators.host.runner import start_in_thread

    policy = load_policy()  # the demo's Scan Data program for phone numbers, plus Centegra's
    policy["programs"].append(CENTEGRA)
    host = start_in_thread("127.0.0.1", 0, policy=policy)
    yield host
    host.stop()


def _swiped(box, reader, frame: bytes, reads: int) -> dict:
    """Swipe and wait until the box judged it; the reader's state afterwards."""
    reader.swipe(frame)
    assert wait_for(lambda: box.readers.snapshot()[0]["reads"] == reads), box.readers.snapshot()
    return box.readers.snapshot()[0]


def test_a_card_matching_no_programs_range_is_refused_at_the_reader(
    card_host, make_box, reader, caplog
):
    caplog.set_level("INFO", logger="connectbox.readers")
    box = _box_with_reader(make_box, card_host, reader)
    doc = box.policies.current()
    assert doc is not None  # the signed policy, with Centegra's card numbers, is in force
    assert [p.get("card") for p in doc["programs"]][-1] == CENTEGRA["card"]

    for reads, frame in enumerate([b"%62000000?;62000000?\r", b"%ABCD1234EF?\r"], start=1):
        state = _swiped(box, reader, frame, reads)
        assert "matches no program's number range" in state["last_verdict"], state
        assert "62000000" not in state["last_verdict"]
    short = _swiped(box, reader, b";6012345?\r", 3)  # in no range, and shorter than 8
    assert "shorter than the 8 characters" in short["last_verdict"], short
    assert caplog.text.count("matches no program's number range") == 3
    page = requests.get(f"http://127.0.0.1:{box.status_port}/", timeout=5).text
    assert "matches no program&#39;s number range" in page  # the reader's last verdict, escaped
    api = requests.get(f"http://127.0.0.1:{box.status_port}/api/status", timeout=5).json()
    assert "matches no program's number range" in str(api["readers"])
    _get_rewards(box, "1")  # the refused reads wait for no sale

    _swiped(box, reader, b"%60123456?;60123456?\r", 4)  # as Centegra encodes: both tracks
    _wait_for_read(box, "1")
    _get_rewards(box, "1")
    refused, used = card_host.store.rewards_requests()
    assert refused["loyalty_id"] is None
    assert used["loyalty_id"] == {"value": "60123456", "entry_method": "swipe", "source": "reader"}
