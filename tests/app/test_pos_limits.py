"""The frame deadline clock, the log throttle and the [pos] keys that bound a peer."""

from __future__ import annotations

import pytest

from app.config import ConfigError, parse_config
from app.pos.limits import FrameClock, LogThrottle, skipped_note

HOST = {"url": "https://host.example", "device_id": "D-1", "site_id": "S-1", "token": "t"}


def test_between_frames_the_idle_timeout_applies():
    clock = FrameClock(frame_deadline_s=5, idle_timeout_s=900)
    assert clock.wait_s(now=100.0) == 900 and not clock.in_frame()
    clock.fed(pending_before=0, received=40, pending_after=0, at=100.0)  # a whole frame
    assert clock.wait_s(now=101.0) == 900


def test_the_deadline_counts_from_the_first_byte_not_the_latest():
    clock = FrameClock(frame_deadline_s=5, idle_timeout_s=900)
    clock.fed(pending_before=0, received=1, pending_after=1, at=100.0)
    clock.fed(pending_before=1, received=1, pending_after=2, at=103.0)  # still the same frame
    assert clock.in_frame() and clock.wait_s(now=103.0) == pytest.approx(2.0)
    assert clock.wait_s(now=105.5) < 0


def test_a_read_that_completes_a_frame_starts_the_next_ones_clock():
    clock = FrameClock(frame_deadline_s=5, idle_timeout_s=900)
    clock.fed(pending_before=0, received=10, pending_after=10, at=100.0)
    # The rest of that frame and the start of the next arrive together at 104.
    clock.fed(pending_before=10, received=50, pending_after=7, at=104.0)
    assert clock.wait_s(now=104.0) == pytest.approx(5.0)


def test_the_idle_timeout_bounds_a_long_deadline():
    clock = FrameClock(frame_deadline_s=60, idle_timeout_s=10)
    clock.fed(pending_before=0, received=1, pending_after=1, at=100.0)
    assert clock.wait_s(now=100.0) == 10


def test_the_log_throttle_allows_a_burst_then_counts_what_it_left_out(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("app.pos.limits.time.monotonic", lambda: now[0])
    throttle = LogThrottle(burst=2, every_s=1.0)
    assert [throttle.allow() for _ in range(5)] == [(True, 0), (True, 0)] + [(False, 0)] * 3
    now[0] += 1.0
    assert throttle.allow() == (True, 3)
    assert skipped_note(3) == " (3 more not logged)" and skipped_note(0) == ""


def test_pos_bound_keys_defaults_and_values():
    config = parse_config({"host": HOST})
    assert (config.pos.frame_deadline_s, config.pos.max_connections) == (5.0, 64)
    config = parse_config({"host": HOST, "pos": {"frame_deadline_s": 2.5, "max_connections": 8}})
    assert (config.pos.frame_deadline_s, config.pos.max_connections) == (2.5, 8)


@pytest.mark.parametrize(
    "pos, message",
    [
        ({"frame_deadline_s": 0.5}, r"\[pos\] frame_deadline_s: must be a number from 1 to 60"),
        ({"frame_deadline_s": "5"}, r"\[pos\] frame_deadline_s: must be a number"),
        ({"max_connections": 0}, r"\[pos\] max_connections: must be a whole number from 1 to 4096"),
        ({"max_connections": 2.5}, r"\[pos\] max_connections: must be a whole number"),
    ],
)
def test_pos_bound_keys_out_of_range_name_the_key(pos, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"host": HOST, "pos": pos})
