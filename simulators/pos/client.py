"""The simulated POS's connection: the box's own POS client (`app/pos/client.py`) plus what a
simulator needs beyond one clean exchange: sequence numbering shared across connections, every
round-trip time, Passport heartbeats, and raw bytes for hostile-input tests."""

from __future__ import annotations

import time
from typing import Any

from app.pos import client as wire
from app.pos.framing import ACTION_HEARTBEAT
from simulators.pos.sequence import SHARED_COUNTER, SequenceCounter


class PosClient(wire.PosClient):
    """One persistent TCP connection to the box, as the POS keeps it."""

    def __init__(self, *args: Any, counter: SequenceCounter | None = None, **kwargs: Any) -> None:
        """The box's client's arguments (host, port, dialect, complement_crc, timeout, tls), and the
        counter that numbers this POS's messages (default: one for the whole process)."""
        super().__init__(*args, **kwargs)
        self.counter = counter or SHARED_COUNTER
        self.rtts: list[float] = []

    def send_raw(self, payload: bytes) -> bytes:
        answer = super().send_raw(payload)
        if self.last_rtt_s is not None:
            self.rtts.append(self.last_rtt_s)
        return answer

    def heartbeat(self) -> None:
        """A Passport heartbeat (action 2); the box sends no reply."""
        if self.dialect != "passport":
            raise wire.PosClientError("heartbeats are known for the Passport framing only")
        self.connect()
        self._write(self._encode(b"", ACTION_HEARTBEAT))

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes, unframed: for hostile-input tests."""
        self.connect()
        self._write(data)

    def wait_closed(self, timeout: float = 2.0) -> bool:
        """True when the box closes the connection within `timeout` (what it does to garbage)."""
        if self._sock is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv(65536):
                    self.close()
                    return True
        except TimeoutError:
            return False
        except OSError:  # a reset is a close too
            self.close()
            return True
        return False
