"""KeyTranslator (pure), KeyboardReader's event handling, and a real uinput keyboard wedge."""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass

import pytest
from evdev import ecodes as e

from drivers.keyboard_reader import KeyboardReader, KeyTranslator

DOWN, UP, HOLD = 1, 0, 2


def press(code: int) -> list[tuple[int, int]]:
    return [(code, DOWN), (code, UP)]


def shifted(code: int, shift: int = e.KEY_LEFTSHIFT) -> list[tuple[int, int]]:
    return [(shift, DOWN), (code, DOWN), (code, UP), (shift, UP)]


def _keymap() -> dict[str, tuple[int, bool]]:
    """Character → (key code, shift) for the US layout, found by asking the translator."""
    table: dict[str, tuple[int, bool]] = {}
    for code in range(1, 128):
        for shift in (False, True):
            translator = KeyTranslator()
            if shift:
                translator.feed(e.KEY_LEFTSHIFT, DOWN)
            char = translator.feed(code, DOWN)
            if len(char) == 1 and char not in table:
                table[char] = (code, shift)
    return table


KEYMAP = _keymap()


def typing(text: str) -> list[tuple[int, int]]:
    events: list[tuple[int, int]] = []
    for char in text:
        code, shift = KEYMAP[char]
        events += shifted(code) if shift else press(code)
    return events


def test_letters_digits_and_shift():
    t = KeyTranslator()
    assert t.feed_all(press(e.KEY_A) + press(e.KEY_1) + shifted(e.KEY_A) + press(e.KEY_Z)) == "a1Az"
    assert t.feed_all(shifted(e.KEY_B, e.KEY_RIGHTSHIFT)) == "B"
    assert not t.shift


@pytest.mark.parametrize(
    ("events", "text"),
    [
        (shifted(e.KEY_5), "%"),
        (press(e.KEY_SEMICOLON), ";"),
        (shifted(e.KEY_SLASH), "?"),
        (shifted(e.KEY_6), "^"),
        (press(e.KEY_EQUAL), "="),
        (press(e.KEY_SLASH), "/"),
        (shifted(e.KEY_EQUAL), "+"),
        (shifted(e.KEY_3), "#"),
        (shifted(e.KEY_1), "!"),
        (shifted(e.KEY_7), "&"),
        (shifted(e.KEY_2), "@"),
        (press(e.KEY_RIGHTBRACE), "]"),
        (press(e.KEY_MINUS), "-"),
        (shifted(e.KEY_SEMICOLON), ":"),
        (press(e.KEY_SPACE), " "),
        (press(e.KEY_ENTER), "\r"),
        (press(e.KEY_KPENTER), "\r"),
        (press(e.KEY_TAB), "\t"),
        (press(e.KEY_KP7) + press(e.KEY_KPMINUS), "7-"),
    ],
)
def test_us_layout_punctuation_and_control_keys(events, text):
    assert KeyTranslator().feed_all(events) == text


def test_a_whole_magstripe_swipe():
    swipe = "%B6000001234567894^LOYAL/JANE^2912?;6000001234567894=2912?\r"
    assert KeyTranslator().feed_all(typing(swipe)) == swipe


def test_caps_lock_inverts_letters_only_and_is_per_instance():
    first, second = KeyTranslator(), KeyTranslator()
    first.feed_all(press(e.KEY_CAPSLOCK))
    assert first.caps_lock and not second.caps_lock
    assert first.feed_all(press(e.KEY_A) + press(e.KEY_1) + shifted(e.KEY_B)) == "A1b"
    assert second.feed_all(press(e.KEY_A) + press(e.KEY_1)) == "a1"
    first.feed_all(press(e.KEY_CAPSLOCK))
    assert first.feed_all(press(e.KEY_A)) == "a"


def test_shift_is_per_instance():
    first, second = KeyTranslator(), KeyTranslator()
    first.feed(e.KEY_LEFTSHIFT, DOWN)
    assert first.feed_all(press(e.KEY_5)) == "%"
    assert second.feed_all(press(e.KEY_5)) == "5"


def test_autorepeat_is_ignored():
    t = KeyTranslator()
    events = [(e.KEY_A, DOWN), (e.KEY_A, HOLD), (e.KEY_A, HOLD), (e.KEY_A, UP)]
    assert t.feed_all(events) == "a"
    # A repeat of shift changes nothing either.
    events = [(e.KEY_LEFTSHIFT, DOWN), (e.KEY_LEFTSHIFT, HOLD), (e.KEY_5, DOWN)]
    assert t.feed_all(events + [(e.KEY_5, UP), (e.KEY_LEFTSHIFT, UP)]) == "%"
    assert t.feed_all(press(e.KEY_5)) == "5"


def test_key_releases_and_unknown_keys_type_nothing():
    t = KeyTranslator()
    assert t.feed(e.KEY_A, UP) == ""
    assert t.feed_all(press(e.KEY_F1) + press(e.KEY_ESC) + press(e.KEY_LEFT)) == ""
    assert t.feed(e.KEY_A, 7) == ""


def test_ctrl_and_alt_codes_type_control_characters():
    t = KeyTranslator()
    ctrl = [(e.KEY_LEFTCTRL, DOWN)]
    assert t.feed_all(ctrl + press(e.KEY_RIGHTBRACE) + [(e.KEY_LEFTCTRL, UP)]) == "\x1d"
    assert t.feed_all(ctrl + press(e.KEY_M) + [(e.KEY_LEFTCTRL, UP)]) == "\r"
    alt = [(e.KEY_LEFTALT, DOWN)] + press(e.KEY_KP0) + press(e.KEY_KP2) + press(e.KEY_KP9)
    assert t.feed_all(alt + [(e.KEY_LEFTALT, UP)]) == "\x1d"
    assert t.feed_all(press(e.KEY_A)) == "a"


def test_reset_and_sync():
    t = KeyTranslator()
    t.feed_all([(e.KEY_LEFTSHIFT, DOWN)] + press(e.KEY_CAPSLOCK))
    t.sync([e.KEY_A])  # after SYN_DROPPED: shift is no longer held
    assert not t.shift and t.caps_lock
    t.sync([e.KEY_RIGHTSHIFT])
    assert t.shift
    t.reset()
    assert not t.shift and not t.caps_lock


# -- KeyboardReader's event handling, with a stand-in device (no /dev/uinput needed) ----------


@dataclass
class FakeEvent:
    type: int
    code: int
    value: int
    at: float

    def timestamp(self) -> float:
        return self.at


class FakeDevice:
    def __init__(self) -> None:
        self.batches: list[list[FakeEvent]] = []
        self.keys_down: list[int] = []

    def read(self):
        if not self.batches:
            raise BlockingIOError(errno.EAGAIN, "no events")
        return iter(self.batches.pop(0))

    def active_keys(self):
        return self.keys_down


def key_events(text: str, start: float, step: float = 0.001) -> list[FakeEvent]:
    events = []
    t = start
    for code, value in typing(text):
        events.append(FakeEvent(e.EV_KEY, code, value, t))
        events.append(FakeEvent(e.EV_SYN, e.SYN_REPORT, 0, t))
        t += step
    return events


def fake_reader():
    frames: list[bytes] = []
    reader = KeyboardReader("/dev/input/fake", frames.append)
    device = FakeDevice()
    reader._device = device
    return reader, device, frames


def test_keys_become_frames():
    reader, device, frames = fake_reader()
    now = time.time()
    device.batches.append(key_events("]C0LOY-AB12\r", now - 0.05))
    assert reader._read(time.monotonic())
    assert frames == [b"]C0LOY-AB12"]
    assert not reader._read(time.monotonic())  # nothing more to read


def test_syn_dropped_discards_the_partial_frame_and_its_rest():
    reader, device, frames = fake_reader()
    now = time.time() - 1.0
    events = key_events(";60000", now)
    events.append(FakeEvent(e.EV_SYN, e.SYN_DROPPED, 0, now + 0.1))
    events.append(FakeEvent(e.EV_KEY, e.KEY_1, DOWN, now + 0.1))  # ignored until SYN_REPORT
    events.append(FakeEvent(e.EV_SYN, e.SYN_REPORT, 0, now + 0.1))
    events += key_events("1234567894=2912?\r", now + 0.11)  # the rest of the damaged swipe
    events += key_events("]E02900001234566\r", now + 0.2)
    device.keys_down = [e.KEY_LEFTSHIFT]
    device.batches.append(events)
    reader._read(time.monotonic())
    assert frames == [b"]E02900001234566"]
    assert reader.syn_dropped == 1


def test_batched_events_keep_their_real_spacing():
    # Two swipes read in one batch but typed 0.5 s apart are two frames, not one.
    reader, device, frames = fake_reader()
    now = time.time() - 1.0
    device.batches.append(key_events("]C0AB", now) + key_events("]C0CD\r", now + 0.5))
    reader._read(time.monotonic())
    assert frames == [b"]C0AB", b"]C0CD"]


def test_an_absent_device_is_gone_and_stop_works(tmp_path):
    states: list[tuple[str, str]] = []
    reader = KeyboardReader(
        str(tmp_path / "event99"), lambda f: None, lambda s, d: states.append((s, d))
    )
    reader.reopen_interval_s = 0.05
    reader.start()
    deadline = time.monotonic() + 5
    while not any(s == "gone" for s, _ in states) and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.stop()
    assert [s for s, _ in states] == ["connecting", "gone", "stopped"]


# -- a real keyboard wedge through /dev/uinput -------------------------------------------------


def _uinput_problem() -> str | None:
    if not os.path.exists("/dev/uinput"):
        return "/dev/uinput does not exist on this machine (no uinput module); runs in the image"
    if not os.access("/dev/uinput", os.W_OK):
        return "/dev/uinput is not writable by this user; runs in the image"
    return None


@pytest.mark.skipif(_uinput_problem() is not None, reason=str(_uinput_problem()))
def test_real_input_events_through_uinput_become_frames():
    from evdev import UInput

    codes = sorted({code for code, _shift in KEYMAP.values()} | {e.KEY_LEFTSHIFT})
    cond = threading.Condition()
    frames: list[bytes] = []
    states: list[str] = []

    def on_frame(frame: bytes) -> None:
        with cond:
            frames.append(frame)
            cond.notify_all()

    def on_state(state: str, _detail: str) -> None:
        with cond:
            states.append(state)
            cond.notify_all()

    ui = UInput({e.EV_KEY: codes}, name="connectbox test wedge", vendor=0x0801, product=0x0001)
    try:
        if ui.device is None:
            pytest.skip("uinput made a device but its /dev/input node was not found")
        path = ui.device.path
        reader = KeyboardReader(path, on_frame, on_state, idle_gap_s=0.3, reopen_interval_s=0.1)
        reader.start()
        try:
            with cond:
                assert cond.wait_for(lambda: "connected" in states, 5), states
            time.sleep(0.2)
            swipe = "%B6000001234567894^LOYAL/JANE^2912?;6000001234567894=2912?\r"
            for code, value in typing(swipe) + typing("]C0LOY-AB12\r"):
                ui.write(e.EV_KEY, code, value)
                ui.syn()
                time.sleep(0.001)
            expected = [swipe[:-1].encode(), b"]C0LOY-AB12"]
            with cond:
                assert cond.wait_for(lambda: len(frames) >= 2, 5), frames
            assert frames == expected
            ui.close()  # unplug
            with cond:
                assert cond.wait_for(lambda: "gone" in states, 5), states
        finally:
            reader.stop()
    finally:
        ui.close()
