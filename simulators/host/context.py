"""What the reference host's routes share: its store, policy, key, config, clock and faults."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulators.host.policy import PolicySource
from simulators.host.store import HostStore

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimState:
    """The `/_sim/fault` setting and the files published under `/_sim/files/`, shared by the
    request threads."""

    mode: str = "ok"
    seconds: float = 0.0
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, Path] = field(default_factory=dict)
    downloads: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range)

    def set(self, mode: str, seconds: float) -> None:
        with self.lock:
            self.mode, self.seconds = mode, seconds

    def current(self) -> tuple[str, float]:
        with self.lock:
            return self.mode, self.seconds


@dataclass
class HostContext:
    store: HostStore
    policies: PolicySource
    private_key: Ed25519PrivateKey
    key_id: str
    config: dict[str, Any]
    clock: Clock
    sim: SimState
