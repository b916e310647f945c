"""What the POS applied: the rewards held in one sale and what each takes off the basket."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from app.money import ZERO, to_cents
from app.pos.model import Line, Response, Reward
from simulators.pos.messages import tender_line

SALE_KINDS = ("item", "merchandise", "fuel")


@dataclass
class RewardChanges:
    """What one GetRewards answer changed. The box removes and re-adds rewards it keeps."""

    removed: list[Reward] = field(default_factory=list)
    added: list[Reward] = field(default_factory=list)
    kept: list[Reward] = field(default_factory=list)


class AppliedRewards:
    """The rewards the POS has applied in one sale, and what each takes off the current basket.

    Applied as a POS applies them: amountOff on the target line (the ticket for line 0),
    newPrice on up to the limit quantity, percentOff of the line (or ticket) amount; never below
    zero, and nothing for a reward whose line is no longer sold.
    """

    def __init__(self) -> None:
        self.rewards: dict[str, Reward] = {}

    def update(self, response: Response) -> RewardChanges:
        before = dict(self.rewards)
        for reward_id in response.remove_reward_ids:
            self.rewards.pop(reward_id, None)
        for reward in response.add_rewards:
            self.rewards[reward.reward_id] = reward
        return RewardChanges(
            removed=[r for rid, r in before.items() if rid not in self.rewards],
            added=[r for rid, r in self.rewards.items() if rid not in before],
            kept=[r for rid, r in self.rewards.items() if rid in before],
        )

    def amounts(self, lines: Iterable[Line]) -> dict[str, Decimal]:
        """Reward id -> the currency it takes off; rewards that cannot apply are left out."""
        sale = {line.line_number: line for line in lines if on_sale(line)}
        left = {number: line.amount or ZERO for number, line in sale.items()}
        ticket = sum(left.values(), ZERO)
        ticket_left = ticket
        result: dict[str, Decimal] = {}
        for reward in self.rewards.values():
            line = sale.get(reward.target_line)
            if reward.target_line and line is None:
                continue
            room = min(left[reward.target_line], ticket_left) if line else ticket_left
            amount = min(to_cents(_reward_amount(reward, line, ticket)), room)
            if amount <= ZERO:
                continue
            if line is not None:
                left[reward.target_line] -= amount
            ticket_left -= amount
            result[reward.reward_id] = amount
        return result

    def total(self, lines: Iterable[Line]) -> Decimal:
        return sum(self.amounts(lines).values(), ZERO)

    def report(
        self,
        lines: Iterable[Line],
        ticket_tender_line: int | None = None,
        held: bool = False,
    ) -> list[Line]:
        """The basket with each applied reward on its line (Promotion/LoyaltyRewardID), and the
        ticket rewards on a loyalty tender line when `ticket_tender_line` is given.

        `held` (for GetRewards) also reports, at 0.00, rewards still held whose line was voided,
        so the host sees them and can remove them; FinalizeRewards reports only what was given.
        """
        lines = list(lines)
        amounts = self.amounts(lines)
        reported: list[Line] = []
        for line in lines:
            copy = replace(line, applied_rewards=dict(line.applied_rewards))
            for reward_id, reward in self.rewards.items():
                if reward.target_line != line.line_number:
                    continue
                if reward_id in amounts and on_sale(line):
                    copy.applied_rewards[reward_id] = amounts[reward_id]
                elif held:
                    copy.applied_rewards[reward_id] = ZERO
            reported.append(copy)
        ticket = {rid: a for rid, a in amounts.items() if not self.rewards[rid].target_line}
        if ticket and ticket_tender_line is not None:
            total = sum(ticket.values(), ZERO)
            reported.append(tender_line(ticket_tender_line, "loyalty", total, applied=ticket))
        return reported


def on_sale(line: Line) -> bool:
    return line.kind in SALE_KINDS and line.status == "normal"


def _reward_amount(reward: Reward, line: Line | None, ticket: Decimal) -> Decimal:
    base = (line.amount or ZERO) if line is not None else ticket
    method = reward.method.lower()
    if method == "amountoff":
        return reward.value
    if method == "percentoff":
        return base * min(reward.value, Decimal(100)) / 100
    if method == "newprice":
        if line is None or line.unit_price is None or line.quantity is None:
            return ZERO  # a new price needs a line to price
        units = line.quantity
        if reward.limit_quantity is not None:
            units = min(units, Decimal(reward.limit_quantity))
        return max(line.unit_price - reward.value, ZERO) * units
    return ZERO  # a method this POS does not know: it applies nothing
