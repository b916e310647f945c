"""Virtual serial card readers over real pseudo-terminals, for tests, the demo and technicians.

A :class:`VirtualSerialReader` is the far end of a pseudo-terminal pair: a
:class:`~drivers.serial_reader.SerialReader` opens its ``path`` exactly like a USB tty and gets
the real tty layer (raw mode, buffering, hang-up on unplug). ``path`` is a symlink to the current
pty slave, so an unplug and re-plug, which makes a new pty, keeps the same ``path``, as a udev
``/dev/connectbox/...`` link does for a real reader.

Bytes are written with real pauses (``swipe(data, gaps=[(n, seconds)])``), a MagTek sign-on
banner can be sent, and ``unplug()`` closes the master so the reader sees the hang-up (EIO/EOF).
``wait_for_open()`` tells when a reader has opened the port: a pty master reports POLLHUP while
no process holds the slave open (the same trick as socat's ``wait-slave``).
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import tempfile
import threading
import time
import tty

MAGTEK_BANNER = b"21088817A01\r"


class VirtualSerialReader:
    """A pseudo-terminal reader at a stable ``path`` (a symlink to the current pty slave).

    ``path`` (or ``directory``/``name``) chooses the symlink; with neither, a private temporary
    directory is made and removed by ``close()``. An existing symlink at ``path`` (a stale one
    from an earlier run) is replaced; anything else there is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        name: str = "reader",
    ) -> None:
        self._tmpdir: str | None = None
        if path is None:
            if directory is None:
                directory = self._tmpdir = tempfile.mkdtemp(prefix="connectbox-vreader-")
            path = os.path.join(os.fspath(directory), name)
        self.path = os.fspath(path)
        if os.path.lexists(self.path) and not os.path.islink(self.path):
            raise FileExistsError(errno.EEXIST, "exists and is not a symlink", self.path)
        self._lock = threading.Lock()
        self._master: int | None = None
        #: The current pty slave (``/dev/pts/N``), None while unplugged.
        self.slave_name: str | None = None
        self.plugs = 0
        self._plug()

    # -- plugging -----------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def _plug(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # the far end: no CR→LF, no echo (pyserial sets this again)
            slave_name = os.ttyname(slave)
        finally:
            os.close(slave)  # only the reader holds the slave: wait_for_open() sees it open
        tmp = f"{self.path}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(slave_name, tmp)
        os.replace(tmp, self.path)  # atomic: the path never points nowhere while plugged
        with self._lock:
            self._master = master
            self.slave_name = slave_name
            self.plugs += 1

    def unplug(self) -> None:
        """Pull the cable: close the master (the reader's reads fail) and remove the link."""
        with self._lock:
            master, self._master = self._master, None
            self.slave_name = None
        if master is None:
            return
        if os.path.islink(self.path):
            os.unlink(self.path)
        os.close(master)

    def replug(self) -> None:
        """Plug in again (a new pty behind the same ``path``); unplugs first if plugged."""
        self.unplug()
        self._plug()

    def close(self) -> None:
        """Unplug and remove the link (and the temporary directory, if this object made it)."""
        self.unplug()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> VirtualSerialReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the reader side ----------------------------------------------------------------------

    def is_open(self) -> bool:
        """True while some process (a SerialReader) has the port open."""
        master = self._master
        if master is None:
            return False
        poller = select.poll()
        poller.register(master, select.POLLIN)
        events = poller.poll(0)
        return not any(mask & select.POLLHUP for _fd, mask in events)

    def wait_for_open(self, timeout: float = 5.0) -> bool:
        """Wait until a reader opens the port; False if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_open():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- sending ------------------------------------------------------------------------------

    def swipe(self, data: bytes, gaps: list[tuple[int, float]] | None = None) -> None:
        """Send ``data`` as the reader would; ``gaps`` pauses the sending.

        Each ``(n, seconds)`` in ``gaps`` pauses for ``seconds`` after the first ``n`` bytes
        have been sent (after byte number ``n`` counting from 1), e.g. ``[(40, 0.01)]`` for the
        10 ms pause a port-powered MagTek makes inside a swipe.
        """
        data = bytes(data)
        position = 0
        for n, pause in sorted(gaps or []):
            if not 0 <= n <= len(data):
                raise ValueError(f"gap after byte {n} is outside the {len(data)}-byte swipe")
            self._write(data[position:n])
            position = max(position, n)
            time.sleep(pause)
        self._write(data[position:])

    def send(self, data: bytes) -> None:
        """Send bytes at once (no pauses)."""
        self._write(bytes(data))

    def send_banner(self, text: bytes = MAGTEK_BANNER, delay_s: float = 0.0) -> None:
        """Send a sign-on banner, as port-powered MagTek readers do ~150 ms after the open."""
        if delay_s > 0:
            time.sleep(delay_s)
        self._write(bytes(text))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            master = self._master
            if master is None:
                raise OSError(errno.ENODEV, "virtual reader is unplugged", self.path)
            written = os.write(master, view)
            view = view[written:]


def track2_swipe(loyalty_id: str, *, expiry: str = "4912", service_code: str = "101") -> bytes:
    """The bytes a swipe of a track-2-only loyalty card sends: ``;ID=YYMMsss?`` and CR."""
    if not loyalty_id.isdigit() or not 1 <= len(loyalty_id) <= 19:
        raise ValueError("a track 2 ID is 1 to 19 digits")
    return f";{loyalty_id}={expiry}{service_code}?\r".encode("ascii")
