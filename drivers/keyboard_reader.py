"""USB HID keyboard-wedge readers (``/dev/input/event*``) → frames.

:class:`KeyTranslator` turns evdev key events into characters with a fixed US layout, keeping
shift, control, alt and caps-lock state per instance (one instance per device: a caps lock
pressed on one reader must not invert another's letters) and ignoring auto-repeat (value 2).
ENTER and keypad ENTER give CR, TAB gives TAB; Ctrl+letter and Ctrl+``[ \\ ] ^ _`` give control
characters and Alt + keypad digits give the character with that decimal code, the two ways
wedge scanners type GS (FNC1) and other control bytes.

:class:`KeyboardReader` reads one event device in a thread, grabs it (``EVIOCGRAB``) so the
keystrokes reach no console or other reader, translates and assembles frames with the same
:class:`~drivers.frames.FrameAssembler` as the serial readers, discards the partial frame (and
the rest of it) on ``SYN_DROPPED``, and survives unplug and re-plug like the serial reader.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterable

from evdev import InputDevice, ecodes

from drivers.frames import ReaderThread

log = logging.getLogger(__name__)

KEY_UP, KEY_DOWN, KEY_HOLD = 0, 1, 2
_CLOCK_SLACK_S = 5.0

_LETTERS = {getattr(ecodes, f"KEY_{c}"): c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}

# key code: (unshifted, shifted), US layout
_SYMBOLS: dict[int, tuple[str, str]] = {
    ecodes.KEY_1: ("1", "!"),
    ecodes.KEY_2: ("2", "@"),
    ecodes.KEY_3: ("3", "#"),
    ecodes.KEY_4: ("4", "$"),
    ecodes.KEY_5: ("5", "%"),
    ecodes.KEY_6: ("6", "^"),
    ecodes.KEY_7: ("7", "&"),
    ecodes.KEY_8: ("8", "*"),
    ecodes.KEY_9: ("9", "("),
    ecodes.KEY_0: ("0", ")"),
    ecodes.KEY_MINUS: ("-", "_"),
    ecodes.KEY_EQUAL: ("=", "+"),
    ecodes.KEY_LEFTBRACE: ("[", "{"),
    ecodes.KEY_RIGHTBRACE: ("]", "}"),
    ecodes.KEY_BACKSLASH: ("\\", "|"),
    ecodes.KEY_SEMICOLON: (";", ":"),
    ecodes.KEY_APOSTROPHE: ("'", '"'),
    ecodes.KEY_GRAVE: ("`", "~"),
    ecodes.KEY_COMMA: (",", "<"),
    ecodes.KEY_DOT: (".", ">"),
    ecodes.KEY_SLASH: ("/", "?"),
    ecodes.KEY_SPACE: (" ", " "),
    ecodes.KEY_102ND: ("<", ">"),  # the extra ISO key; US xkb maps it to < >
}

# Keypad keys type the same with or without shift (num lock assumed on, as wedges expect).
_KEYPAD: dict[int, str] = {getattr(ecodes, f"KEY_KP{d}"): str(d) for d in range(10)}
_KEYPAD.update(
    {
        ecodes.KEY_KPDOT: ".",
        ecodes.KEY_KPSLASH: "/",
        ecodes.KEY_KPASTERISK: "*",
        ecodes.KEY_KPMINUS: "-",
        ecodes.KEY_KPPLUS: "+",
        ecodes.KEY_KPEQUAL: "=",
        ecodes.KEY_KPCOMMA: ",",
    }
)
_KEYPAD_DIGITS = {getattr(ecodes, f"KEY_KP{d}"): d for d in range(10)}

_CONTROL_KEYS: dict[int, str] = {
    ecodes.KEY_ENTER: "\r",
    ecodes.KEY_KPENTER: "\r",
    ecodes.KEY_TAB: "\t",
}

# Ctrl + these give the C0 control characters ESC, FS, GS, RS, US.
_CTRL_SYMBOLS: dict[int, str] = {
    ecodes.KEY_LEFTBRACE: "\x1b",
    ecodes.KEY_BACKSLASH: "\x1c",
    ecodes.KEY_RIGHTBRACE: "\x1d",
    ecodes.KEY_6: "\x1e",
    ecodes.KEY_MINUS: "\x1f",
}

SHIFT_KEYS = frozenset((ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT))
CTRL_KEYS = frozenset((ecodes.KEY_LEFTCTRL, ecodes.KEY_RIGHTCTRL))
ALT_KEYS = frozenset((ecodes.KEY_LEFTALT, ecodes.KEY_RIGHTALT))
META_KEYS = frozenset((ecodes.KEY_LEFTMETA, ecodes.KEY_RIGHTMETA))
MODIFIER_KEYS = SHIFT_KEYS | CTRL_KEYS | ALT_KEYS | META_KEYS


class KeyTranslator:
    """evdev key events → characters, US layout; state is per instance (one per device)."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self.caps_lock = False
        self._alt_code: list[int] = []

    @property
    def shift(self) -> bool:
        return bool(self._held & SHIFT_KEYS)

    @property
    def ctrl(self) -> bool:
        return bool(self._held & CTRL_KEYS)

    @property
    def alt(self) -> bool:
        return bool(self._held & ALT_KEYS)

    def reset(self) -> None:
        """Forget all state (a newly plugged device: nothing held, caps lock off)."""
        self._held.clear()
        self.caps_lock = False
        self._alt_code.clear()

    def sync(self, keys_down: Iterable[int]) -> None:
        """Set the held modifiers from the device's key state (after ``SYN_DROPPED``)."""
        self._held = set(keys_down) & MODIFIER_KEYS
        self._alt_code.clear()

    def feed(self, code: int, value: int) -> str:
        """One key event (``EV_KEY`` code and value); return the characters it types, or ""."""
        if value == KEY_HOLD or value not in (KEY_UP, KEY_DOWN):
            return ""  # auto-repeat (or nonsense): a wedge never means it
        if code in MODIFIER_KEYS:
            if value == KEY_DOWN:
                self._held.add(code)
                return ""
            self._held.discard(code)
            if code in ALT_KEYS and not self.alt and self._alt_code:
                number = int("".join(map(str, self._alt_code)))
                self._alt_code.clear()
                return chr(number % 256)
            return ""
        if value != KEY_DOWN:
            return ""
        if code == ecodes.KEY_CAPSLOCK:
            self.caps_lock = not self.caps_lock
            return ""
        if self.alt:
            if code in _KEYPAD_DIGITS:
                self._alt_code.append(_KEYPAD_DIGITS[code])
            return ""  # Alt + anything else types nothing
        if self._held & META_KEYS:
            return ""
        if code in _CONTROL_KEYS:
            return _CONTROL_KEYS[code]
        if code in _LETTERS:
            letter = _LETTERS[code]
            if self.ctrl:
                return chr(ord(letter) - ord("a") + 1)
            return letter.upper() if self.shift != self.caps_lock else letter
        if self.ctrl:
            return _CTRL_SYMBOLS.get(code, "")
        if code in _SYMBOLS:
            plain, shifted = _SYMBOLS[code]
            return shifted if self.shift else plain
        return _KEYPAD.get(code, "")

    def feed_all(self, events: Iterable[tuple[int, int]]) -> str:
        """Translate a sequence of ``(code, value)`` key events."""
        return "".join(self.feed(code, value) for code, value in events)


class KeyboardReader(ReaderThread):
    """Read frames from one keyboard-wedge event device; see the module docstring.

    ``on_state`` gets "connecting", "connected", "gone" and "stopped" like the serial reader;
    a failed grab (another process holds the device) is reported in the "connected" detail.
    """

    def __init__(
        self,
        path: str,
        on_frame: Callable[[bytes], None],
        on_state: Callable[[str, str], None] | None = None,
        idle_gap_s: float = 0.15,
        grab: bool = True,
        *,
        max_len: int = 4096,
        reopen_interval_s: float = 1.0,
        wait_after_track_cr: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            path,
            on_frame,
            on_state,
            idle_gap_s=idle_gap_s,
            max_len=max_len,
            banner_window_s=0.0,  # keyboard wedges print no banner
            reopen_interval_s=reopen_interval_s,
            wait_after_track_cr=wait_after_track_cr,
            clock=clock,
        )
        self.grab = grab
        self.translator = KeyTranslator()
        #: ``SYN_DROPPED`` reports seen (the kernel's event buffer overflowed).
        self.syn_dropped = 0
        self._device: InputDevice | None = None
        self._grab_error = ""
        self._resyncing = False
        self._last_event_at = 0.0

    def _open(self) -> int:
        device = InputDevice(self.path)
        self._grab_error = ""
        if self.grab:
            try:
                device.grab()
            except OSError as exc:
                # EBUSY: someone else grabbed it. Read anyway, and say so on the status page.
                self._grab_error = f"not grabbed: {exc.strerror or exc}"
        self._device = device
        self.translator.reset()
        self._resyncing = False
        self._last_event_at = 0.0
        return device.fd

    def _connected_detail(self) -> str:
        device = self._device
        name = f" ({device.name})" if device is not None and device.name else ""
        grabbed = self._grab_error or ("grabbed" if self.grab else "not grabbed")
        return f"{self.path}{name}, {grabbed}"

    def _read(self, now: float) -> bool:
        device = self._device
        if device is None:
            raise OSError(errno.ENODEV, "device closed")
        try:
            events = list(device.read())  # OSError ENODEV once unplugged
        except BlockingIOError:
            return False
        # Event times are CLOCK_REALTIME; map them onto the monotonic clock the assembler uses,
        # so keys read in one batch keep their real spacing (never later than now, never
        # earlier than the previous event).
        offset = time.time() - now
        for event in events:
            at = event.timestamp() - offset
            if not now - _CLOCK_SLACK_S < at <= now:
                at = now  # a clock step (or a device on another clock): use the read time
            at = max(self._last_event_at, at)
            self._last_event_at = at
            if event.type == ecodes.EV_SYN:
                if event.code == ecodes.SYN_DROPPED:
                    # Events were lost: the partial frame and the rest of it are garbage, and
                    # everything up to the next SYN_REPORT is to be ignored (evdev protocol).
                    self.syn_dropped += 1
                    self.assembler.drop(now=at)
                    self._resyncing = True
                elif event.code == ecodes.SYN_REPORT and self._resyncing:
                    self._resyncing = False
                    self._resync_keys(device)
                continue
            if self._resyncing or event.type != ecodes.EV_KEY:
                continue
            text = self.translator.feed(event.code, event.value)
            if text:
                self._feed(text.encode("latin-1"), at)
        return bool(events)

    def _resync_keys(self, device: InputDevice) -> None:
        try:
            self.translator.sync(device.active_keys())
        except OSError:
            self.translator.sync(())

    def _close(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        if self.grab and not self._grab_error:
            with contextlib.suppress(OSError):  # already gone
                device.ungrab()
        device.close()
