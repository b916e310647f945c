"""Is a body what host-api.md allows? Each check returns the problem in words, or None."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from app.money import parse_decimal
from provisioning.rfc3339 import parse_rfc3339

EVENT_TYPES = ("finalize", "cancel", "reverse", "cancel_redemption", "end_period", "unreadable")


def parse_time(value: Any) -> datetime | None:
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def is_decimal_text(value: Any) -> bool:
    return isinstance(value, str) and parse_decimal(value) is not None


# /v1/rewards


def rewards_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    basket = body.get("basket")
    if not isinstance(basket, dict) or not isinstance(basket.get("lines"), list):
        return "basket.lines must be a list"
    if any(not isinstance(line, dict) for line in basket["lines"]):
        return "every basket line must be an object"
    loyalty = body.get("loyalty_id")
    if loyalty is not None and not isinstance(loyalty, dict):
        return "loyalty_id must be an object or null"
    if parse_time(body.get("occurred_at")) is None:
        return "occurred_at must be an RFC 3339 time with offset"
    return None


def event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "the event must be a JSON object"
    kind = event.get("event")
    if kind is None:
        return "event is required"
    if kind not in EVENT_TYPES:
        return f"unknown event type {kind!r}; one of {', '.join(EVENT_TYPES)}"
    if kind == "unreadable":
        return unreadable_problem(event)
    if kind == "cancel_redemption":
        ids = event.get("reward_ids")
        if not isinstance(ids, list) or any(not isinstance(i, str) for i in ids):
            return "a cancel_redemption event needs reward_ids as a list of strings"
        if not is_decimal_text(event.get("points")):
            return "a cancel_redemption event needs points as a decimal string"
    if kind == "end_period":
        return end_period_problem(event)
    applied = event.get("rewards_applied", [])
    if not isinstance(applied, list) or any(
        not isinstance(r, dict) or not is_decimal_text(r.get("amount")) for r in applied
    ):
        return "rewards_applied must be a list of objects with a decimal string amount"
    if "final_total" in event and not is_decimal_text(event["final_total"]):
        return "final_total must be a decimal string"
    if "occurred_at" in event and parse_time(event["occurred_at"]) is None:
        return "occurred_at must be an RFC 3339 time with offset"
    return None


def end_period_problem(event: dict[str, Any]) -> str | None:
    """The period that closed and the box's own counts for it."""
    if not isinstance(event.get("period"), dict) or not isinstance(event.get("business_date"), str):
        return "an end_period event needs period (an object) and business_date"
    for key in ("transactions", "finalized"):
        value = event.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"an end_period event needs {key} as a whole number"
    if not is_decimal_text(event.get("discount_total")):
        return "an end_period event needs discount_total as a decimal string"
    return None


def identify_problem(body: Any) -> str | None:
    """/v1/customers/identify: who, and why the box asks."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    loyalty = body.get("loyalty_id")
    if not isinstance(loyalty, dict) or not isinstance(loyalty.get("value"), str):
        return "loyalty_id.value is required"
    if body.get("purpose") not in ("begin_customer", "messaging"):
        return "purpose must be begin_customer or messaging"
    return None


def unreadable_problem(event: dict[str, Any]) -> str | None:
    """A request the box kept but could not read: its type, the exact bytes and why."""
    for key in ("request_type", "raw", "error"):
        if not isinstance(event.get(key), str):
            return f"an unreadable event needs {key} as a string"
    try:
        base64.b64decode(event["raw"], validate=True)
    except ValueError:
        return "raw must be base64"
    return None
