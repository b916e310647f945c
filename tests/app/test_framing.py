import struct

import pytest

from app.pos.framing import (
    ACTION_HEARTBEAT,
    AutoFramer,
    EpsFramer,
    FramingError,
    PassportFramer,
    crc32,
    encode_eps,
    encode_passport,
)

PAYLOAD = b"<GetLoyaltyOnlineStatusRequest/>"


@pytest.mark.parametrize("complemented", [False, True])
def test_passport_frames_split_anywhere_and_remember_crc_form(complemented):
    data = encode_passport(PAYLOAD, complemented=complemented) * 3
    framer = PassportFramer()
    frames = []
    for i in range(len(data)):  # one byte at a time: framing must not depend on recv sizes
        frames += framer.feed(data[i : i + 1])
    assert [f.payload for f in frames] == [PAYLOAD] * 3
    assert framer.complemented_crc is complemented
    reply = framer.encode(b"<x/>")
    header_crc = struct.unpack_from("<I", reply, 24)[0]
    expected = crc32(reply[:24])
    assert header_crc == (expected ^ 0xFFFFFFFF if complemented else expected)


def test_passport_heartbeat_is_consumed_as_heartbeat():
    framer = PassportFramer()
    frames = framer.feed(encode_passport(b"", ACTION_HEARTBEAT) + encode_passport(PAYLOAD))
    assert [f.heartbeat for f in frames] == [True, False]


def test_passport_bad_signature():
    data = bytearray(encode_passport(PAYLOAD))
    data[0:3] = b"XYZ"
    with pytest.raises(FramingError, match="signature"):
        PassportFramer().feed(bytes(data))


def test_passport_header_crc_mismatch():
    data = bytearray(encode_passport(PAYLOAD))
    data[24] ^= 0x55
    with pytest.raises(FramingError, match="header CRC"):
        PassportFramer().feed(bytes(data))


def test_passport_payload_crc_mismatch():
    data = bytearray(encode_passport(PAYLOAD))
    data[-2] ^= 0x01
    with pytest.raises(FramingError, match="payload CRC"):
        PassportFramer().feed(bytes(data))


def test_oversize_length_rejected_before_reading_payload():
    head = struct.pack("<12sIII", b"POSLOYALTY\0\0", 1, 50_000_000, 0)
    head += struct.pack("<I", crc32(head))
    with pytest.raises(FramingError, match="limit"):
        PassportFramer().feed(head)
    with pytest.raises(FramingError, match="limit"):
        EpsFramer().feed(struct.pack(">I", 2_000_000))


def test_truncated_frame_waits():
    framer = EpsFramer()
    assert framer.feed(encode_eps(PAYLOAD)[:-3]) == []
    assert framer.pending > 0


def test_auto_detects_both_dialects():
    passport = AutoFramer()
    assert passport.feed(encode_passport(PAYLOAD)[:5]) == []
    assert passport.feed(encode_passport(PAYLOAD)[5:])[0].payload == PAYLOAD
    assert passport.dialect == "passport"
    eps = AutoFramer()
    assert eps.feed(encode_eps(PAYLOAD))[0].payload == PAYLOAD
    assert eps.dialect == "eps"
    with pytest.raises(FramingError, match="unknown framing"):
        AutoFramer().feed(b"GET / HTTP/1.1\r\n")
