"""The box's status: one snapshot, built from the parts' own snapshots.

The page, `/api/status`, `/metrics`, the heartbeat and the mDNS verdict all read `status()`;
`serving()` is the cheap answer of `/healthz` and of an update's health check. The source reads
only the parts it is given; it changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from app import __version__
from app.journal import Journal
from app.logs import mask_id
from app.network.manager import NetworkManager
from app.network.mdns import Announcer
from app.network.static import FixedAddress
from app.offline.policy import PolicyManager
from app.outbox import Outbox
from app.pos.server import PosServer
from app.pos.service import LoyaltyService
from app.pos.sessions import SessionStore
from app.readers import ReaderService
from app.retention import Retention
from provisioning.link import HostLink

RECENT_TRANSACTIONS = 15


class Status(Protocol):
    """What the status page and remote management read."""

    def status(self) -> dict[str, Any]: ...

    def serving(self) -> bool: ...


@dataclass(frozen=True)
class StatusSource:
    started_at: float
    os_image: dict[str, Any]
    pos: PosServer
    sessions: SessionStore
    service: LoyaltyService  # who the box is (its identity) and the request counters
    link: HostLink
    outbox: Outbox
    journal: Journal
    retention: Retention
    policies: PolicyManager
    readers: ReaderService
    network: NetworkManager
    fixed_address: FixedAddress
    # Made after this source, because they read it: the announcer publishes the verdict (and is
    # built at start, once the ports are known), remote management's heartbeat reports it.
    announcer: Callable[[], Announcer | None]
    management: Callable[[], dict[str, Any]]

    def serving(self) -> bool:
        return self.pos.running

    def status(self) -> dict[str, Any]:
        announcer = self.announcer()
        return {
            "version": __version__,
            "os": self.os_image,
            "uptime_s": round(time.time() - self.started_at),
            "device_id": self.service.identity.device_id,
            "site_id": self.service.identity.site_id,
            "pos": {**self.pos.snapshot(), "open_sessions": len(self.sessions)},
            "host": self.link.snapshot(),
            "counters": self.service.counters.snapshot(),
            "outbox": self.outbox.snapshot(),
            "journal": {
                "recovered_from": self.journal.recovered_from,
                **self.journal.stats(),
                **self.retention.snapshot(),
            },
            "policy": self.policies.snapshot(),
            "readers": self.readers.snapshot(),
            "recent_transactions": recent_transactions(self.journal),
            "network": {**self.network.snapshot(), "setting": self.fixed_address.snapshot()},
            "mdns": announcer.snapshot() if announcer else None,
            **self.management(),
        }


def recent_transactions(journal: Journal) -> list[dict[str, Any]]:
    """The last events as the status page shows them: loyalty IDs masked, no basket."""
    recent = []
    for event in journal.recent_events(RECENT_TRANSACTIONS):
        body = event.body
        loyalty = body.get("loyalty_id") or {}
        applied = body.get("rewards_applied") or []
        recent.append(
            {
                "at": event.created_at,
                "event": event.kind,
                "register_id": (body.get("pos") or {}).get("register_id"),
                "masked_id": mask_id(loyalty.get("value")),
                "origin": (body.get("decision") or {}).get("origin"),
                "discount": str(sum(Decimal(str(r.get("amount", "0"))) for r in applied)),
                "delivery": event.state,
            }
        )
    return recent
