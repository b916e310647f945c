"""The standard "Scan Data" program: one program of a policy document against one basket.

Pure on purpose: no I/O and no clock, every fact about the world (today's date, how many
discounted transactions this loyalty ID already had today, the subscription end) comes in as an
argument. The reference host and the box's offline engine both call `evaluate`, so a basket gets
the same answer online and offline.

`program` is one entry of `programs` in the policy document and `lines` is `basket.lines` of a
`POST /v1/rewards` body, both as in host-api.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from app.money import ZERO, fmt_money, parse_decimal, to_cents
from app.programs import ids
from app.programs.nanp import normalize_us_phone

# Rule names a Decision can carry, in the order they are checked.
GRANTED = "granted"
NOT_SCAN_DATA = "not_scan_data"
INVALID_PROGRAM = "invalid_program"
NO_LOYALTY_ID = "no_loyalty_id"
INVALID_PHONE = "invalid_phone"
CARD_OUT_OF_RANGE = "card_out_of_range"  # the program's `card` rule does not take the ID
OUTSIDE_DATES = "outside_dates"
SUBSCRIPTION_EXPIRED = "subscription_expired"
NO_ELIGIBLE_ITEMS = "no_eligible_items"
BELOW_MIN_QUANTITY = "below_min_quantity"
AGE_NOT_VERIFIED = "age_not_verified"
DAILY_LIMIT = "daily_limit"
UNSUPPORTED_DISCOUNT = "unsupported_discount"


@dataclass(frozen=True)
class Decision:
    """What one program grants a basket, and the rule that decided."""

    rewards: list[dict[str, Any]] = field(default_factory=list)
    rule: str = GRANTED
    eligible: bool = False


@dataclass(frozen=True)
class _Eligible:
    """A basket line the program applies to."""

    line_number: int
    units: int  # whole units: packs and cartons are counted, not fractions
    amount: Decimal  # the most that may come off this line


def loyalty_id_accepted(program: dict[str, Any], loyalty_id: str | None) -> bool:
    """Whether `loyalty_id` is an acceptable ID for this program: a valid phone for us_phone,
    a card number its `card` rule takes (ids.py)."""
    return ids.takes(program, loyalty_id)


def loyalty_key(program: dict[str, Any], loyalty_id: str) -> str:
    """The form of an ID that daily limits count by, so "(512) 467-1234" == "5124671234"."""
    if program.get("loyalty_id") == "us_phone":
        return normalize_us_phone(loyalty_id) or loyalty_id.strip()
    return loyalty_id.strip()


def evaluate(
    program: dict[str, Any],
    lines: list[dict[str, Any]],
    loyalty_id: str | None,
    age_verified: bool | None,
    today: date,
    transactions_today: int,
    subscription_valid_until: date | None,
) -> Decision:
    """Decide what `program` grants the basket `lines`.

    `transactions_today` is how many transactions already got this program's discount for this
    loyalty ID today; `subscription_valid_until` None means the policy sets no end.
    """
    if program.get("kind") != "scan_data":
        return Decision(rule=NOT_SCAN_DATA)
    try:
        program_id = program["program_id"]
        if not isinstance(program_id, str) or not program_id:
            raise ValueError("program_id must be a non-empty string")
        window = _date_window(program)
        eligible_upcs, eligible_departments = _eligible_sets(program)
        discount = _discount(program)
        min_quantity = int(program.get("min_quantity") or 1)
        max_per_day = _optional_int(program.get("max_transactions_per_id_per_day"))
        ids.card_rule(program)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Decision(rule=INVALID_PROGRAM)

    if not loyalty_id or not str(loyalty_id).strip():
        return Decision(rule=NO_LOYALTY_ID)
    if not loyalty_id_accepted(program, loyalty_id):
        phone = ids.looks_like_phone(program, loyalty_id)
        return Decision(rule=INVALID_PHONE if phone else CARD_OUT_OF_RANGE)
    if not _within(today, window):
        return Decision(rule=OUTSIDE_DATES)
    if subscription_valid_until is not None and today > subscription_valid_until:
        return Decision(rule=SUBSCRIPTION_EXPIRED)
    matched = _eligible_lines(lines, eligible_upcs, eligible_departments)
    if not matched:
        return Decision(rule=NO_ELIGIBLE_ITEMS)
    if sum(item.units for item in matched) < min_quantity:
        return Decision(rule=BELOW_MIN_QUANTITY)
    if program.get("require_age_verified") and age_verified is not True:
        return Decision(rule=AGE_NOT_VERIFIED)
    if max_per_day is not None and transactions_today >= max_per_day:
        return Decision(rule=DAILY_LIMIT)
    if discount is None:
        return Decision(rule=UNSUPPORTED_DISCOUNT)
    rewards = _rewards(program, discount, matched)
    if not rewards:
        return Decision(rule=NO_ELIGIBLE_ITEMS)  # every eligible line was already free
    return Decision(rewards=rewards, rule=GRANTED, eligible=True)


@dataclass(frozen=True)
class _Discount:
    value: Decimal
    per: str  # "unit" or "line"
    max_units: int | None


def _discount(program: dict[str, Any]) -> _Discount | None:
    """The program's discount, or None for a method this module does not grant."""
    spec = program.get("discount") or {}
    if spec.get("method") != "amount_off" or spec.get("per", "unit") not in ("unit", "line"):
        return None
    value = parse_decimal(spec.get("value"))
    if value is None or value <= ZERO:
        raise ValueError("discount value must be a positive decimal string")
    return _Discount(value, spec.get("per", "unit"), _optional_int(spec.get("max_units")))


def _date_window(program: dict[str, Any]) -> tuple[date | None, date | None]:
    start, end = program.get("valid_from"), program.get("valid_to")
    return (
        date.fromisoformat(start) if start else None,
        date.fromisoformat(end) if end else None,
    )


def _within(today: date, window: tuple[date | None, date | None]) -> bool:
    start, end = window
    return (start is None or start <= today) and (end is None or today <= end)


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a count cannot be a boolean")
    return int(value)


def _eligible_sets(program: dict[str, Any]) -> tuple[set[str], set[str]]:
    eligible = program.get("eligible") or {}
    upcs, departments = eligible.get("upcs") or [], eligible.get("departments") or []
    if not isinstance(upcs, list) or not isinstance(departments, list):
        raise TypeError("eligible.upcs and eligible.departments must be lists")
    return {_code_key(code) for code in upcs}, {str(d).strip().upper() for d in departments}


def _code_key(code: Any) -> str:
    """A comparable product code: upper-case, and numeric codes padded to GTIN-14.

    POS systems send the same product as UPC-A (12 digits) or EAN-13 with a leading zero;
    padding both to 14 digits is the GS1 rule for comparing them.
    """
    text = str(code).strip().upper()
    if text.isascii() and text.isdigit() and 8 <= len(text) <= 14:
        return text.zfill(14)
    return text


def _eligible_lines(
    lines: list[dict[str, Any]], upcs: set[str], departments: set[str]
) -> list[_Eligible]:
    matched = []
    for line in lines:
        if not isinstance(line, dict):
            continue
        if line.get("kind") != "item" or line.get("status") != "normal":
            continue
        code = line.get("code")
        department = line.get("department")
        in_upcs = code is not None and _code_key(code) in upcs
        in_departments = department is not None and str(department).strip().upper() in departments
        if not (in_upcs or in_departments):
            continue
        item = _as_eligible(line)
        if item is not None:
            matched.append(item)
    return matched


def _as_eligible(line: dict[str, Any]) -> _Eligible | None:
    """The line's whole units and amount; None for refunds, zero or unreadable lines."""
    quantity = parse_decimal(_text(line.get("quantity")))
    number = line.get("line_number")
    if quantity is None or quantity < 1 or not isinstance(number, int) or isinstance(number, bool):
        return None
    units = int(quantity)  # integer part: 2.000 packs is 2 packs
    amount = parse_decimal(_text(line.get("amount")))
    if amount is None:
        unit_price = parse_decimal(_text(line.get("unit_price")))
        amount = unit_price * quantity if unit_price is not None else None
    if amount is None or amount <= ZERO:
        return None
    return _Eligible(number, units, amount)


def _text(value: Any) -> str | None:
    # Decimals must arrive as strings; a float or int here is a contract violation, not a number.
    return value if isinstance(value, str) else None


def _rewards(program: dict[str, Any], discount: _Discount, matched: list[_Eligible]) -> list[dict]:
    rewards = []
    remaining = discount.max_units  # shared by the whole basket, not per line
    for item in matched:
        if remaining is not None and remaining <= 0:
            break
        if discount.per == "unit":
            units = item.units if remaining is None else min(item.units, remaining)
            value = discount.value * units
            used = units
        else:  # "line": the value once per line; max_units then caps the number of lines
            units = item.units
            value = discount.value
            used = 1
        value = min(to_cents(value), to_cents(item.amount))  # never more than the line costs
        if value <= ZERO or units <= 0:
            continue
        if remaining is not None:
            remaining -= used
        rewards.append(_reward(program, item.line_number, value, units))
    return rewards


def _reward(program: dict[str, Any], line_number: int, value: Decimal, units: int) -> dict:
    return {
        # Stable: the same basket always yields the same ids, so replays and the offline
        # engine agree with the host about which reward is which.
        "reward_id": f"{program['program_id']}-{line_number}",
        "target_line": line_number,
        "method": "amount_off",
        "value": fmt_money(value),
        "limit_quantity": units,
        "receipt_short": program.get("receipt_short", ""),
        "receipt_long": program.get("receipt_long", ""),
    }


def cap_to_lines(
    rewards: list[dict[str, Any]], lines: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Several programs may reward one line: together they never exceed the line's amount.

    Used by the reference host and the offline engine alike, on every program's rewards."""
    left: dict[Any, Decimal] = {}
    for line in lines:
        amount = parse_decimal(line["amount"]) if isinstance(line.get("amount"), str) else None
        if amount is not None:
            left[line.get("line_number")] = amount
    kept = []
    for reward in rewards:
        room = left.get(reward["target_line"])
        if room is None:  # no amount on the line: the program already capped it
            kept.append(reward)
            continue
        value = min(Decimal(reward["value"]), room)
        if value <= ZERO:
            continue
        left[reward["target_line"]] = room - value
        kept.append({**reward, "value": fmt_money(value)})
    return kept
