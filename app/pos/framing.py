"""Frames on the POS socket: Passport's 28-byte POSLOYALTY header and Verifone EPS's length prefix.

A framer is fed raw bytes as they arrive and hands back complete frames. Anything that shows the
stream is out of sync (bad signature, a header CRC that matches neither form, a payload CRC
mismatch, an absurd length) raises `FramingError`: the connection is then closed, never guessed at.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"POSLOYALTY\x00\x00"
PASSPORT_HEADER = struct.Struct("<12sIIII")  # signature, action, length, payload CRC, header CRC
ACTION_MESSAGE = 1
ACTION_HEARTBEAT = 2
EPS_HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1024 * 1024


class FramingError(Exception):
    """The byte stream cannot be trusted any more; close the connection."""


@dataclass(frozen=True)
class Frame:
    payload: bytes
    heartbeat: bool = False


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


class PassportFramer:
    """Passport framing. Remembers which CRC form the peer uses and answers in the same one."""

    dialect = "passport"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.complemented_crc = False  # True when the peer sends the bitwise complement
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= PASSPORT_HEADER.size:
            header = bytes(self._buffer[: PASSPORT_HEADER.size])
            signature, action, length, payload_crc, header_crc = PASSPORT_HEADER.unpack(header)
            if signature != SIGNATURE:
                raise FramingError(f"bad signature {signature[:12]!r}: stream out of sync")
            expected = crc32(header[:24])
            if header_crc == expected:
                self.complemented_crc = False
            elif header_crc == expected ^ 0xFFFFFFFF:
                self.complemented_crc = True
            else:
                raise FramingError(f"header CRC mismatch (got {header_crc:#010x})")
            if length > self.max_frame:
                raise FramingError(f"frame length {length} over the {self.max_frame}-byte limit")
            end = PASSPORT_HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[PASSPORT_HEADER.size : end])
            del self._buffer[:end]
            actual = crc32(payload)
            if payload_crc not in (actual, actual ^ 0xFFFFFFFF):
                raise FramingError(f"payload CRC mismatch (got {payload_crc:#010x})")
            if action == ACTION_HEARTBEAT:
                frames.append(Frame(payload, heartbeat=True))
            elif action == ACTION_MESSAGE:
                frames.append(Frame(payload))
            else:
                # Action codes beyond 1 and 2 are undocumented: keep the stream, skip the frame.
                frames.append(Frame(payload, heartbeat=True))
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def encode(self, payload: bytes, action: int = ACTION_MESSAGE) -> bytes:
        return encode_passport(payload, action, self.complemented_crc)


def encode_passport(
    payload: bytes, action: int = ACTION_MESSAGE, complemented: bool = False
) -> bytes:
    flip = 0xFFFFFFFF if complemented else 0
    head = struct.pack("<12sIII", SIGNATURE, action, len(payload), crc32(payload) ^ flip)
    return head + struct.pack("<I", crc32(head) ^ flip) + payload


class EpsFramer:
    """Verifone EPS framing: a 4-byte big-endian payload length, then the payload."""

    dialect = "eps"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= EPS_HEADER.size:
            (length,) = EPS_HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise FramingError(f"frame length {length} over the {self.max_frame}-byte limit")
            end = EPS_HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(bytes(self._buffer[EPS_HEADER.size : end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def encode(self, payload: bytes) -> bytes:
        return encode_eps(payload)


def encode_eps(payload: bytes) -> bytes:
    return EPS_HEADER.pack(len(payload)) + payload


Framer = PassportFramer | EpsFramer


class AutoFramer:
    """Tells the dialects apart from the first bytes of a connection, then delegates."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.inner: Framer | None = None
        self._buffer = bytearray()

    @property
    def dialect(self) -> str | None:
        return self.inner.dialect if self.inner else None

    def feed(self, data: bytes) -> list[Frame]:
        if self.inner is not None:
            return self.inner.feed(data)
        self._buffer += data
        head = bytes(self._buffer[: len(SIGNATURE)])
        if SIGNATURE.startswith(head):
            if len(head) < len(SIGNATURE):
                return []  # could still be Passport: wait for the whole signature
            self.inner = PassportFramer(self.max_frame)
        elif self._buffer[0] == 0:
            # An EPS length prefix below 16 MiB starts with a zero byte; Passport starts with 'P'.
            self.inner = EpsFramer(self.max_frame)
        else:
            raise FramingError(f"unknown framing, first bytes {bytes(self._buffer[:8])!r}")
        buffered, self._buffer = bytes(self._buffer), bytearray()
        return self.inner.feed(buffered)

    @property
    def pending(self) -> int:
        return self.inner.pending if self.inner else len(self._buffer)

    def encode(self, payload: bytes) -> bytes:
        if self.inner is None:
            raise FramingError("no frame received yet: dialect unknown")
        return self.inner.encode(payload)


def make_framer(
    dialect: str, max_frame: int = DEFAULT_MAX_FRAME
) -> PassportFramer | EpsFramer | AutoFramer:
    if dialect == "passport":
        return PassportFramer(max_frame)
    if dialect == "eps":
        return EpsFramer(max_frame)
    if dialect == "auto":
        return AutoFramer(max_frame)
    raise ValueError(f"unknown dialect {dialect!r}")
