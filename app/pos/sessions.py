"""Per-transaction sessions, keyed by the LoyaltySequenceID the box assigns.

A session remembers the full loyalty ID (so masked or truncated repeats resolve to it), the
age check, and the rewards the POS was last told about (so a recomputation can remove rewards
that no longer apply and keep ids stable). Sessions expire after `ttl_s` of silence.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.pos.model import Reward


@dataclass
class Session:
    session_id: str
    register_id: str | None = None
    pos_transaction_id: str | None = None
    loyalty_id: str | None = None
    entry_method: str = ""
    loyalty_source: str = "pos"  # pos, or reader when a reader at the box read it
    age_verified: bool | None = None
    granted: dict[str, Reward] = field(default_factory=dict)
    """The rewards the POS was last told to apply, by reward id."""
    amounts: dict[str, Decimal] = field(default_factory=dict)
    """The currency each granted reward takes off."""
    dropped: list[dict[str, str]] = field(default_factory=list)
    """Host rewards of the latest decision the POS could not be given (the finalize event's
    `rewards_dropped`)."""
    last_body: str | None = None
    """The last /v1/rewards body as JSON, the base of a cancel event (text: a tenth of the
    memory of the dict, and up to 500 sessions may be open)."""
    decision: dict[str, Any] = field(default_factory=dict)
    """Who decided the current rewards: {"origin": host|offline, "policy_version", "rule"}."""
    touched: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 500) -> None:
        self.ttl_s = ttl_s
        # A site has a few registers: thousands of open transactions mean a POS that never
        # finalizes; the oldest are forgotten first so memory stays bounded.
        self.max_sessions = max_sessions
        # Least recently opened first: `open` moves a session to the end as it touches it, so
        # expiry and eviction take from the front instead of scanning every session.
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, session_id: str) -> Session:
        """The session of a LoyaltySequenceID; a new one (new id) when the id is empty."""
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id) if session_id else None
            if session is None:
                # Keep the POS's id when it sends one we lost (restart): the transaction goes on.
                session = Session(session_id=session_id or self._new_id())
                self._sessions[session.session_id] = session
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(session.session_id)
            session.touched = time.monotonic()
            return session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            self._expire()
            return self._sessions.get(session_id) if session_id else None

    def drop(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _new_id(self) -> str:
        while True:
            candidate = "CB" + secrets.token_hex(5).upper()
            if candidate not in self._sessions:
                return candidate

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.touched >= cutoff:
                return
            del self._sessions[oldest.session_id]
