"""The signed offline policy: fetched with the device config, verified, kept on disk.

The box decides GetRewards locally only from a policy the provider signed for this site that has
not expired (host-api.md, `config.policy`). A policy that fails any check is never used: the
previous valid one stays until it expires, and the reason is kept for the status page.

The last valid policy is written to `state_path` atomically (temp file, fsync, rename, fsync of
the directory) so a power cut leaves either the old or the new file, never half of one, and a box
that restarts while the host is down still has its policy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from app.money import parse_decimal
from app.programs.ids import check_programs
from app.programs.policy import PolicyError, verify_policy
from provisioning.api import HostClient, HostError
from provisioning.rfc3339 import parse_rfc3339
from provisioning.store import write_json_atomic

log = logging.getLogger("connectbox.policy")

MAX_CLOCK_SKEW_S = 120.0
"""Box clock vs the host's `Date`: beyond this, offline discounts stop (dates can't be trusted)."""

REFRESH_JITTER = 0.1  # +-10 % so a fleet restarted together does not poll in step

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OfflineLimits:
    """`offline_limits` of a policy document; None means the policy sets no such limit."""

    max_offline_hours: float | None = None
    max_offline_transactions: int | None = None
    max_offline_discount_total: Decimal | None = None
    max_discount_per_transaction: Decimal | None = None


def parse_limits(doc: dict[str, Any]) -> OfflineLimits:
    """The document's offline limits; ValueError when one is present but not usable."""
    limits = doc.get("offline_limits")
    if limits is None:
        return OfflineLimits()
    if not isinstance(limits, dict):
        raise ValueError("offline_limits is not an object")
    return OfflineLimits(
        max_offline_hours=_number(limits.get("max_offline_hours"), "max_offline_hours"),
        max_offline_transactions=_count(
            limits.get("max_offline_transactions"), "max_offline_transactions"
        ),
        max_offline_discount_total=_money(
            limits.get("max_offline_discount_total"), "max_offline_discount_total"
        ),
        max_discount_per_transaction=_money(
            limits.get("max_discount_per_transaction"), "max_discount_per_transaction"
        ),
    )


def subscription_end(doc: dict[str, Any]) -> date | None:
    """`subscription_valid_until` as a date; None when the policy sets no end."""
    value = doc.get("subscription_valid_until")
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"subscription_valid_until is not a date: {value!r}") from None


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"offline_limits.{name} is not a non-negative number")
    return float(value)


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"offline_limits.{name} is not a non-negative integer")
    return value


def _money(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    amount = parse_decimal(value) if isinstance(value, str) else None
    if amount is None or amount < 0:
        raise ValueError(f"offline_limits.{name} is not a non-negative decimal string")
    return amount


@dataclass(frozen=True)
class _Held:
    """A policy that passed verification (at install time), with the dates parsed once."""

    signed: dict[str, Any]
    doc: dict[str, Any]
    etag: str | None
    issued_at: datetime | None
    expires_at: datetime
    config: dict[str, Any] | None = None  # the whole device config the policy came with


class PolicyManager:
    def __init__(
        self,
        client: HostClient,
        trusted_keys: dict[str, str],
        site_id: str,
        state_path: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        paused: Callable[[], bool] = lambda: False,
        clock_check: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.clock_check = clock_check  # why the clock cannot be trusted yet (app/clock.py)
        self.paused = paused  # True while the device token is refused: no calls with it
        self.on_config: Callable[[dict[str, Any]], None] | None = None
        """Told the device config (heartbeat interval, reader bindings...) when one is accepted."""
        self.client = client
        self.trusted_keys = dict(trusted_keys)
        self.site_id = site_id
        self.state_path = Path(state_path)
        self.clock = clock
        self.refused: str | None = None
        """Why the latest policy offered (by the host, or the saved file) is not used."""
        self.last_error: str | None = None
        """Why the latest config request failed (None after a good answer)."""
        self.last_refresh_at: datetime | None = None
        """When the host last answered a config request (200 or 304)."""
        self.clock_skew_s: float | None = None
        """Box clock minus the host's `Date` at the latest answer; positive: the box is ahead."""
        self._held: _Held | None = None
        self._refreshing = threading.Lock()  # the thread and a sync_config command may race
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._load()

    # The policy in force.

    def current(self) -> dict[str, Any] | None:
        """The verified policy document in force now; None without one or once it expired."""
        held = self._held
        if held is None or held.expires_at <= self._now():
            return None
        return held.doc

    def latest(self) -> dict[str, Any] | None:
        """The last verified document even if it has expired since (for saying "expired")."""
        held = self._held
        return held.doc if held else None

    def clock_problem(self) -> str | None:
        """Why offline discounts must stop because of the box clock; None when it looks right."""
        unset = self.clock_check()
        if unset:
            return unset
        skew = self.clock_skew_s
        if skew is not None and abs(skew) > MAX_CLOCK_SKEW_S:
            side = "ahead of" if skew > 0 else "behind"
            return (
                f"the box clock is {abs(skew):.0f} s {side} the host's clock (more than "
                f"{MAX_CLOCK_SKEW_S:.0f} s): offline discounts stop until the time is corrected"
            )
        held = self._held
        now = self._now()
        # Same grace as the skew: a box a few seconds behind a freshly issued policy is fine.
        if held and held.issued_at and (held.issued_at - now).total_seconds() > MAX_CLOCK_SKEW_S:
            return (
                f"the box clock ({now.isoformat(timespec='seconds')}) is before the policy's "
                f"issue time ({held.doc.get('issued_at')}): offline discounts stop until the "
                "time is corrected"
            )
        return None

    def snapshot(self) -> dict[str, Any]:
        """For the status page and the heartbeat."""
        held = self._held
        doc = held.doc if held else {}
        refreshed = self.last_refresh_at
        return {
            "policy_version": doc.get("policy_version"),
            "issued_at": doc.get("issued_at"),
            "expires_at": doc.get("expires_at"),
            "key_id": held.signed.get("key_id") if held else None,
            "in_force": self.current() is not None,
            "refused": self.refused,
            "last_error": self.last_error,
            "last_refresh_at": refreshed.isoformat(timespec="seconds") if refreshed else None,
            "clock_skew_s": self.clock_skew_s,
            "clock_problem": self.clock_problem(),
        }

    # Refreshing from the host.

    def sync_now(self) -> tuple[bool, str]:
        """The provider's `sync_config` command: fetch now; (ok, what happened)."""
        installed = self.refresh()
        if self.last_error:
            return False, f"config not fetched: {self.last_error}"
        if self.refused:
            return False, f"config refused: {self.refused}"
        current = self.current()
        version = current.get("policy_version") if current else None
        return True, ("new policy installed" if installed else "config unchanged") + (
            f" (policy {version})" if version is not None else ""
        )

    def refresh(self) -> bool:
        """Fetch the config; True when a new valid policy was installed. Never raises HostError."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        # The ETag only goes with a policy still in force: otherwise a 304 would leave the box
        # with nothing, so ask for the whole config and judge it again.
        held = self._held if self.current() is not None else None
        if self.paused():
            self.last_error = "not fetched: the host refused the device token"
            return False
        try:
            config, etag = self.client.config(held.etag if held else None)
        except HostError as exc:
            if exc.status is not None:  # the host did answer: its Date still tells the skew
                self.note_skew()
            self.last_error = str(exc)
            log.warning("config refresh failed: %s", exc)
            return False
        self.note_skew()
        self.last_error = None
        self.last_refresh_at = self._now()
        if config is None:  # 304: the host still serves the config of the policy in force
            self.refused = None
            return False
        return self._consider(config, etag)

    def _consider(self, config: Any, etag: str | None) -> bool:
        signed = config.get("policy") if isinstance(config, dict) else None
        if signed is None:
            self._refuse("malformed policy: the host's config carries no policy")
            return False
        try:
            held = replace(self._verify(signed, self._now(), etag), config=config)
        except PolicyError as exc:
            self._refuse(exc.reason)
            return False
        previous = self._held
        self._held = held
        self.refused = None
        self._save(held)
        self.apply_config()
        if previous is not None and _same_policy(previous.signed, held.signed):
            return False  # only the config around it changed (new ETag, saved above)
        log.info(
            "offline policy %s installed (key %s, expires %s)",
            held.doc.get("policy_version"),
            held.signed.get("key_id"),
            held.doc.get("expires_at"),
        )
        return True

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        kept = self.current()
        still = f"policy {kept.get('policy_version')} stays in force" if kept else "no policy"
        log.warning("offline policy refused: %s (%s)", reason, still)

    def _verify(self, signed: Any, now: datetime, etag: str | None) -> _Held:
        """verify_policy plus the fields the engine relies on; PolicyError when unusable."""
        doc = verify_policy(signed, self.trusted_keys, self.site_id, now)
        try:
            version = doc.get("policy_version")
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError("policy_version is not an integer")
            issued = doc.get("issued_at")
            issued_at = parse_rfc3339(issued, "issued_at") if issued is not None else None
            expires_at = parse_rfc3339(doc["expires_at"], "expires_at")
            subscription_end(doc)
            parse_limits(doc)
            check_programs(doc)  # never judge card numbers by a rule the box cannot read
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"malformed policy document: {exc}") from None
        return _Held(dict(signed), doc, etag, issued_at, expires_at)

    def note_skew(self) -> None:
        """The box clock against the host's latest `Date` (again after the clock was set)."""
        header = self.client.last_date_header
        if not header:
            self.clock_skew_s = None
            return
        try:
            host_time = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            log.warning("the host's Date header %r is not a date: clock skew unknown", header)
            self.clock_skew_s = None
            return
        if host_time.tzinfo is None:  # "-0000" means UTC without saying so
            host_time = host_time.replace(tzinfo=UTC)
        self.clock_skew_s = round((self._now() - host_time).total_seconds(), 1)

    # The state file.

    def _load(self) -> None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            signed, etag, config = data["policy"], data.get("etag"), data.get("config")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.refused = f"saved policy not used: {self.state_path} is unreadable ({exc})"
            log.warning("%s", self.refused)
            return
        now = self._now()
        try:
            self._held = replace(self._verify(signed, now, etag), config=config)
            log.info("offline policy %s loaded from disk", self._held.doc.get("policy_version"))
            return
        except PolicyError as exc:
            self.refused = f"saved policy not used: {exc.reason}"
            log.warning("%s (the file is kept)", self.refused)
        with contextlib.suppress(PolicyError):
            # Good but for its age: held (never in force) so the engine can say "expired".
            self._held = self._verify(signed, _EPOCH, None)

    def apply_config(self) -> None:
        """Hand the accepted config to `on_config` (also at start-up, from the saved copy)."""
        held = self._held
        if self.on_config is not None and held is not None and held.config:
            try:
                self.on_config(held.config)
            except Exception:  # a bad setting must not cost the policy
                log.exception("applying the device config failed")

    def _save(self, held: _Held) -> None:
        data = {
            "policy": held.signed,
            "etag": held.etag,
            "config": held.config,
            "saved_at": self._now().isoformat(),
        }
        try:
            write_json_atomic(self.state_path, data)
        except OSError as exc:
            # Still in force in memory; only a restart while the host is down would lose it.
            self.last_error = f"could not save the policy to {self.state_path}: {exc}"
            log.error("%s", self.last_error)

    # The background refresher.

    def start(self, interval_s: float) -> None:
        """Refresh now and then every `interval_s` (+-10 %) on a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="policy-refresh", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the refresher; waits at most `timeout` for a request in flight."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stopping.is_set():
            try:
                self.refresh()
            except Exception:  # a bug must not end refreshing for the life of the process
                log.exception("policy refresh crashed")
            jitter = random.uniform(-REFRESH_JITTER, REFRESH_JITTER)
            if self._stopping.wait(max(0.0, interval_s * (1 + jitter))):
                return

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _same_policy(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("document") == b.get("document") and a.get("signature") == b.get("signature")
