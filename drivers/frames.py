"""Transport bytes → frames, and the reader thread that the serial and HID readers share.

A swipe or a scan arrives as a burst of bytes. :class:`FrameAssembler` cuts the stream into frames
(see ``cards.md``, "Transport → frames"):

* a frame ends at a terminator (CR, LF, CR LF, TAB; ETX when the frame began with STX) or when
  ``idle_gap_s`` passes without a byte;
* in a magstripe frame (first byte one of ``% ; + # ! & @``) a CR or LF right after an end
  sentinel ``?`` (or after ``?`` and one LRC byte) is *soft*: ID TECH readers send a CR after every
  track, so the frame ends there only when the idle gap passes without another start sentinel;
  a new start sentinel continues the same frame (the inner CR stays in the frame);
* a PDF417 barcode (``]L``, e.g. an AAMVA driver licence) carries LF and CR inside its data, so it
  ends at the idle gap (or ETX), never at a CR or LF;
* in any other frame (barcodes with an AIM identifier ``]...`` or plain text) a terminator ends the
  frame at once: no waiting;
* beyond ``max_len`` bytes the frame is dropped (``dropped`` counts it) and everything up to the
  next terminator or idle gap is discarded too, so the dropped data never comes out as a frame.

Frames come out with their trailing CR/LF/TAB stripped; STX and ETX (and inner CRs between
magstripe tracks) are left in for the decoder. Empty frames (a lone terminator) never come out.

The assembler does no I/O and reads no clock: the caller passes ``now`` (``time.monotonic()``),
which makes it testable without devices. :class:`ReaderThread` is the I/O side shared by
``serial_reader.SerialReader`` and ``keyboard_reader.KeyboardReader``: one thread per device,
state reporting, a sign-on banner window, and reopening a vanished device every
``reopen_interval_s`` until it comes back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
TAB = 0x09
LF = 0x0A
CR = 0x0D
END_SENTINEL = ord("?")
#: Magstripe start sentinels: track 1 ``%``, track 2 ``;``, track 3 ``+ # ! & @`` (cards.md).
MAGSTRIPE_START = frozenset(b"%;+#!&@")
TERMINATORS = frozenset((CR, LF, TAB))
_TRAILING = b"\r\n\t"


class Frame(NamedTuple):
    """A completed frame with the times (``now`` values) of its first and last byte."""

    data: bytes
    first_byte_at: float
    last_byte_at: float


class FrameAssembler:
    """Cut a byte stream into frames at terminators, idle gaps and a length cap.

    ``feed(data, now)`` returns the frames that ``data`` completed; ``poll(now)`` returns the
    pending frame once ``idle_gap_s`` has passed since its last byte; ``deadline()`` says when
    ``poll`` next needs calling. ``wait_after_track_cr=False`` makes a CR after ``?`` end a
    magstripe frame at once (for readers known to send one CR after all tracks, like MagTek).
    """

    def __init__(
        self,
        idle_gap_s: float = 0.15,
        max_len: int = 4096,
        *,
        wait_after_track_cr: bool = True,
    ) -> None:
        if not idle_gap_s > 0:
            raise ValueError("idle_gap_s must be positive")
        if max_len < 1:
            raise ValueError("max_len must be at least 1")
        self.idle_gap_s = float(idle_gap_s)
        self.max_len = int(max_len)
        self.wait_after_track_cr = wait_after_track_cr
        #: Frames dropped for exceeding ``max_len``.
        self.dropped = 0
        #: Frames handed out.
        self.frames = 0
        self._buf = bytearray()
        self._first: float | None = None
        self._last: float | None = None  # last byte seen, kept or discarded
        self._discarding = False  # after an overflow or drop(now): until a terminator or gap
        self._soft_end = False  # buffer ends "?" CR: ends at the gap unless a sentinel follows
        # Learned from the reader's own swipes: one CR per swipe (MagTek) or per track (ID TECH).
        self._single_cr = False
        self._cr_per_track = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """True while a partial frame is held."""
        return bool(self._buf)

    @property
    def discarding(self) -> bool:
        """True while resynchronising after an overflow or ``drop(now)``."""
        return self._discarding

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Add bytes that arrived at ``now``; return the frames they completed, in order."""
        return [frame.data for frame in self.feed_frames(data, now)]

    def poll(self, now: float) -> bytes | None:
        """Return the pending frame if ``idle_gap_s`` has passed since its last byte."""
        frame = self.poll_frame(now)
        return frame.data if frame is not None else None

    def drop(self, now: float | None = None) -> None:
        """Discard the partial frame (unplug, ``SYN_DROPPED``).

        With ``now``, also discard what follows up to the next terminator or idle gap: after lost
        input (``SYN_DROPPED``) the rest of a frame is a fragment that must not pass for a frame.
        """
        self._buf.clear()
        self._first = None
        self._soft_end = False
        if now is None:
            self._discarding = False
        else:
            self._discarding = True
            self._last = now

    def deadline(self) -> float | None:
        """The ``now`` at which ``poll`` will end the pending frame (or the resync), if any."""
        if (self._buf or self._discarding) and self._last is not None:
            return self._last + self.idle_gap_s
        return None

    def feed_frames(self, data: bytes, now: float) -> list[Frame]:
        """Like :meth:`feed`, with each frame's first- and last-byte times."""
        out: list[Frame] = []
        gap_frame = self.poll_frame(now)
        if gap_frame is not None:
            out.append(gap_frame)
        for byte in data:
            self._byte(byte, now, out)
        return [frame for frame in out if frame.data]

    def poll_frame(self, now: float) -> Frame | None:
        """Like :meth:`poll`, with the frame's first- and last-byte times."""
        if self._last is None or now < self._last + self.idle_gap_s:  # same sum as deadline()
            return None
        self._discarding = False
        if self._buf:
            frame = self._emit()
            return frame if frame.data else None
        return None

    # -- internals ----------------------------------------------------------------------------

    def _byte(self, byte: int, now: float, out: list[Frame]) -> None:
        previous, self._last = self._last, now
        if self._discarding:
            if byte in TERMINATORS or byte == ETX:
                self._discarding = False  # resynchronised
            return
        buf = self._buf
        if not buf:
            if byte in TERMINATORS:
                return  # a lone terminator (the LF of CR LF after a frame): nothing
            self._first = now
            buf.append(byte)
            return
        first = buf[0]
        if first == STX:
            # STX ... ETX: terminators inside are data, ETX ends the frame at once.
            if self._append(byte) and byte == ETX:
                out.append(self._emit())
            return
        if self._soft_end:
            if byte in (CR, LF):
                self._append(byte)  # CR LF, CR CR: still waiting for a sentinel or the gap
                return
            if byte in MAGSTRIPE_START:
                self._soft_end = False  # ID TECH: the next track of the same swipe
                self._cr_per_track = True  # seen it: never take a CR after `?` as final
                self._single_cr = False
                self._append(byte)
                return
            out.append(self._emit(last=previous))  # anything else: the swipe ended at the CR
            if byte != TAB:
                self._first = now
                self._buf.append(byte)
            return
        if byte in TERMINATORS:
            if first == ord("]") and len(buf) >= 2 and buf[1] == ord("L"):
                self._append(byte)  # PDF417 (AAMVA): LF/CR are data, the gap ends it
                return
            if first in MAGSTRIPE_START and not self._cr_per_track and self._tracks_joined():
                # Tracks back to back with no CR between them: this reader (MagTek) sends
                # one CR per swipe, so its CR is final now and for its later swipes too.
                self._single_cr = True
            if (
                self.wait_after_track_cr
                and not self._single_cr
                and first in MAGSTRIPE_START
                and byte != TAB
                and self._after_end_sentinel()
            ):
                self._soft_end = True  # ID TECH: maybe another track follows within the gap
                self._append(byte)
                return
            out.append(self._emit())
            return
        self._append(byte)

    def forget_reader_style(self) -> None:
        """Unlearn one-CR-per-swipe versus CR-per-track (a new device on this port)."""
        self._single_cr = self._cr_per_track = False

    def _tracks_joined(self) -> bool:
        """A `?` (or `?` and its LRC byte) followed directly by another track's start sentinel."""
        buf = self._buf
        return any(
            buf[i] in MAGSTRIPE_START
            and (buf[i - 1] == END_SENTINEL or (i >= 2 and buf[i - 2] == END_SENTINEL))
            for i in range(1, len(buf))
        )

    def _after_end_sentinel(self) -> bool:
        buf = self._buf
        return buf[-1] == END_SENTINEL or (len(buf) >= 2 and buf[-2] == END_SENTINEL)

    def _append(self, byte: int) -> bool:
        if len(self._buf) >= self.max_len:
            self.dropped += 1
            self._buf.clear()
            self._first = None
            self._soft_end = False
            self._discarding = byte not in TERMINATORS and byte != ETX
            return False
        self._buf.append(byte)
        return True

    def _emit(self, last: float | None = None) -> Frame:
        data = bytes(self._buf).rstrip(_TRAILING)
        if last is None:
            last = self._last if self._last is not None else 0.0
        first = self._first if self._first is not None else last
        frame = Frame(data, first, last)
        self._buf.clear()
        self._first = None
        self._soft_end = False
        if data:
            self.frames += 1
        return frame


def describe_frame(data: bytes, limit: int = 40) -> str:
    """A log-safe description of a frame: text only if it does not look like card data.

    Card data (magstripe sentinels, AIM barcodes, STX framing) can hold licence numbers, names
    and addresses, which must never reach a log; a firmware banner is shown as text.
    """
    if not data:
        return "0 bytes"
    if data[0] in MAGSTRIPE_START or data[0] in (ord("]"), STX):
        return f"{len(data)} bytes (card-like data withheld)"
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:limit])
    more = "..." if len(data) > limit else ""
    return f"{text!r}{more} ({len(data)} bytes)"


class ReaderThread:
    """One device, one thread: open, read, assemble frames, report state, reopen when it vanishes.

    Subclasses implement ``_open() -> int`` (the file descriptor to wait on), ``_read(now)``
    (called when the descriptor is readable; feeds bytes through ``_feed``; raises ``OSError``
    when the device has vanished) and ``_close()``.

    States (``on_state(state, detail)``): "connecting" (started, first attempt), "connected",
    "gone" (absent or vanished; retried every ``reopen_interval_s``), "stopped". A state is
    reported when it or its detail changes, so a reader that stays unplugged is reported once.
    Frames whose first byte arrives within ``banner_window_s`` after the port opened are sign-on
    banners: reported through ``on_banner`` (if given) and ``on_state("connected", "banner
    ignored: ...")``, never through ``on_frame``. Callbacks run in the reader thread; an exception
    in a callback is logged and does not stop the reader.
    """

    def __init__(
        self,
        path: str,
        on_frame: Callable[[bytes], None],
        on_state: Callable[[str, str], None] | None = None,
        *,
        idle_gap_s: float = 0.15,
        max_len: int = 4096,
        banner_window_s: float = 0.0,
        reopen_interval_s: float = 1.0,
        on_banner: Callable[[bytes], None] | None = None,
        wait_after_track_cr: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        # The time bytes arrive at (idle gaps, the banner window). Tests pass a clock they move
        # by hand, so a slow machine cannot stretch a gap; reopening waits in real time.
        self.clock = clock
        self.on_frame = on_frame
        self.on_state = on_state
        self.on_banner = on_banner
        self.banner_window_s = float(banner_window_s)
        self.reopen_interval_s = float(reopen_interval_s)
        self.assembler = FrameAssembler(
            idle_gap_s, max_len, wait_after_track_cr=wait_after_track_cr
        )
        self.state = "stopped"
        self.detail = ""
        #: Counters for a status page: bytes read, frames handed on, banners ignored, reconnects.
        self.bytes_received = 0
        self.frames_delivered = 0
        self.banners = 0
        self.connects = 0
        self._opened_at = 0.0
        self._reported: tuple[str, str] | None = None
        self._stop = threading.Event()
        # Guards _thread and the wake pipe: start, stop and the thread's exit may race.
        self._life = threading.RLock()
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1

    @property
    def dropped(self) -> int:
        """Frames dropped for exceeding the length cap."""
        return self.assembler.dropped

    def start(self) -> None:
        """Start the thread; a stopped reader may be started again."""
        with self._life:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("reader already started")
            self._stop.clear()
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_r, False)
            self._wake_r, self._wake_w = wake_r, wake_w
            self._set_state("connecting", self.path)
            thread = threading.Thread(
                target=self._run, args=(wake_r, wake_w), name=f"reader {self.path}", daemon=True
            )
            thread.start()
            # Published only once started: a concurrent stop() never joins an unstarted thread.
            self._thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the device; returns once it has stopped (or ``timeout``).

        Safe to call at any time, from any thread, any number of times."""
        with self._life:
            thread = self._thread
            if thread is None:
                return
            self._stop.set()
            if self._wake_w >= 0:  # the thread closes the pipe under this lock as it ends
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
        if thread is threading.current_thread():
            return  # called from a callback: the thread ends when the callback returns
        thread.join(timeout)
        if thread.is_alive():
            log.warning("reader %s did not stop within %.1f s", self.path, timeout)
            return
        with self._life:
            if self._thread is thread:
                self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- subclass hooks -----------------------------------------------------------------------

    def _open(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, now: float) -> bool:  # pragma: no cover - abstract
        """Read what is available; return whether anything was read."""
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _connected_detail(self) -> str:
        return self.path

    # -- the thread ---------------------------------------------------------------------------

    def _run(self, wake_r: int, wake_w: int) -> None:
        try:
            while not self._stop.is_set():
                try:
                    fd = self._open()
                except OSError as exc:
                    self._set_state("gone", f"cannot open {self.path}: {_reason(exc)}")
                    if self._stop.wait(self.reopen_interval_s):
                        break
                    continue
                self._opened_at = self.clock()
                self.connects += 1
                self.assembler.forget_reader_style()  # another reader may be plugged in now
                self._set_state("connected", self._connected_detail())
                try:
                    self._pump(fd, wake_r)
                except OSError as exc:
                    self.assembler.drop()  # the partial frame of a vanished device is lost
                    self._set_state("gone", f"{self.path} vanished: {_reason(exc)}")
                finally:
                    self._safe_close()
                if self._stop.wait(self.reopen_interval_s):
                    break
        except Exception:  # a bug: say so rather than die silently
            log.exception("reader %s failed", self.path)
            self._safe_close()
        finally:
            self.assembler.drop()
            self._close_wake_pipe(wake_r, wake_w)
            self._set_state("stopped", "")

    def _close_wake_pipe(self, wake_r: int, wake_w: int) -> None:
        # Closed by the thread that used it, under the lock stop() writes under: a stop() can
        # never write into a descriptor number that has since been reused for another file.
        with self._life:
            if self._wake_r == wake_r:
                self._wake_r = self._wake_w = -1
            for fd in (wake_r, wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _pump(self, fd: int, wake_r: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        poller.register(wake_r, select.POLLIN)
        assembler = self.assembler
        while not self._stop.is_set():
            deadline = assembler.deadline()
            if deadline is None:
                timeout_ms = None
            else:
                timeout_ms = max(0, math.ceil((deadline - self.clock()) * 1000))
            events = poller.poll(timeout_ms)
            now = self.clock()
            for ready_fd, mask in events:
                if ready_fd == wake_r:
                    _drain(wake_r)
                elif ready_fd == fd:
                    got = self._read(now)
                    if not got and mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        raise OSError(errno.EIO, "device hung up")
            if self._stop.is_set():
                return
            frame = assembler.poll_frame(self.clock())
            if frame is not None:
                self._deliver(frame)

    def _feed(self, data: bytes, now: float) -> None:
        """Subclasses hand read bytes (arrived at ``now``) here."""
        self.bytes_received += len(data)
        for frame in self.assembler.feed_frames(data, now):
            self._deliver(frame)

    def _deliver(self, frame: Frame) -> None:
        if not frame.data:
            return
        if (
            self.banner_window_s > 0
            and frame.first_byte_at - self._opened_at < self.banner_window_s
        ):
            self.banners += 1
            self._set_state("connected", f"banner ignored: {describe_frame(frame.data)}")
            if self.on_banner is not None:
                _call(self.on_banner, frame.data)
            return
        self.frames_delivered += 1
        _call(self.on_frame, frame.data)

    def _safe_close(self) -> None:
        try:
            self._close()
        except Exception:  # closing a vanished device may fail in odd ways
            log.debug("closing %s", self.path, exc_info=True)

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        self.detail = detail
        if self._reported == (state, detail):
            return
        self._reported = (state, detail)
        log.info("reader %s: %s %s", self.path, state, detail)
        if self.on_state is not None:
            _call(self.on_state, state, detail)


def _call(callback: Callable[..., object], *args: object) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("reader callback %r failed", callback)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except BlockingIOError:
        pass


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text
