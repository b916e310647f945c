"""What the reference host decides: rewards for a basket (the Scan Data rules), transaction
events kept once per Idempotency-Key, and each device's signed config."""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

from app.money import ZERO, fmt_money
from app.programs import ids, scan_data
from app.programs.nanp import normalize_us_phone
from app.programs.policy import canonical_json, sign_policy
from simulators.host.checks import event_problem, parse_time
from simulators.host.context import HostContext
from simulators.host.replies import body_hash, json_hash
from simulators.host.store import Device, Stored

# What a device's config carries besides its site id and policy (host-api.md's example).
DEFAULT_CONFIG: dict[str, Any] = {
    "site": {"name": "Main St #4", "timezone": "America/Chicago"},
    "pos": {"dialect": "passport", "listen_port": 9000, "deadline_ms": 1500},
    "readers": [{"match": {"vendor_id": "0801"}, "register_id": "1"}],
    "heartbeat_s": 60,
}


def loyalty_value(body: dict[str, Any]) -> str | None:
    loyalty = body.get("loyalty_id")
    value = loyalty.get("value") if isinstance(loyalty, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def loyalty_key(value: str) -> str:
    """What daily limits count by: the 10 digits of a phone number, else the ID as sent."""
    return normalize_us_phone(value) or value.strip()


def evaluate_rewards(ctx: HostContext, device: Device, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a basket: every scan_data program of the site's policy, evaluated."""
    policy = ctx.policies.render(device.site_id, ctx.clock())
    programs = [p for p in policy.get("programs") or [] if p.get("kind") == "scan_data"]
    lines = body["basket"]["lines"]
    loyalty_id = loyalty_value(body)
    occurred = parse_time(body["occurred_at"])
    assert occurred is not None  # checked by rewards_problem
    today = occurred.date()  # the sale's own local date: limits are per day at the site
    customer = body.get("customer") if isinstance(body.get("customer"), dict) else {}
    already = 0
    if loyalty_id is not None:
        already = ctx.store.discounted_count(loyalty_key(loyalty_id), today.isoformat())
    subscription = _date_or_none(policy.get("subscription_valid_until"))
    rewards: list[dict[str, Any]] = []
    for program in programs:
        decision = scan_data.evaluate(
            program, lines, loyalty_id, customer.get("age_verified"), today, already, subscription
        )
        rewards.extend(decision.rewards)
    rewards = scan_data.cap_to_lines(rewards, lines)
    saved = sum((Decimal(r["value"]) for r in rewards), ZERO)
    if loyalty_id is not None:
        fuel = _fuel_rewards(policy, lines, loyalty_id)
        rewards.extend(fuel)
        saved += sum((_fuel_saving(r, lines) for r in fuel), ZERO)
    # Programs have distinct ID rules (phone, card ranges): one taking the ID makes it valid.
    valid = loyalty_id is not None and any(
        scan_data.loyalty_id_accepted(p, loyalty_id) for p in programs
    )
    return {
        "loyalty_id_valid": valid,
        "display_text": _display_text(loyalty_id, valid, saved),
        "rewards": rewards,
        "receipt_lines": [f"You saved ${fmt_money(saved)} today"] if rewards else [],
        "prompt_for_loyalty": True,
    }


def _fuel_rewards(
    policy: dict[str, Any], lines: list[dict[str, Any]], loyalty_id: str
) -> list[dict[str, Any]]:
    """`fuel` programs: cents per gallon on every fuel line, for up to `max_units` gallons. A
    prepay line has no quantity yet: the reward goes out anyway (host-api.md 1.1, "Fuel")."""
    rewards = []
    for program in policy.get("programs") or []:
        if program.get("kind") != "fuel" or not ids.takes(program, loyalty_id):
            continue
        discount = program.get("discount") or {}
        for line in lines:
            if line.get("kind") != "fuel" or line.get("status", "normal") != "normal":
                continue
            rewards.append(
                {
                    "reward_id": f"{program['program_id']}-{line['line_number']}",
                    "target_line": line["line_number"],
                    "method": "per_unit_off",
                    "value": discount.get("value", "0.10"),
                    "limit_quantity": discount.get("max_units"),
                    "receipt_short": program.get("receipt_short", ""),
                    "receipt_long": program.get("receipt_long", ""),
                }
            )
    return rewards


def _fuel_saving(reward: dict[str, Any], lines: list[dict[str, Any]]) -> Decimal:
    """What a per-gallon reward saves once the gallons are known (nothing yet on a prepay)."""
    line = next(x for x in lines if x.get("line_number") == reward["target_line"])
    gallons = Decimal(str(line.get("quantity") or 0))
    if reward.get("limit_quantity") is not None:
        gallons = min(gallons, Decimal(reward["limit_quantity"]))
    return (Decimal(reward["value"]) * gallons).quantize(Decimal("0.01"))


def identify_customer(ctx: HostContext, device: Device, body: dict[str, Any]) -> dict[str, Any]:
    """/v1/customers/identify: who the customer is and, under a points program, the balance
    (1 point per whole currency unit finalized with the ID, at this host)."""
    policy = ctx.policies.render(device.site_id, ctx.clock())
    loyalty_id = loyalty_value(body)
    assert loyalty_id is not None  # checked by identify_problem
    programs = [p for p in policy.get("programs") or [] if isinstance(p, dict)]
    valid = any(ids.takes(p, loyalty_id) for p in programs)
    answer: dict[str, Any] = {
        "loyalty_id_valid": valid,
        "display_text": "Welcome back" if valid else "Loyalty ID not valid",
        "receipt_lines": [],
        "prompt_for_loyalty": True,
    }
    points_programs = [p for p in programs if p.get("kind") == "points"]
    if valid and points_programs:
        points, value = _balance(ctx, points_programs[0], loyalty_id)
        answer["balance"] = {"points": str(points), "value": fmt_money(value)}
        answer["display_text"] = f"Welcome: {points:,} points"
        answer["receipt_lines"] = [f"You have {points:,} points (${fmt_money(value)})"]
    return answer


def _balance(ctx: HostContext, program: dict[str, Any], loyalty_id: str) -> tuple[int, Decimal]:
    earn, redeem = program.get("earn") or {}, program.get("redeem") or {}
    per = Decimal(str(earn.get("per_currency", "1")))
    spent = ctx.store.finalized_total(loyalty_key(loyalty_id))
    points = int(spent // per) * int(Decimal(str(earn.get("points", "1"))))
    worth = Decimal(str(redeem.get("value", "0"))) / Decimal(str(redeem.get("points", "100")))
    return points, points * worth


def _date_or_none(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _display_text(loyalty_id: str | None, valid: bool, saved: Decimal) -> str:
    if loyalty_id is None:
        return "Enter your phone number to save"
    if not valid:
        return "Loyalty ID not valid"
    if saved > ZERO:
        return f"You save ${fmt_money(saved)}"
    return "Welcome back"


def accept_event(ctx: HostContext, device: Device, key: str, event: dict[str, Any]) -> Stored:
    """Store one (valid) transaction event under its Idempotency-Key."""
    applied = event.get("rewards_applied") or []
    saved = sum((Decimal(r["amount"]) for r in applied), ZERO)
    receipt = (
        [f"Loyalty savings ${fmt_money(saved)}"]
        if event["event"] == "finalize" and applied and saved > ZERO
        else []
    )
    loyalty_id = loyalty_value(event)
    occurred = parse_time(event.get("occurred_at")) or ctx.clock()
    return ctx.store.record_event(
        device.device_id,
        key,
        event,
        json_hash(event),
        {"accepted": True, "receipt_lines": receipt},
        loyalty_key=loyalty_key(loyalty_id) if loyalty_id else None,
        day=occurred.date().isoformat(),
        discounted=event["event"] == "finalize" and bool(applied) and loyalty_id is not None,
    )


def batch_result(ctx: HostContext, device: Device, entry: Any) -> dict[str, Any]:
    key = entry.get("idempotency_key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key:
        problem = "idempotency_key is required"
    else:
        problem = event_problem(entry.get("event"))
    if problem:
        return {
            "idempotency_key": key if isinstance(key, str) else None,
            "status": 422,
            "receipt_lines": [],
            "error": {"code": "invalid_event", "message": problem},
        }
    stored = accept_event(ctx, device, key, entry["event"])
    result: dict[str, Any] = {"idempotency_key": key, "status": stored.status}
    result["receipt_lines"] = stored.body.get("receipt_lines", [])
    if "error" in stored.body:
        result["error"] = stored.body["error"]
    return result


# Config


def device_config(ctx: HostContext, device: Device) -> dict[str, Any]:
    now = ctx.clock()
    policy = ctx.policies.render(device.site_id, now)
    config = copy.deepcopy(ctx.config)
    config["config_version"] = int(config.get("config_version") or 1) + ctx.policies.period(now)
    config["site"] = {"site_id": device.site_id, **config.get("site", {})}
    config["policy"] = sign_policy(policy, ctx.private_key, ctx.key_id)
    return config


def config_etag(config: dict[str, Any]) -> str:
    # Ed25519 signatures are deterministic, so the same config always has the same tag.
    return body_hash(canonical_json(config))[:32]
