"""Serial card readers: a USB-serial or CDC-ACM tty (``/dev/ttyUSB*``, ``/dev/ttyACM*``) → frames.

One :class:`SerialReader` per tty path. The port is opened in raw mode by pyserial (no CR→LF
translation, no echo, no flow control) with DTR and RTS raised, because port-powered MagTek
readers take their power from those lines. A reader thread waits with ``poll()`` on the port and
on the frame assembler's idle-gap deadline, so a terminated frame reaches ``on_frame`` a few
milliseconds after its last byte (a magstripe frame ending ``?`` CR waits one idle gap for a
possible next ID TECH track).

A frame that starts within ``banner_window_s`` after the port opens is the reader's sign-on
banner (MagTek prints its firmware id about 150 ms after open): it is reported, never handed on.
A vanished device (EOF, ``SerialException``, ENODEV/EIO) drops the partial frame, sets the state
to "gone", and the thread retries the same path every ``reopen_interval_s``: re-plugging the
reader brings it back without a restart. Point ``path`` at a stable udev name
(``/dev/connectbox/serial-...``) so a re-plugged reader is found under the same path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import serial

from drivers.frames import ReaderThread

log = logging.getLogger(__name__)

_READ_SIZE = 4096


class SerialReader(ReaderThread):
    """Read frames from one serial port; see the module docstring."""

    def __init__(
        self,
        path: str,
        on_frame: Callable[[bytes], None],
        on_state: Callable[[str, str], None] | None = None,
        baudrate: int = 9600,
        dtr: bool = True,
        rts: bool = True,
        idle_gap_s: float = 0.15,
        banner_window_s: float = 0.5,
        reopen_interval_s: float = 1.0,
        *,
        max_len: int = 4096,
        on_banner: Callable[[bytes], None] | None = None,
        wait_after_track_cr: bool = True,
        exclusive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            path,
            on_frame,
            on_state,
            idle_gap_s=idle_gap_s,
            max_len=max_len,
            banner_window_s=banner_window_s,
            reopen_interval_s=reopen_interval_s,
            on_banner=on_banner,
            wait_after_track_cr=wait_after_track_cr,
            clock=clock,
        )
        self.baudrate = int(baudrate)
        self.dtr = bool(dtr)
        self.rts = bool(rts)
        self.exclusive = exclusive
        self._port: serial.Serial | None = None

    def _open(self) -> int:
        # Configure everything before open(): pyserial applies DTR/RTS while opening (so a
        # port-powered reader never sees the lines drop) and ignores EINVAL/ENOTTY there, which
        # is what a pseudo-terminal answers. timeout=0: reads never block; poll() does the waiting.
        port = serial.Serial(
            None,
            self.baudrate,
            timeout=0,
            dsrdtr=False,
            rtscts=False,
            xonxoff=False,
            exclusive=self.exclusive or None,
        )
        port.dtr = self.dtr
        port.rts = self.rts
        port.port = self.path
        port.open()  # raises SerialException (an OSError) if absent, busy or not a tty
        self._port = port
        return port.fileno()

    def _read(self, now: float) -> bool:
        port = self._port
        if port is None:
            raise OSError("port closed")
        # With timeout=0 this returns what is buffered; a disconnected device reports readiness
        # and returns nothing, which pyserial raises as SerialException; EIO likewise.
        data = port.read(_READ_SIZE)
        if data:
            self._feed(data, now)
        return bool(data)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def _connected_detail(self) -> str:
        lines = f"DTR {'on' if self.dtr else 'off'}, RTS {'on' if self.rts else 'off'}"
        return f"{self.path} at {self.baudrate} baud, {lines}"
