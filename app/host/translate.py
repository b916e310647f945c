"""The host's rewards as AddRewards the POS can apply, never making a line or the ticket negative.

Passport takes amountOff, percentOff and newPrice; Verifone EPS honours only amountOff, so every
reward is converted to the currency it takes off, or dropped when that cannot be known.
Receipt texts are cut to what the POS prints (8/24/40 characters).

Fuel (pos-loyalty-interface.md, "Fuel rewards"): a cents-per-gallon `per_unit_off` must reach
the POS before fueling, when a prepay or pump line has the grade's price but no quantity yet.
Passport gets it as a price roll-back (newPrice = price - discount, 4 decimals, for up to
`limit_quantity` units); EPS can carry only a currency amount, unknown until the quantity is,
so there it is dropped and reported in the event's `rewards_dropped`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.host.payload import SALE_KINDS, basket_total
from app.money import ZERO, parse_decimal, to_cents
from app.pos import wire
from app.pos.model import Line, Reward, TransactionData

log = logging.getLogger("connectbox.rewards")
_DIGITS = re.compile(r"[0-9]{1,9}")
# The host is a peer too: its answers are bounded before the box works on them.
MAX_HOST_REWARDS = 50
MAX_RECEIPT_LINES = 20
MAX_LIMIT_QUANTITY = 10_000
MAX_REWARD_ID_CHARS = 64


class Dropped(Exception):
    """This reward cannot be given to the POS; the message says why."""


@dataclass
class Translated:
    rewards: list[Reward] = field(default_factory=list)
    amounts: dict[str, Decimal] = field(default_factory=dict)
    """The currency each reward takes off, by reward id."""
    dropped: list[dict[str, str]] = field(default_factory=list)
    """Rewards the host granted that the POS cannot be given: {"reward_id", "reason"}."""


def trim(text: Any, limit: int) -> str:
    """Host text as the POS may print it: printable characters only (no control characters,
    no lone surrogates: either would make the XML unreadable), cut to `limit`."""
    if not isinstance(text, str):  # str() of a huge int or a deep list is unbounded work
        text = str(text) if isinstance(text, int | float) and abs(text) < 1e18 else ""
    text = "".join(c for c in text[: limit * 4] if c.isprintable())
    return text.strip()[:limit].rstrip()


def receipt_lines(lines: Any) -> list[str]:
    if not isinstance(lines, list):
        return []
    kept = (trim(line, wire.RECEIPT_LINE_MAX) for line in lines[:MAX_RECEIPT_LINES])
    return [line for line in kept if line]


def translate_rewards(host_rewards: Any, txn: TransactionData | None, dialect: str) -> Translated:
    result = Translated()
    if not isinstance(host_rewards, list):
        return result
    lines = {line.line_number: line for line in (txn.lines if txn else []) if _saleable(line)}
    remaining = {number: line.amount or ZERO for number, line in lines.items()}
    ticket_left = basket_total(txn)
    if len(host_rewards) > MAX_HOST_REWARDS:
        log.warning(
            "host sent %d rewards; the first %d are used", len(host_rewards), MAX_HOST_REWARDS
        )
    for raw in host_rewards[:MAX_HOST_REWARDS]:
        try:
            reward, amount = _translate_one(raw, lines, ticket_left, dialect)
            target = reward.target_line
            # A roll-back before fueling cannot make anything negative: the new price is
            # within 0..price, and the POS applies it to the gallons as they are dispensed.
            over = amount > ticket_left or (target and amount > remaining[target])
            if over and not _before_fueling_line(reward, lines):
                where = f"line {target}" if target else "the ticket"
                raise Dropped(f"would make {where} negative")
        except Dropped as why:
            reward_id = (
                trim(raw.get("reward_id"), MAX_REWARD_ID_CHARS) if isinstance(raw, dict) else ""
            )
            reward_id = reward_id or "?"
            log.warning("dropped host reward %s: %s", reward_id, why)
            result.dropped.append({"reward_id": reward_id, "reason": str(why)})
            continue
        if target:
            remaining[target] = max(ZERO, remaining[target] - amount)
        ticket_left = max(ZERO, ticket_left - amount)
        result.rewards.append(reward)
        result.amounts[reward.reward_id] = amount
    return result


def _before_fueling_line(reward: Reward, lines: dict[int, Line]) -> bool:
    line = lines.get(reward.target_line)
    return reward.method == "newPrice" and line is not None and _fueling_ahead(line)


def _fueling_ahead(line: Line) -> bool:
    return line.kind == "fuel" and not line.quantity


def _saleable(line: Line) -> bool:
    return line.kind in SALE_KINDS and line.status == "normal"


def _translate_one(
    raw: Any, lines: dict[int, Line], ticket_total: Decimal, dialect: str
) -> tuple[Reward, Decimal]:
    """The POS reward and the currency it takes off."""
    if not isinstance(raw, dict) or not trim(raw.get("reward_id"), MAX_REWARD_ID_CHARS):
        raise Dropped("malformed reward")
    method = raw.get("method")
    value = parse_decimal(trim(raw.get("value"), 32))
    if value is None or value < 0:
        raise Dropped(f"bad value {trim(raw.get('value'), 32)!r}")
    target = _small_int(raw.get("target_line", 0), 999_999)
    limit = raw.get("limit_quantity")
    limit = _small_int(limit, MAX_LIMIT_QUANTITY) if limit is not None else None
    line = lines.get(target)
    if target and line is None:
        raise Dropped(f"target line {target} is not a sale line of this basket")
    base = line.amount if line else ticket_total
    units = _units(line, limit)
    unit_price = line.unit_price if line else None

    if method == "amount_off":
        pos_method, pos_value, amount = "amountOff", value, value
    elif method == "percent_off":
        if value > 100:
            raise Dropped("more than 100 percent off")
        amount = to_cents((base or ZERO) * value / 100)
        pos_method, pos_value = "percentOff", value
    elif method in ("new_price", "per_unit_off"):
        if unit_price is None:
            raise Dropped(f"{method} needs a target line with a price")
        new_price = value if method == "new_price" else unit_price - value
        if new_price < 0 or new_price > unit_price:
            raise Dropped(f"new unit price {new_price} outside 0..{unit_price}")
        if units is None:
            units = _before_fueling(line, limit, dialect)
        amount = to_cents((unit_price - new_price) * units)
        pos_method, pos_value = "newPrice", new_price
    else:
        raise Dropped(f"unknown method {method!r}")

    if dialect == "eps":  # EPS honours only amountOff
        pos_method, pos_value = "amountOff", amount
    reward = Reward(
        reward_id=trim(raw["reward_id"], MAX_REWARD_ID_CHARS),
        target_line=target,
        method=pos_method,
        value=pos_value,
        limit_quantity=limit,
        receipt_short=trim(raw.get("receipt_short"), wire.RECEIPT_SHORT_MAX),
        receipt_long=trim(raw.get("receipt_long"), wire.RECEIPT_LONG_MAX),
    )
    return reward, to_cents(amount)


def _small_int(value: Any, highest: int) -> int:
    """A whole number from the host in 0..highest (JSON ints, or their decimal text)."""
    if isinstance(value, bool):
        raise Dropped("bad target line or limit")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= highest:
        raise Dropped(f"bad target line or limit {trim(value, 24)!r} (0..{highest})")
    return value


def _before_fueling(line: Line | None, limit: int | None, dialect: str) -> Decimal:
    """The units a roll-back on a fuel line without a quantity yet can cover, at most: what
    the prepaid amount buys, within the limit. Only Passport can carry it (newPrice)."""
    if line is None or line.kind != "fuel":
        raise Dropped("needs a target line with a quantity")
    if dialect == "eps":
        raise Dropped(
            "EPS carries only amountOff: a per-unit reward before fueling cannot reach it"
        )
    if line.amount and line.unit_price:
        units = line.amount / line.unit_price  # the prepaid amount's gallons at full price
        return min(units, Decimal(limit)) if limit is not None else units
    if limit is None:
        raise Dropped("a fuel line without amount or quantity needs limit_quantity")
    return Decimal(limit)


def _units(line: Line | None, limit: int | None) -> Decimal | None:
    if line is None or not line.quantity:
        return None
    return min(line.quantity, Decimal(limit)) if limit is not None else line.quantity
