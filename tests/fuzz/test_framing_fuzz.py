"""Framers under any byte stream in any chunking: frames or FramingError, bounded buffers, and
exact round trips in both Passport CRC forms and EPS."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from app.pos.framing import (
    ACTION_HEARTBEAT,
    ACTION_MESSAGE,
    EPS_HEADER,
    PASSPORT_HEADER,
    SIGNATURE,
    AutoFramer,
    EpsFramer,
    FramingError,
    PassportFramer,
    crc32,
    encode_eps,
    encode_passport,
    make_framer,
)
from tests.fuzz.corpus import frame_seeds
from tests.fuzz.strategies import fuzz_settings, timed

MAX_FRAME = 96  # small, so the length checks and partial frames are reached often
HEADER = {"passport": PASSPORT_HEADER.size, "eps": EPS_HEADER.size, "auto": PASSPORT_HEADER.size}


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """data split at the given offsets (taken modulo its length), in order."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


@st.composite
def passport_headers(draw) -> bytes:
    """A Passport header with any action and length, its CRCs right, complemented or wrong."""
    action = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)))
    length = draw(
        st.one_of(st.integers(0, MAX_FRAME + 2), st.sampled_from([2**31, 2**32 - 1, 64 << 20]))
    )
    payload = draw(st.binary(max_size=min(length, MAX_FRAME + 2)))
    form = draw(st.sampled_from(["plain", "complement", "wrong"]))
    flip = 0xFFFFFFFF if form == "complement" else 0
    payload_crc = draw(st.sampled_from([crc32(payload) ^ flip, draw(st.integers(0, 2**32 - 1))]))
    head = struct.pack("<12sIII", SIGNATURE, action, length, payload_crc)
    head_crc = crc32(head) ^ flip if form != "wrong" else draw(st.integers(0, 2**32 - 1))
    return head + struct.pack("<I", head_crc) + payload


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, byte in edits:
        if out:
            out[at % len(out)] = byte
    return bytes(out)


streams = st.one_of(
    st.binary(max_size=600),
    st.lists(passport_headers(), max_size=4).map(b"".join),
    st.lists(st.binary(max_size=MAX_FRAME + 8).map(encode_eps), max_size=6).map(b"".join),
    st.builds(
        _mutate,
        st.lists(st.sampled_from(frame_seeds()), min_size=1, max_size=3).map(b"".join),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    ),
    st.builds(lambda a, b: a + b, st.sampled_from(frame_seeds()), st.binary(max_size=64)),
)


@fuzz_settings(400)
@given(
    dialect=st.sampled_from(["passport", "eps", "auto"]),
    data=streams,
    cuts=st.lists(st.integers(0, 10**6), max_size=12),
)
def test_any_stream_in_any_chunking_gives_frames_or_framing_error(dialect, data, cuts):
    framer = make_framer(dialect, MAX_FRAME)
    limit = MAX_FRAME + HEADER[dialect]
    try:
        for chunk in chunked(data, cuts):
            frames = timed(framer.feed, chunk)
            assert all(len(frame.payload) <= MAX_FRAME for frame in frames)
            assert framer.pending <= limit, f"buffer holds {framer.pending} bytes"
    except FramingError:
        pass  # the connection is closed: the expected end of a hostile stream


@fuzz_settings(200)
@given(data=streams, cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_default_limits_keep_the_buffer_bounded(data, cuts):
    framer = make_framer("auto")
    try:
        for chunk in chunked(data, cuts):
            timed(framer.feed, chunk)
            assert framer.pending <= framer.max_frame + PASSPORT_HEADER.size
    except FramingError:
        pass


@fuzz_settings(300)
@given(
    frames=st.lists(
        st.tuples(
            st.binary(max_size=MAX_FRAME),
            st.sampled_from([ACTION_MESSAGE, ACTION_HEARTBEAT]),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 10**6), max_size=20),
    auto=st.booleans(),
)
def test_passport_frames_round_trip_in_both_crc_forms(frames, cuts, auto):
    stream = b"".join(encode_passport(p, action, flip) for p, action, flip in frames)
    framer = AutoFramer(MAX_FRAME) if auto else PassportFramer(MAX_FRAME)
    got = []
    for chunk in chunked(stream, cuts):
        got += framer.feed(chunk)
    assert [(f.payload, f.heartbeat) for f in got] == [
        (payload, action == ACTION_HEARTBEAT) for payload, action, _ in frames
    ]
    assert framer.pending == 0
    inner = framer.inner if auto else framer
    # The framer answers in the CRC form the peer used last.
    assert inner.complemented_crc is frames[-1][2]
    reply = inner.encode(b"<x/>")
    assert PassportFramer(MAX_FRAME).feed(reply)[0].payload == b"<x/>"


@fuzz_settings(300)
@given(
    payloads=st.lists(st.binary(max_size=MAX_FRAME), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 10**6), max_size=20),
    auto=st.booleans(),
)
def test_eps_frames_round_trip(payloads, cuts, auto):
    stream = b"".join(encode_eps(p) for p in payloads)
    framer = AutoFramer(MAX_FRAME) if auto else EpsFramer(MAX_FRAME)
    got = []
    for chunk in chunked(stream, cuts):
        got += framer.feed(chunk)
    assert [f.payload for f in got] == payloads
    assert not any(f.heartbeat for f in got)
    assert framer.pending == 0
    assert framer.dialect == "eps"


@fuzz_settings(200)
@given(
    seeds=st.lists(st.sampled_from(frame_seeds()), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10**6), max_size=30),
)
def test_real_messages_round_trip_at_the_default_limit(seeds, cuts):
    """Captured requests framed as the POS frames them come back whole, whatever the chunking.
    (Seeds of one dialect per stream: a connection never switches framing.)"""
    dialect_of = {True: "passport", False: "eps"}
    first = seeds[0].startswith(SIGNATURE)
    same = [s for s in seeds if s.startswith(SIGNATURE) == first]
    framer = make_framer("auto")
    got = []
    for chunk in chunked(b"".join(same), cuts):
        got += framer.feed(chunk)
    header = PASSPORT_HEADER.size if first else EPS_HEADER.size
    assert [f.payload for f in got] == [s[header:] for s in same]
    assert framer.dialect == dialect_of[first]
