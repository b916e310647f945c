"""Hostile bytes on one POS connection: that connection closes, the box and others keep going."""

from __future__ import annotations

import socket
import struct

import pytest

from app.pos.framing import crc32, encode_eps, encode_passport
from simulators import pos as sim

GOOD = b"<GetLoyaltyOnlineStatusRequest><RequestHeader/></GetLoyaltyOnlineStatusRequest>"
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<GetRewardsRequest><LoyaltyID>&c;</LoyaltyID></GetRewardsRequest>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<GetRewardsRequest><LoyaltyID>&x;</LoyaltyID></GetRewardsRequest>"
)


def _tamper(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x5A
    return bytes(out)


def _oversize_header() -> bytes:
    head = struct.pack("<12sIII", b"POSLOYALTY\0\0", 1, 64 * 1024 * 1024, 0)
    return head + struct.pack("<I", crc32(head))


HOSTILE = {
    "wrong signature": _tamper(encode_passport(GOOD), 0),
    "header CRC mismatch": _tamper(encode_passport(GOOD), 25),
    "payload CRC mismatch": _tamper(encode_passport(GOOD), 40),
    "oversize length": _oversize_header(),
    "oversize EPS length": struct.pack(">I", 0x00F00000),
    "billion laughs": encode_passport(LAUGHS),
    "external entity": encode_eps(XXE),
    "non-UTF-8": encode_passport(b"<GetRewardsRequest><LoyaltyID>\xff\xfe\xc3</LoyaltyID>"),
    "not a POS at all": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}


def _closed_by_box(sock: socket.socket) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_frame_closes_only_its_connection(reference_host, make_box, name):
    box = make_box(reference_host.url)
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", box.pos_server.port) as other:
        other.send(sim.online_status(counter.next()))
        with socket.create_connection(("127.0.0.1", box.pos_server.port)) as bad:
            bad.sendall(HOSTILE[name])
            assert _closed_by_box(bad), f"{name}: the box kept a desynchronised connection"
        # The other POS connection and the listener still work.
        assert other.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    with sim.PosClient("127.0.0.1", box.pos_server.port) as fresh:
        assert fresh.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    assert box.pos_server.closed_bad_input == 1


def test_truncated_frame_then_hang_up(reference_host, make_box):
    box = make_box(reference_host.url)
    with socket.create_connection(("127.0.0.1", box.pos_server.port)) as bad:
        bad.sendall(encode_passport(GOOD)[:-10])
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        assert pos.send(sim.online_status("01-1^1^")).prompt_for_loyalty is True
    assert box.pos_server.running


def test_heartbeat_gets_no_reply_and_keeps_the_connection(reference_host, make_box):
    box = make_box(reference_host.url)
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        pos.heartbeat()
        assert pos.send(sim.online_status("01-1^1^")).prompt_for_loyalty is True
