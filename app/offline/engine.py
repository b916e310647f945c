"""The offline decision engine: one GetRewards decided from the signed policy, without the host.

Used when the host has not answered within the POS deadline or is known to be down. Pure except
for what is passed in: the policy manager (the policy in force and the clock check), the journal's
counters (daily use per loyalty ID, offline exposure, the last host contact), and the clocks.

Order of the checks, the first that fails decides the `rule`:
  no_policy / policy_expired -> clock_problem -> pos_offline_flag -> every scan_data program
  (scan_data's own rules) -> limit_offline_hours -> limit_offline_transactions ->
  limit_offline_discount_total -> limit_discount_per_transaction -> granted.
Beyond any limit the basket gets no discount at all: never a partial one the host would not give.

Limits: counts and amounts may reach the limit but not pass it (max_offline_transactions 500 is
500 discounted offline transactions; max_discount_per_transaction "5.00" allows exactly $5.00);
time runs out when it reaches the limit (offline exactly 24 h with max_offline_hours 24: refused).
When the journal has no `host_last_ok_at` (the host was never reached since the journal began),
the time offline is unknown: max_offline_hours is not applied, the exposure counts every offline
decision on record, and a granted decision says so in its `note`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Protocol

from app.money import ZERO, fmt_decimal, fmt_money, parse_decimal
from app.offline.policy import OfflineLimits, PolicyManager, parse_limits, subscription_end
from app.programs import ids, scan_data

log = logging.getLogger("connectbox.offline")

HOST_LAST_OK_AT = "host_last_ok_at"  # journal state key: unix time the host last answered

# Rules besides scan_data's own (scan_data.GRANTED, INVALID_PHONE, DAILY_LIMIT, ...).
GRANTED = scan_data.GRANTED
NO_POLICY = "no_policy"
POLICY_EXPIRED = "policy_expired"
CLOCK_PROBLEM = "clock_problem"
POS_OFFLINE_FLAG = "pos_offline_flag"
NO_PROGRAM = "no_program"  # the policy has no scan_data program: nothing to grant offline
INVALID_POLICY = "invalid_policy"
LIMIT_OFFLINE_HOURS = "limit_offline_hours"
LIMIT_OFFLINE_TRANSACTIONS = "limit_offline_transactions"
LIMIT_OFFLINE_DISCOUNT_TOTAL = "limit_offline_discount_total"
LIMIT_DISCOUNT_PER_TRANSACTION = "limit_discount_per_transaction"


class OfflineCounters(Protocol):
    """What the engine reads from the box's journal."""

    def discounted_transactions(self, loyalty_key: str, day: str) -> int:
        """Transactions that got a discount for this loyalty key on this local day (ISO date),
        online or offline."""
        ...

    def offline_exposure(self, since: float) -> tuple[int, Decimal]:
        """Count and discount sum of offline decisions that granted a discount since `since`
        (unix time)."""
        ...

    def get_state(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class OfflineDecision:
    """What the box grants a basket offline, and why."""

    rewards: list[dict[str, Any]] = field(default_factory=list)
    rule: str = NO_POLICY
    policy_version: int | None = None
    loyalty_id_valid: bool | None = None
    """The program's ID check (a valid US phone); None when the box cannot tell offline."""
    points_pending: list[dict[str, Any]] = field(default_factory=list)
    discount: Decimal = ZERO
    note: str | None = None
    """Plain words where the rule name alone would hide something (a limit, the clock)."""

    def as_rewards_answer(self) -> dict[str, Any]:
        """The decision in the shape of the host's `/v1/rewards` answer."""
        saved = [f"You saved ${fmt_money(self.discount)} today"] if self.rewards else []
        if self.loyalty_id_valid is False:
            text = "Loyalty ID not valid"
        elif self.rewards:
            text = f"You save ${fmt_money(self.discount)}"
        else:
            text = "Welcome"
        return {
            "loyalty_id_valid": self.loyalty_id_valid,
            "display_text": text,
            "rewards": self.rewards,
            "receipt_lines": saved,
            "prompt_for_loyalty": True,
        }


@dataclass(frozen=True)
class _Request:
    """The parts of a `/v1/rewards` body the engine reads, read defensively."""

    loyalty_id: str | None
    age_verified: bool | None
    lines: list[dict[str, Any]]
    pos_offline: bool

    @classmethod
    def parse(cls, body: Any) -> _Request:
        body = body if isinstance(body, dict) else {}
        loyalty = _obj(body.get("loyalty_id"))
        value = loyalty.get("value")
        age = _obj(body.get("customer")).get("age_verified")
        lines = _obj(body.get("basket")).get("lines")
        return cls(
            loyalty_id=value if isinstance(value, str) and value.strip() else None,
            age_verified=age if isinstance(age, bool) else None,
            lines=[line for line in lines if isinstance(line, dict)]
            if isinstance(lines, list)
            else [],
            pos_offline=_obj(body.get("pos")).get("offline") is True,
        )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class OfflineEngine:
    def __init__(
        self,
        policies: PolicyManager,
        counters: OfflineCounters,
        today: Callable[[], date] = date.today,
        now: Callable[[], float] = time.time,
        last_contact: Callable[[], float | None] | None = None,
    ) -> None:
        self.policies = policies
        self.counters = counters
        self.today = today
        self.now = now
        self.last_contact = last_contact  # the host link's last answer of any kind

    def decide(self, body: dict[str, Any]) -> OfflineDecision:
        request = _Request.parse(body)
        policy = self.policies.current()
        if policy is None:
            return self._without_policy(request)
        version = _version(policy)
        valid = _loyalty_id_valid(policy, request.loyalty_id)
        problem = self.policies.clock_problem()
        if problem:
            return OfflineDecision(
                rule=CLOCK_PROBLEM, policy_version=version, loyalty_id_valid=valid, note=problem
            )
        today = self.today()
        try:
            limits, subscription = parse_limits(policy), subscription_end(policy)
        except ValueError as exc:  # the manager refuses such policies; never grant on one
            return OfflineDecision(
                rule=INVALID_POLICY, policy_version=version, loyalty_id_valid=valid, note=str(exc)
            )
        rewards, rule, note = self._discounts(policy, request, today, subscription, limits)
        discount = sum((Decimal(r["value"]) for r in rewards), ZERO)
        points = self._points(policy, request, today, subscription, discount)
        return OfflineDecision(
            rewards=rewards,
            rule=rule,
            policy_version=version,
            loyalty_id_valid=valid,
            points_pending=points,
            discount=discount,
            note=note,
        )

    def points_pending(self, body: dict[str, Any], discount: Decimal) -> list[dict[str, Any]]:
        """Points a sale finished without the host earns under the policy's points programs,
        for the host to confirm (stored with the sale's event, never redeemed offline)."""
        policy = self.policies.current()
        if policy is None:
            return []
        try:
            subscription = subscription_end(policy)
        except ValueError:
            return []
        return self._points(policy, _Request.parse(body), self.today(), subscription, discount)

    def loyalty_id_valid(self, loyalty_id: str | None) -> bool | None:
        """The policy's ID check for a customer identified without the host (BeginCustomer):
        None when no policy or program can tell."""
        policy = self.policies.current()
        return _loyalty_id_valid(policy, loyalty_id) if policy is not None else None

    def prompt_for_loyalty(self) -> bool:
        """False only when the box knows it can give no rewards at all while the host is down:
        no policy in force, the subscription ended, or no program of the policy runs today."""
        policy = self.policies.current()
        if policy is None:
            return False
        today = self.today()
        try:
            end = subscription_end(policy)
        except ValueError:
            return False
        if end is not None and today > end:
            return False
        programs = [p for p in policy.get("programs") or [] if isinstance(p, dict)]
        return any(
            p.get("kind") in ("scan_data", "points") and _runs_on(p, today) for p in programs
        )

    # The steps of decide().

    def _without_policy(self, request: _Request) -> OfflineDecision:
        latest = self.policies.latest()
        if latest is None:
            return OfflineDecision(rule=NO_POLICY)
        # Expired: nothing granted, but the ID check of its programs is still true.
        return OfflineDecision(
            rule=POLICY_EXPIRED,
            policy_version=_version(latest),
            loyalty_id_valid=_loyalty_id_valid(latest, request.loyalty_id),
            note=f"the offline policy expired at {latest.get('expires_at')}",
        )

    def _discounts(
        self,
        policy: dict[str, Any],
        request: _Request,
        today: date,
        subscription: date | None,
        limits: OfflineLimits,
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        """(rewards, rule, note): the scan_data programs, then the offline limits."""
        if request.pos_offline:
            # The POS stored this sale while the box was away and may have discounted it then.
            return [], POS_OFFLINE_FLAG, "the POS sent this sale as stored offline"
        programs = _programs(policy, "scan_data")
        if not programs:
            return [], NO_PROGRAM, None
        rewards, rules = [], []
        for program in programs:
            used = self._used_today(program, request.loyalty_id, today)
            decision = scan_data.evaluate(
                program,
                request.lines,
                request.loyalty_id,
                request.age_verified,
                today,
                used,
                subscription,
            )
            rewards.extend(decision.rewards)
            rules.append(decision.rule)
        rewards = scan_data.cap_to_lines(rewards, request.lines)
        if not rewards:
            return [], rules[0], None
        discount = sum((Decimal(r["value"]) for r in rewards), ZERO)
        limit, note = self._over_limit(limits, discount)
        if limit:
            log.info("offline discount %s refused: %s", fmt_money(discount), note)
            return [], limit, note
        return rewards, GRANTED, note

    def _used_today(self, program: dict[str, Any], loyalty_id: str | None, today: date) -> int:
        if loyalty_id is None or not scan_data.loyalty_id_accepted(program, loyalty_id):
            return 0  # evaluate() refuses the ID anyway: spare the journal a query
        key = scan_data.loyalty_key(program, loyalty_id)
        return self.counters.discounted_transactions(key, today.isoformat())

    def _over_limit(
        self, limits: OfflineLimits, discount: Decimal
    ) -> tuple[str | None, str | None]:
        """(the limit this discount would pass, words) or (None, a note for a granted one)."""
        last_ok = self._host_last_ok_at()
        note = None
        if limits.max_offline_hours is not None:
            if last_ok is None:
                note = "time offline unknown (no record of the host answering): hours not limited"
            else:
                hours = (self.now() - last_ok) / 3600
                if hours >= limits.max_offline_hours:
                    allowed = f"{limits.max_offline_hours:g}"
                    return LIMIT_OFFLINE_HOURS, f"offline {hours:.1f} h, policy allows {allowed} h"
        if (
            limits.max_offline_transactions is not None
            or limits.max_offline_discount_total is not None
        ):
            count, total = self.counters.offline_exposure(last_ok if last_ok is not None else 0.0)
            cap = limits.max_offline_transactions
            if cap is not None and count >= cap:
                return LIMIT_OFFLINE_TRANSACTIONS, f"{count} discounted offline sales, limit {cap}"
            cap_total = limits.max_offline_discount_total
            if cap_total is not None and total + discount > cap_total:
                return LIMIT_OFFLINE_DISCOUNT_TOTAL, (
                    f"${fmt_money(total)} discounted offline + ${fmt_money(discount)} would pass "
                    f"the ${fmt_money(cap_total)} limit"
                )
        cap_each = limits.max_discount_per_transaction
        if cap_each is not None and discount > cap_each:
            return LIMIT_DISCOUNT_PER_TRANSACTION, (
                f"${fmt_money(discount)} is more than ${fmt_money(cap_each)} per sale"
            )
        return None, note

    def _host_last_ok_at(self) -> float | None:
        """The host link's last answer; before the first one since start, the one saved."""
        if self.last_contact is not None and (live := self.last_contact()) is not None:
            return live
        raw = self.counters.get_state(HOST_LAST_OK_AT)
        if raw is None:
            return None
        try:
            return float(raw)
        except (TypeError, ValueError):
            log.warning("journal state %s=%r is not a unix time", HOST_LAST_OK_AT, raw)
            return None

    def _points(
        self,
        policy: dict[str, Any],
        request: _Request,
        today: date,
        subscription: date | None,
        discount: Decimal,
    ) -> list[dict[str, Any]]:
        """Points the sale would earn under `points` programs: recorded as pending for the host
        to confirm. Nothing is ever redeemed offline."""
        if request.loyalty_id is None or (subscription is not None and today > subscription):
            return []
        spend = _spend(request.lines) - discount
        pending = []
        for program in _programs(policy, "points"):
            if not _runs_on(program, today) or not ids.takes(program, request.loyalty_id):
                continue  # a card outside the program's number ranges earns it nothing
            points = _earned(program, spend)
            if points is not None and points > ZERO:
                pending.append(
                    {
                        "program_id": program.get("program_id"),
                        "loyalty_id": request.loyalty_id,
                        "points": fmt_decimal(points),
                        "basis": fmt_money(spend),
                        "status": "pending",
                    }
                )
        return pending


# Helpers on the policy document and the basket.


def _version(policy: dict[str, Any]) -> int | None:
    version = policy.get("policy_version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _programs(policy: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    programs = policy.get("programs") or []
    return [p for p in programs if isinstance(p, dict) and p.get("kind") == kind]


def _loyalty_id_valid(policy: dict[str, Any], loyalty_id: str | None) -> bool | None:
    """Whether a program checking IDs offline (scan_data, or one with card ranges) takes the ID;
    None when none checks (points accounts live on the host, so the box cannot tell)."""
    programs = [
        p
        for p in policy.get("programs") or []
        if isinstance(p, dict) and (p.get("kind") == "scan_data" or p.get("card") is not None)
    ]
    if not programs:
        return None
    if loyalty_id is None:
        return False
    # Programs have distinct card ranges: one taking it makes the ID valid.
    return any(ids.takes(p, loyalty_id) for p in programs)


def _runs_on(program: dict[str, Any], today: date) -> bool:
    try:
        start, end = program.get("valid_from"), program.get("valid_to")
        return (not start or date.fromisoformat(start) <= today) and (
            not end or today <= date.fromisoformat(end)
        )
    except (TypeError, ValueError):
        return False


def _decimal(value: Any) -> Decimal | None:
    # Decimals are strings in the contract; a float or int is a violation, not a number.
    return parse_decimal(value) if isinstance(value, str) else None


def _amount(line: dict[str, Any]) -> Decimal | None:
    return _decimal(line.get("amount"))


def _spend(lines: list[dict[str, Any]]) -> Decimal:
    """What the customer pays for sold items and fuel (refunds and voided lines excluded)."""
    total = ZERO
    for line in lines:
        amount = _amount(line)
        if line.get("status") == "normal" and amount is not None and amount > ZERO:
            total += amount
    return total


def _earned(program: dict[str, Any], spend: Decimal) -> Decimal | None:
    """`{"earn": {"per_currency": "1", "points": "1"}}`: `points` per whole `per_currency`
    spent. None when the program has no earning rule the box understands."""
    earn = program.get("earn")
    if not isinstance(earn, dict):
        return None
    per, points = _decimal(earn.get("per_currency")), _decimal(earn.get("points"))
    if per is None or points is None or per <= ZERO or points <= ZERO or spend <= ZERO:
        return None
    try:
        return (spend / per).to_integral_value(rounding=ROUND_FLOOR) * points
    except InvalidOperation:
        return None
