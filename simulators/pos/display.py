"""What the POS shows: money, unit prices and rewards as a cashier reads them."""

from __future__ import annotations

from decimal import Decimal

from app.money import to_cents
from app.pos.model import Reward


def money(value: Decimal) -> str:
    text = f"${abs(to_cents(value)):,.2f}"
    return f"-{text}" if value < 0 else text


def price(value: Decimal) -> str:
    """Unit prices keep fuel's third decimal ($3.199)."""
    return money(value) if value == to_cents(value) else f"${value}"


def what(reward: Reward) -> str:
    return reward.receipt_long or reward.receipt_short or reward.reward_id


def where(reward: Reward) -> str:
    return f"line {reward.target_line}" if reward.target_line else "ticket"
