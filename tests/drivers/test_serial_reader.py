"""SerialReader over real pseudo-terminals (VirtualSerialReader): the real tty layer.

Where a test depends on idle gaps or the banner window, the reader runs on a `FakeClock` that
only the test moves: bytes written with a pause arrive that many seconds of the clock apart,
and a gap passes when the test says so, however slow the machine is. The others only wait for
events, or sleep as a lower bound (past a window), never as a hope that something has happened.
"""

from __future__ import annotations

import threading
import time

import pytest

from drivers.serial_reader import SerialReader
from simulators.readers.virtual import VirtualSerialReader, track2_swipe
from tests.clock import FakeClock

T1 = b"%B6000001234567894^LOYAL/JANE^2912101000000000?"
T2 = b";6000001234567894=29121010000000000000?"
WAIT = 5.0


class Capture:
    """Collects frames, banners and states from a reader's callbacks (reader thread)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frames: list[tuple[float, bytes]] = []
        self.banners: list[bytes] = []
        self.states: list[tuple[float, str, str]] = []

    def on_frame(self, frame: bytes) -> None:
        with self.cond:
            self.frames.append((time.monotonic(), frame))
            self.cond.notify_all()

    def on_banner(self, frame: bytes) -> None:
        with self.cond:
            self.banners.append(frame)
            self.cond.notify_all()

    def on_state(self, state: str, detail: str) -> None:
        with self.cond:
            self.states.append((time.monotonic(), state, detail))
            self.cond.notify_all()

    @property
    def data(self) -> list[bytes]:
        with self.cond:
            return [frame for _t, frame in self.frames]

    def wait_frames(self, count: int, timeout: float = WAIT) -> list[bytes]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.frames) >= count, timeout)
            return [frame for _t, frame in self.frames]

    def wait_state(self, state: str, after: float = 0.0, timeout: float = WAIT) -> float:
        """Wait for ``state`` reported after time ``after``; return when it was reported.

        "connected" reports that only say a banner was ignored do not count.
        """

        def reached() -> list[float]:
            return [
                t
                for t, s, d in self.states
                if s == state and t > after and not d.startswith("banner ignored")
            ]

        with self.cond:
            assert self.cond.wait_for(lambda: reached(), timeout), self.states
            return reached()[0]


def wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.fixture
def rig(tmp_path):
    """make(**reader_options) -> (virtual reader, started SerialReader, capture), connected."""
    made: list[tuple[VirtualSerialReader, SerialReader]] = []

    def make(**options):
        virtual = VirtualSerialReader(directory=tmp_path, name=f"reader{len(made)}")
        capture = Capture()
        options.setdefault("banner_window_s", 0.0)
        options.setdefault("reopen_interval_s", 0.1)
        reader = SerialReader(
            virtual.path, capture.on_frame, capture.on_state, on_banner=capture.on_banner, **options
        )
        made.append((virtual, reader))
        reader.start()
        capture.wait_state("connected")
        assert virtual.is_open()
        return virtual, reader, capture

    yield make
    for virtual, reader in made:
        reader.stop()
        virtual.close()


class Feed:
    """Writes to a virtual reader whose SerialReader runs on `clock`: each chunk is read by
    the reader before the clock moves on, so the pauses between chunks are exact."""

    def __init__(self, virtual: VirtualSerialReader, reader: SerialReader, clock: FakeClock):
        self.virtual, self.reader, self.clock = virtual, reader, clock

    def send(self, *chunks: bytes, pause_s: float = 0.0) -> None:
        """The chunks, `pause_s` of the clock apart."""
        for n, chunk in enumerate(chunks):
            if n:
                self.clock.advance(pause_s)
            before = self.reader.bytes_received
            self.virtual.send(chunk)
            assert wait_until(lambda b=before, c=chunk: self.reader.bytes_received >= b + len(c))

    def silence(self, seconds: float) -> None:
        """Nothing arrives for `seconds` of the clock (the reader sees them within its poll)."""
        self.clock.advance(seconds)


def clocked_rig(rig, **options):
    clock = FakeClock()
    virtual, reader, capture = rig(clock=clock.monotonic, **options)
    return Feed(virtual, reader, clock), reader, capture


def assert_no_more_frames(capture: Capture, feed: Feed, count: int) -> None:
    feed.silence(5.0)
    time.sleep(0.4)  # longer than any poll timeout of these readers: a wrong frame would be out
    assert len(capture.data) == count, capture.data


def test_magtek_swipe_tracks_then_one_cr(rig):
    feed, reader, capture = clocked_rig(rig)
    feed.send(T1 + T2 + b"\r")
    feed.silence(0.15)  # the idle gap a CR after a track waits for (another track could follow)
    assert capture.wait_frames(1) == [T1 + T2]
    assert_no_more_frames(capture, feed, 1)
    assert reader.state == "connected"


def test_idtech_cr_after_every_track_is_one_frame(rig):
    feed, _reader, capture = clocked_rig(rig, idle_gap_s=0.3)
    feed.send(T1 + b"\r", T2 + b"\r", pause_s=0.02)  # a pause after the CR
    feed.silence(0.3)
    assert capture.wait_frames(1) == [T1 + b"\r" + T2]
    assert_no_more_frames(capture, feed, 1)


def test_ten_ms_pause_inside_a_swipe_is_one_frame(rig):
    feed, _reader, capture = clocked_rig(rig, idle_gap_s=0.3)
    swipe = T1 + T2 + b"\r"
    cuts = [0, 20, len(T1), len(T1) + 10, len(swipe)]
    feed.send(*(swipe[a:b] for a, b in zip(cuts, cuts[1:], strict=False)), pause_s=0.01)
    feed.silence(0.3)
    assert capture.wait_frames(1) == [T1 + T2]
    assert_no_more_frames(capture, feed, 1)


def test_terminated_barcode_never_waits_for_the_idle_gap(rig):
    # The clock stands still: frames that come out at all did not wait for the 1 s idle gap.
    # (How fast they come out on real hardware: bench/reader_latency.py.)
    feed, _reader, capture = clocked_rig(rig, idle_gap_s=1.0)
    for n in range(5):
        feed.send(b"]E02900001234566\r")
        assert capture.wait_frames(n + 1) == [b"]E02900001234566"] * (n + 1)


def test_sign_on_banner_after_open_is_never_a_frame(rig):
    feed, reader, capture = clocked_rig(rig, banner_window_s=1.0)
    feed.silence(0.15)  # as a port-powered MagTek does
    feed.send(b"21088817A01\r")
    assert wait_until(lambda: capture.banners)
    assert capture.banners == [b"21088817A01"]
    assert any("banner ignored" in d and "21088817A01" in d for _t, _s, d in capture.states)
    assert reader.banners == 1
    # After the window a swipe is a frame.
    feed.silence(1.0)
    feed.send(T2 + b"\r")
    feed.silence(0.15)
    assert capture.wait_frames(1) == [T2]
    assert capture.banners == [b"21088817A01"]


def test_noise_without_terminator_is_dropped_and_the_reader_keeps_working(rig):
    feed, reader, capture = clocked_rig(rig, idle_gap_s=0.2)
    noise = bytes((i * 37 + 11) % 94 + 33 for i in range(5000))  # printable, no CR/LF/TAB
    assert not set(noise) & {0x02, 0x03, 0x09, 0x0A, 0x0D}
    feed.send(noise)  # read in several pieces, but at one moment of the clock
    assert_no_more_frames(capture, feed, 0)  # neither the head nor the tail comes out
    assert reader.dropped == 1
    assert reader.state == "connected"
    feed.send(T2 + b"\r")
    feed.silence(0.2)
    assert capture.wait_frames(1) == [T2]


def test_partial_frame_then_silence_comes_out_after_the_idle_gap(rig):
    virtual, _reader, capture = rig(idle_gap_s=0.3)
    sent = time.monotonic()
    virtual.swipe(b"%B60000012345")
    assert capture.wait_frames(1) == [b"%B60000012345"]  # the decoder rejects it as partial
    assert capture.frames[0][0] - sent >= 0.3 * 0.9


def test_unplug_mid_frame_drops_it_and_replug_brings_the_reader_back(rig):
    virtual, reader, capture = rig(idle_gap_s=1.0, reopen_interval_s=0.1)
    virtual.swipe(b"%B600000123")
    assert wait_until(lambda: reader.bytes_received >= 11)
    virtual.unplug()
    gone_at = capture.wait_state("gone")
    assert reader.state == "gone"
    time.sleep(1.3)  # longer than the idle gap: the partial frame must not come out
    assert capture.data == []
    virtual.replug()
    capture.wait_state("connected", after=gone_at)
    assert wait_until(virtual.is_open)
    virtual.swipe(b"]E02900001234566\r")
    assert capture.wait_frames(1) == [b"]E02900001234566"]
    assert reader.connects == 2
    assert reader.state == "connected"


def test_one_reader_through_everything_without_a_restart(rig):
    feed, reader, capture = clocked_rig(
        rig, idle_gap_s=0.3, banner_window_s=0.5, reopen_interval_s=0.1
    )
    virtual = feed.virtual
    feed.silence(0.1)
    feed.send(b"21088817A01\r")  # the sign-on banner
    assert wait_until(lambda: reader.banners == 1)
    feed.silence(0.7)  # past the banner window
    expected = []
    feed.send(T1 + b"\r", T2 + b"\r", pause_s=0.01)  # ID TECH
    feed.silence(0.3)
    expected.append(T1 + b"\r" + T2)
    assert capture.wait_frames(len(expected)) == expected
    feed.send(T1 + T2 + b"\r")  # MagTek-style after ID TECH-style: waits the gap, one frame
    feed.silence(0.3)
    expected.append(T1 + T2)
    assert capture.wait_frames(len(expected)) == expected
    feed.send(bytes(65 + i % 26 for i in range(5000)))  # noise
    assert reader.dropped == 1
    feed.silence(0.7)
    feed.send(b"]C0LOY-AB12CD34\r")
    expected.append(b"]C0LOY-AB12CD34")
    assert capture.wait_frames(len(expected)) == expected
    feed.send(b";6000")  # partial, then silence
    feed.silence(0.3)
    expected.append(b";6000")
    assert capture.wait_frames(len(expected)) == expected
    feed.send(b"%B6000")  # unplugged mid-frame
    virtual.unplug()
    gone_at = capture.wait_state("gone")
    virtual.replug()
    capture.wait_state("connected", after=gone_at)
    feed.silence(0.7)  # past the banner window of the reopened port
    feed.send(track2_swipe("6000001234567894"))
    feed.silence(0.3)
    expected.append(b";6000001234567894=4912101?")
    assert capture.wait_frames(len(expected)) == expected
    assert reader.dropped == 1
    assert reader.banners == 1


def test_a_reader_absent_at_start_is_found_when_plugged_in(tmp_path):
    capture = Capture()
    path = str(tmp_path / "later")
    reader = SerialReader(path, capture.on_frame, capture.on_state, reopen_interval_s=0.1)
    reader.start()
    try:
        capture.wait_state("gone")
        assert "cannot open" in reader.detail
        with VirtualSerialReader(path) as virtual:
            capture.wait_state("connected")
            assert wait_until(virtual.is_open)
            time.sleep(0.6)  # past the default 0.5 s banner window
            virtual.swipe(b"]E02900001234566\r")
            assert capture.wait_frames(1) == [b"]E02900001234566"]
    finally:
        reader.stop()
    assert reader.state == "stopped"


def test_stop_closes_the_port_and_reports_stopped(rig):
    virtual, reader, capture = rig()
    reader.stop()
    assert capture.states[-1][1:] == ("stopped", "")
    assert wait_until(lambda: not virtual.is_open())
    reader.stop()  # twice is harmless


def test_a_second_reader_on_the_same_port_is_refused(rig):
    virtual, _reader, _capture = rig()
    capture = Capture()
    other = SerialReader(virtual.path, capture.on_frame, capture.on_state, reopen_interval_s=0.2)
    other.start()
    try:
        capture.wait_state("gone")
        assert "cannot open" in other.detail
    finally:
        other.stop()
