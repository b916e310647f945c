"""The POS's side of the box's POS port: one TCP connection, the real framing, bounded waits.

The technician's test sale (`app/pos/test_sale.py`) plays it against the box's own port; the
POS simulator builds on it. Requests are framed as Passport or a Verifone EPS frames them
(`app/pos/framing.py`), written by `xmlcodec.write_request`, and every answer is checked the way
a strict POS checks it. Each exchange is bounded by `timeout` in total, whatever the box does.
With `tls` (a context from `app/pos/tls.py`) the connection is TLS, the framing inside the same.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections import deque
from typing import Self

from app.pos.framing import (
    ACTION_MESSAGE,
    EpsFramer,
    Frame,
    FramingError,
    PassportFramer,
    encode_eps,
    encode_passport,
)
from app.pos.model import Request, Response
from app.pos.xmlcodec import XmlError, parse_xml, read_response, write_request

DIALECTS = ("passport", "eps")


class PosClientError(Exception):
    """The box is unreachable or answered something a POS would reject."""


class PosClient:
    """One persistent TCP connection to the box, as the POS keeps it."""

    def __init__(
        self,
        host: str,
        port: int,
        dialect: str = "passport",
        complement_crc: bool = False,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r} (use passport or eps)")
        self.host = host
        self.port = port
        self.dialect = dialect
        self.complement_crc = complement_crc
        self.timeout = timeout
        self.tls = tls
        self.last_rtt_s: float | None = None
        self.last_payload: bytes | None = None  # the last response payload, as received
        self._sock: socket.socket | None = None
        self._framer: PassportFramer | EpsFramer | None = None
        self._frames: deque[Frame] = deque()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def framer(self) -> PassportFramer | EpsFramer | None:
        """The framer of the current connection (it records the CRC form the box answered in)."""
        return self._framer

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise PosClientError(
                f"cannot connect to the box at {self.address}: {_reason(exc)}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except (OSError, ValueError) as exc:  # ssl.SSLError, a timeout, a reset
                sock.close()
                raise PosClientError(
                    f"TLS handshake with the box at {self.address} failed: {_reason(exc)}"
                ) from None
        self._sock = sock
        self._framer = PassportFramer() if self.dialect == "passport" else EpsFramer()
        self._frames.clear()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, request: Request) -> Response:
        """Send one request and return the box's answer, checked as a strict POS checks it."""
        payload = self.send_raw(write_request(request, self.dialect))
        expected = f"{request.stem}Response"
        try:
            root = parse_xml(payload)
            response = read_response(payload)
        except XmlError as exc:
            raise PosClientError(f"unreadable answer to {request.stem}Request: {exc}") from None
        name = root.tag.rsplit("}", 1)[-1] if isinstance(root.tag, str) else "?"
        if name != expected:
            raise PosClientError(f"answer to {request.stem}Request is named {name}, not {expected}")
        sent, got = request.header.pos_sequence_id, response.header.pos_sequence_id
        if got != sent:
            raise PosClientError(
                f"{expected} carries POSSequenceID {got!r}, the request had {sent!r}"
            )
        return response

    def send_raw(self, payload: bytes) -> bytes:
        """Frame `payload` as a message, send it and return the payload of the answer frame."""
        self.connect()
        started = time.monotonic()
        try:
            self._write(self._encode(payload, ACTION_MESSAGE))
            answer = self._read_payload(started + self.timeout)
        except PosClientError:
            self.close()  # the stream's state is unknown now: the next call reconnects
            raise
        self.last_rtt_s = time.monotonic() - started
        self.last_payload = answer
        return answer

    def _encode(self, payload: bytes, action: int) -> bytes:
        if self.dialect == "eps":
            return encode_eps(payload)
        return encode_passport(payload, action, self.complement_crc)

    def _write(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise PosClientError(
                f"cannot send to the box at {self.address}: {_reason(exc)}"
            ) from None

    def _read_payload(self, deadline: float) -> bytes:
        """The next message frame; heartbeats from the box (none are expected) are skipped."""
        assert self._sock is not None and self._framer is not None
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if not frame.heartbeat:
                    return frame.payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise PosClientError(f"no answer from the box within {self.timeout:g} s")
            try:
                self._sock.settimeout(left)
                data = self._sock.recv(65536)
            except TimeoutError:
                raise PosClientError(f"no answer from the box within {self.timeout:g} s") from None
            except OSError as exc:
                raise PosClientError(f"connection to the box lost: {_reason(exc)}") from None
            if not data:
                raise PosClientError("the box closed the connection without answering")
            try:
                self._frames.extend(self._framer.feed(data))
            except FramingError as exc:
                raise PosClientError(f"badly framed answer from the box: {exc}") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
