"""POS requests as host-API JSON bodies (`POST /v1/rewards`, `POST /v1/transactions`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.journal import Kept
from app.money import ZERO, fmt_decimal, fmt_money
from app.pos.model import Line, Request, TransactionData
from provisioning.rfc3339 import format_rfc3339, now_rfc3339

SALE_KINDS = ("item", "merchandise", "fuel")


@dataclass(frozen=True)
class Identity:
    device_id: str
    site_id: str


def basket_lines(txn: TransactionData | None) -> list[dict[str, Any]]:
    if txn is None:
        return []
    return [_line(line) for line in txn.lines if line.kind in SALE_KINDS]


def basket_total(txn: TransactionData | None) -> Decimal:
    """What the customer pays before loyalty: the amounts of the normal sale lines."""
    if txn is None:
        return ZERO
    return sum(
        (
            line.amount
            for line in txn.lines
            if line.kind in SALE_KINDS and line.status == "normal" and line.amount is not None
        ),
        ZERO,
    )


def _line(line: Line) -> dict[str, Any]:
    body: dict[str, Any] = {
        "line_number": line.line_number,
        "kind": line.kind,
        "status": line.status,
    }
    if line.kind == "fuel":
        body.update(grade=line.grade, fuel_position=line.fuel_position, prepay=bool(line.prepay))
    else:
        body.update(
            code_format=line.code_format,
            code=line.code,
            description=line.description,
            department=line.department,
            regular_price=fmt_decimal(line.regular_price),
        )
    body.update(
        quantity=fmt_decimal(line.quantity),
        unit_price=fmt_decimal(line.unit_price),
        amount=fmt_decimal(line.amount),
    )
    return {k: v for k, v in body.items() if v is not None}


def rewards_body(
    request: Request,
    identity: Identity,
    session_id: str,
    loyalty_id: str | None,
    entry_method: str,
    age_verified: bool | None,
    source: str = "pos",
) -> dict[str, Any]:
    txn = request.transaction
    return {
        "device_id": identity.device_id,
        "site_id": identity.site_id,
        "session_id": session_id,
        "pos": pos_facts(request),
        "loyalty_id": (
            {"value": loyalty_id, "entry_method": entry_method, "source": source}
            if loyalty_id
            else None
        ),
        "customer": {"age_verified": age_verified},
        "basket": {"lines": basket_lines(txn), "total": fmt_money(basket_total(txn))},
        "occurred_at": occurred_at(request),
    }


def identify_body(
    request: Request,
    identity: Identity,
    session_id: str,
    loyalty_id: str,
    entry_method: str,
    purpose: str,
) -> dict[str, Any]:
    """`POST /v1/customers/identify` (v1.1): a customer before or outside a basket."""
    return {
        "device_id": identity.device_id,
        "site_id": identity.site_id,
        "session_id": session_id,
        "pos": pos_facts(request),
        "loyalty_id": {"value": loyalty_id, "entry_method": entry_method},
        "purpose": purpose,
    }


def pos_facts(request: Request) -> dict[str, Any]:
    """What the POS said about itself and the sale (host-api.md 1.1): who sent it, and the
    sale's business date, times, cashier, training flag, pump and period when it gave them."""
    txn = request.transaction
    head = request.header
    facts: dict[str, Any] = {
        "dialect": request.dialect,
        "vendor": head.vendor_name,
        "model_version": head.vendor_model_version,
        "interface_version": head.interface_version,
        "store_location_id": head.store_location_id,
        "register_id": request.register,
        "pos_transaction_id": txn.pos_transaction_id if txn else None,
        "pos_sequence_id": head.pos_sequence_id,
        "outside_sale": bool(txn.outside_sale if txn else request.outside_sale),
        "offline": head.offline,
        "training": bool(txn and txn.training),
    }
    if txn is None:
        return facts
    period = txn.period
    optional = {
        "business_date": period.business_date if period else None,
        "event_started_at": txn.event_started_at,
        "event_ended_at": txn.event_ended_at,
        "cashier_id": txn.cashier_id,
        "fuel_position": txn.fuel_position_id or _first_pump(txn),
        "period": (period.as_json() or None) if period else None,
    }
    facts.update({key: value for key, value in optional.items() if value is not None})
    return facts


def occurred_at(request: Request) -> str:
    """The POS's time of the event when it gave one (a sale it stored offline in September is a
    September sale), else the box's time now."""
    txn = request.transaction
    if txn is not None and (txn.event_ended_at or txn.event_started_at):
        return txn.event_ended_at or txn.event_started_at or ""
    return now_rfc3339()


def _first_pump(txn: TransactionData) -> str | None:
    return next((line.fuel_position for line in txn.lines if line.fuel_position), None)


def transaction_body(
    base: dict[str, Any],
    event: str,
    request: Request,
    rewards_applied: list[dict[str, Any]],
    decision: dict[str, Any],
) -> dict[str, Any]:
    """A /v1/transactions event: the /v1/rewards fields plus what happened."""
    txn = request.transaction
    tenders = [
        {"code": line.tender_code or "", "amount": fmt_money(line.tender_amount or ZERO)}
        for line in (txn.lines if txn else [])
        if line.kind == "tender" and line.status == "normal"
    ]
    final_total = request.final_total
    if final_total is None and txn is not None:
        discount = sum((Decimal(r["amount"]) for r in rewards_applied), ZERO)
        final_total = basket_total(txn) - discount
    return {
        **base,
        "event": event,
        "tenders": tenders,
        "rewards_applied": rewards_applied,
        "decision": decision,
        "points_redeemed": fmt_decimal(request.points_redeemed) or "0",
        "final_total": fmt_money(final_total or ZERO),
        "recorded_at": now_rfc3339(),
    }


def unreadable_body(identity: Identity, kept: Kept, error: str) -> dict[str, Any]:
    """An `unreadable` event: a durable request the box kept but could not understand."""
    return {
        "event": "unreadable",
        "device_id": identity.device_id,
        "site_id": identity.site_id,
        "request_type": kept.stem,
        "raw": base64.b64encode(kept.raw).decode("ascii"),
        "error": error[:MAX_ERROR_CHARS],
        "pos": {"dialect": kept.dialect},
        "occurred_at": format_rfc3339(kept.received_at),
        "recorded_at": now_rfc3339(),
    }


MAX_ERROR_CHARS = 500
