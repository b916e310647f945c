"""Host-API sample bodies for the tests and the benches: host-api.md's example sale (two packs of
MARLBORO GOLD BOX and a fuel prepay on register 1 of site S-1001) as `/v1/rewards` request and
`/v1/transactions` event, built from parts a test can vary (basket lines, the `pos` section, the
loyalty ID). One place, so that a change to the contract is made once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from provisioning.rfc3339 import now_rfc3339

PHONE = "5124671234"  # a valid US phone number as loyalty ID
MARLBORO = "028200003843"  # UPC-A of MARLBORO GOLD BOX, eligible in the example policy
CAMEL = "012300000147"  # another eligible UPC-A
EXAMPLE_TIME = "2026-11-23T14:00:00-06:00"  # host-api.md's occurred_at


def item_line(
    line_number: int = 1,
    *,
    code: str = MARLBORO,
    description: str = "MARLBORO GOLD BOX",
    department: str = "TOBACCO",
    quantity: str = "2",
    unit_price: str = "9.49",
    amount: str = "18.98",
) -> dict[str, Any]:
    """A sold item (regular price = unit price); by default host-api.md's two packs."""
    return {
        "line_number": line_number,
        "kind": "item",
        "status": "normal",
        "code_format": "upcA",
        "code": code,
        "description": description,
        "department": department,
        "quantity": quantity,
        "unit_price": unit_price,
        "regular_price": unit_price,
        "amount": amount,
    }


def fuel_line(line_number: int = 2) -> dict[str, Any]:
    """host-api.md's fuel prepay: 10 gallons of grade 001 at pump 3."""
    return {
        "line_number": line_number,
        "kind": "fuel",
        "status": "normal",
        "grade": "001",
        "fuel_position": "3",
        "quantity": "10.000",
        "unit_price": "3.459",
        "amount": "34.59",
        "prepay": True,
    }


def pos_section(
    *,
    store_location_id: str = "S-1001",
    register_id: str = "1",
    pos_transaction_id: str | None = "8812",
    pos_sequence_id: str = "40464",
    offline: bool = False,
) -> dict[str, Any]:
    """The `pos` section of a Gilbarco Passport register."""
    return {
        "dialect": "passport",
        "vendor": "Gilbarco",
        "model_version": "12.23.03.02",
        "interface_version": "1.2",
        "store_location_id": store_location_id,
        "register_id": register_id,
        "pos_transaction_id": pos_transaction_id,
        "pos_sequence_id": pos_sequence_id,
        "outside_sale": False,
        "offline": offline,
    }


def rewards_body(
    phone: str | None = PHONE,
    *,
    lines: list[dict[str, Any]] | None = None,
    total: str | None = None,
    device_id: str = "D-DEMO",
    site_id: str = "S-1001",
    session_id: str = "LS-1",
    pos: dict[str, Any] | None = None,
    entry_method: str = "manual",
    source: str = "pos",
    age_verified: bool | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    """A `/v1/rewards` request: by default host-api.md's example basket, keyed in at the POS,
    now. `phone` None: no loyalty ID. `total` defaults to the sum of the lines' amounts."""
    lines = [item_line(1), fuel_line(2)] if lines is None else lines
    if total is None:
        total = str(sum((Decimal(line["amount"]) for line in lines), Decimal("0.00")))
    return {
        "device_id": device_id,
        "site_id": site_id,
        "session_id": session_id,
        "pos": pos_section(store_location_id=site_id) if pos is None else pos,
        "loyalty_id": (
            None
            if phone is None
            else {"value": phone, "entry_method": entry_method, "source": source}
        ),
        "customer": {"age_verified": age_verified},
        "basket": {"lines": lines, "total": total},
        "occurred_at": now_rfc3339() if occurred_at is None else occurred_at,
    }


def transaction_event(
    body: dict[str, Any],
    *,
    event: str = "finalize",
    tenders: list[dict[str, Any]] | None = None,
    rewards_applied: list[dict[str, Any]] | None = None,
    decision: dict[str, Any] | None = None,
    points_redeemed: str = "0",
    final_total: str = "52.57",
    **extra: Any,
) -> dict[str, Any]:
    """A `/v1/transactions` event on `body`: by default host-api.md's (paid cash, $1.00 off
    line 1 as the host decided)."""
    return {
        **body,
        "event": event,
        "tenders": [{"code": "cash", "amount": "60.00"}] if tenders is None else tenders,
        "rewards_applied": (
            [{"reward_id": "SD-1", "target_line": 1, "amount": "1.00"}]
            if rewards_applied is None
            else rewards_applied
        ),
        "decision": (
            {"origin": "host", "policy_version": None, "rule": None}
            if decision is None
            else decision
        ),
        "points_redeemed": points_redeemed,
        "final_total": final_total,
        **extra,
    }


def day_key(day: int) -> str:
    """The event id of `day_sale(day)` in a journal with one sale a day."""
    return f"e{day:03d}"


def day_sale(day: int, event: str = "finalize") -> dict[str, Any]:
    """A small event for a journal with one sale a day (retention, resends): the loyalty ID, a
    reward applied, and the day in the POS transaction id."""
    return {
        "device_id": "D-DEMO",
        "site_id": "S-1001",
        "event": event,
        "pos": {"pos_transaction_id": str(day)},
        "loyalty_id": {"value": PHONE, "entry_method": "manual", "source": "pos"},
        "rewards_applied": [{"reward_id": "SD-1", "target_line": 1, "amount": "1.00"}],
    }
