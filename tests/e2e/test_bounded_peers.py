"""No peer can hurt the box: connect bursts, slow-byte clients, too many connections, status
floods. A real box on loopback, real TCP; one POS keeps selling throughout and its answers must
stay inside the POS deadline (1.5 s)."""

from __future__ import annotations

import logging
import resource
import socket
import time

import pytest
import requests

from app.box import Box
from app.pos.framing import PassportFramer, encode_passport
from simulators import pos as sim
from tests import floods
from tests.boxproc import start_box, write_config
from tests.ports import free_port
from tests.waiting import wait_for

DEADLINE_S = 1.5
BURST = 1000
GOOD = b"<GetLoyaltyOnlineStatusRequest><RequestHeader/></GetLoyaltyOnlineStatusRequest>"


def open_connections(box: Box) -> int:
    return len(box.pos_server.snapshot()["connections"])


def need_descriptors(count: int) -> None:
    """The box and the burst (child processes, they inherit it) each hold one end of every
    connection: raise the soft open-file limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        return
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"needs {count} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def pos_counts(status_port: int) -> tuple[int, int]:
    """(connections open, connections refused over the cap), from the box's /metrics."""
    text = requests.get(f"http://127.0.0.1:{status_port}/metrics", timeout=10).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if "_pos_" in line[:16])
    open_now = values["connectbox_pos_connections"]
    return int(float(open_now)), int(float(values["connectbox_pos_refused_over_cap_total"]))


@pytest.mark.parametrize("cap", [64, 1100], ids=["cap-refuses-most", "cap-holds-all"])
def test_a_burst_of_1000_connects_is_accepted_within_5_s_while_the_pos_sells(
    reference_host, tmp_path, cap
):
    need_descriptors(BURST + 500)
    # The box as a process of its own, as in production: the test's threads do not share its GIL.
    pos_port, status_port = free_port(), free_port()
    config = write_config(tmp_path, reference_host.url, pos_port, status_port)
    config.write_text(config.read_text().replace("[pos]\n", f"[pos]\nmax_connections = {cap}\n"))
    box = start_box(config, status_port)
    try:
        with floods.PosProbe(pos_port) as probe:
            mark = probe.mark()
            started = time.monotonic()
            with floods.ConnectBurst(pos_port, BURST):  # from a process of its own, held open
                # Taken off the listen queue: held (a thread each) or refused over the cap.
                accepted = wait_for(lambda: sum(pos_counts(status_port)) - 1 >= BURST, 5.0)
                elapsed = time.monotonic() - started
                held, refused = pos_counts(status_port)
                assert accepted, f"after 5 s only {held - 1} held and {refused} refused"
                probe.wait_answers(20)  # the POS keeps selling with the burst still connected
            during = probe.rtts[mark:]
    finally:
        box.terminate()
        box.wait(timeout=30)
    assert not probe.errors
    assert len(during) >= 20 and max(during) < DEADLINE_S, f"slowest {max(during):.3f} s"
    assert refused == BURST - min(cap - 1, BURST)  # the probe has one of the slots
    print(f"{BURST} connects accepted in {elapsed:.2f} s; POS slowest {max(during) * 1000:.0f} ms")


def test_a_slow_byte_client_is_cut_at_the_frame_deadline(box_with, caplog):
    caplog.set_level(logging.INFO, logger="connectbox.pos")
    box = box_with(frame_deadline_s=1.0)
    port = box.pos_server.port
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", port) as pos:
        pos.send(sim.online_status(counter.next()))
        # One byte every 0.2 s: each byte is on time, the frame is not.
        cut_after = floods.slow_bytes(port, encode_passport(GOOD), every_s=0.2)
        assert cut_after is not None, "the box waited for the whole slow frame"
        assert 1.0 <= cut_after < 1.0 + 1.5, f"cut {cut_after:.2f} s after the first byte"
        # Quiet between frames for longer than the frame deadline: not cut (idle timeout).
        assert not pos.wait_closed(timeout=1.5)
        assert pos.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    assert box.pos_server.cut_slow_frame == 1
    assert box.status()["pos"]["cut_slow_frame"] == 1
    assert "frame incomplete 1.0 s after its first byte" in caplog.text


def test_a_frame_split_over_reads_within_the_deadline_is_answered(box_with):
    box = box_with(frame_deadline_s=1.0)
    frame = encode_passport(GOOD)
    framer = PassportFramer()
    with socket.create_connection(("127.0.0.1", box.pos_server.port), timeout=5) as sock:
        for piece in (frame[:5], frame[5:40], frame[40:]):  # three reads, well inside 1 s
            sock.sendall(piece)
        answers: list = []
        while not answers and (data := sock.recv(65536)):
            answers = framer.feed(data)
    assert [b"GetLoyaltyOnlineStatusResponse" in a.payload for a in answers] == [True]
    assert box.pos_server.cut_slow_frame == 0


def test_an_idle_connection_is_closed_after_the_idle_timeout(box_with, caplog):
    caplog.set_level(logging.INFO, logger="connectbox.pos")
    box = box_with(idle_timeout_s=1, frame_deadline_s=5.0)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.send(sim.online_status("01-1^1^"))
        assert pos.wait_closed(timeout=5)
    assert "closing idle POS connection" in caplog.text
    assert box.pos_server.cut_slow_frame == 0


def test_the_connection_cap_refuses_the_newest_connection_and_counts_it(box_with, caplog):
    caplog.set_level(logging.WARNING, logger="connectbox.pos")
    box = box_with(max_connections=3)
    port = box.pos_server.port
    counter = sim.SequenceCounter()
    clients = [sim.PosClient("127.0.0.1", port) for _ in range(3)]
    for client in clients:
        assert client.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    with socket.create_connection(("127.0.0.1", port), timeout=5) as newest:
        assert newest.recv(1024) == b"", "the connection over the cap was not closed"
    assert box.pos_server.refused_over_cap == 1
    assert "refusing POS connection" in caplog.text and "max_connections" in caplog.text
    for client in clients:  # the three already connected are untouched
        assert client.send(sim.online_status(counter.next())).prompt_for_loyalty is True

    clients.pop().close()  # a slot frees up: the next connection is served
    assert wait_for(lambda: open_connections(box) == 2, 5.0)
    with sim.PosClient("127.0.0.1", port) as fresh:
        assert fresh.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    for client in clients:
        client.close()

    base = f"http://127.0.0.1:{box.status_port}"
    assert requests.get(base + "/api/status", timeout=10).json()["pos"]["refused_over_cap"] == 1
    assert "pos_refused_over_cap_total 1" in requests.get(base + "/metrics", timeout=10).text
    assert "Connections refused over the cap" in requests.get(base + "/", timeout=10).text


def test_a_status_page_flood_leaves_the_pos_p99_inside_the_deadline(box_with):
    box = box_with()
    with (
        floods.PosProbe(box.pos_server.port) as probe,
        floods.StatusFlood(box.status_port, clients=32) as flood,
    ):
        mark = probe.mark()
        probe.wait_answers(200)
        during = probe.rtts[mark:]
    assert not probe.errors and len(during) >= 200
    p99 = floods.percentile_ms(during, 99)
    assert p99 < DEADLINE_S * 1000, f"POS p99 {p99:.0f} ms during the status flood"
    assert flood.served > 0
    print(f"status flood: {flood.served} pages; POS p99 {p99:.0f} ms")


def test_the_status_listener_refuses_oversized_requests(box_with):
    box = box_with()
    base = f"http://127.0.0.1:{box.status_port}"
    big_header = requests.get(base + "/healthz", headers={"X-Pad": "a" * 32_000}, timeout=10)
    assert big_header.status_code == 431
    big_body = requests.post(base + "/actions/test-host", data=b"p" * 200_000, timeout=10)
    assert big_body.status_code == 413
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
