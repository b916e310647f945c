"""One sale at a register: ring lines, ask for rewards, pay, print; saying what the POS shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from app.money import ZERO
from app.pos.model import Line, Request, RequestHeader, Response, TransactionData
from simulators.pos.client import PosClient
from simulators.pos.display import money, price, what, where
from simulators.pos.messages import (
    begin_customer,
    end_customer,
    finalize,
    get_rewards,
    header,
    online_status,
    tender_line,
    transaction,
)
from simulators.pos.rewards import AppliedRewards, RewardChanges, on_sale


@dataclass
class ScriptResult:
    name: str
    responses: list[Response]
    discount: Decimal
    """The total discount the POS applied."""
    total_due: Decimal
    resend_identical: bool | None = None
    """finalize_resend only: whether both answers to the same FinalizeRewards were identical."""


Out = Callable[[str], None]  # where the POS "shows" a line: print, a list's append, ...


class Sale:
    """One POS transaction in progress: its basket, the rewards applied, what the POS shows."""

    def __init__(self, client: PosClient, out: Out, register: str = "1") -> None:
        self.client = client
        self.out = out
        self.register = register
        self.pos_transaction_id = client.counter.new_transaction()
        self.business_date = date.today().isoformat()
        self.lines: list[Line] = []
        self.rewards = AppliedRewards()
        self.shown: dict[str, Decimal] = {}  # discounts on the screen now
        self.loyalty_sequence_id = ""
        self.loyalty_id: str | None = None
        self.responses: list[Response] = []
        self.receipt: list[str] = []

    # -- the basket

    def ring(self, line: Line) -> None:
        self.lines.append(line)
        if line.kind == "fuel":
            self.out(
                f"Fuel: pump {line.fuel_position}, grade {line.grade}, {line.quantity} gal"
                f" @ {price(line.unit_price or ZERO)} = {money(line.amount or ZERO)}"
            )
        else:
            self.out(
                f"Cashier scans: {line.quantity} x {line.description}"
                f" @ {price(line.unit_price or ZERO)} = {money(line.amount or ZERO)}"
            )

    def void(self, line_number: int) -> None:
        for line in self.lines:
            if line.line_number == line_number:
                line.status = "void"
                self.out(f"Cashier voids line {line_number}: {line.description}")

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount or ZERO for line in self.lines if on_sale(line)), ZERO)

    @property
    def discount(self) -> Decimal:
        return self.rewards.total(self.lines)

    @property
    def total_due(self) -> Decimal:
        return self.subtotal - self.discount

    def next_line_number(self) -> int:
        return max((line.line_number for line in self.lines), default=0) + 1

    # -- messages

    def head(self, register: str | None = None, transaction_id: str | None = None) -> RequestHeader:
        seq = self.client.counter.next(register or self.register, transaction_id or "0")
        return header(seq, self.loyalty_sequence_id)

    def send(self, request: Request) -> Response:
        response = self.client.send(request)
        self.responses.append(response)
        return response

    def txn(self, lines: list[Line]) -> TransactionData:
        return transaction(self.register, self.pos_transaction_id, lines, self.business_date)

    def begin_customer(self) -> None:
        self.send(begin_customer(self.head(), self.register))
        self.out(f"POS screen: Register {self.register}, new customer")

    def online_status(self) -> None:
        response = self.send(online_status(self.head(register="00")))
        if response.prompt_for_loyalty:
            self.out("POS screen: Loyalty ID or phone number?")
        else:
            self.out("POS screen: Loyalty not available right now (no prompt)")

    def get_rewards(
        self, loyalty_id: str | None = None, entry_method: str = "manual"
    ) -> RewardChanges:
        if loyalty_id is not None:
            self.loyalty_id = loyalty_id
            self.out(f"Customer gives loyalty ID {loyalty_id} ({entry_method})")
        lines = self.rewards.report(self.lines, held=True)  # later calls say what is applied
        head = self.head(transaction_id=self.pos_transaction_id)
        response = self.send(get_rewards(head, self.txn(lines), loyalty_id, entry_method))
        # The box assigns the LoyaltySequenceID in its first answer; the POS echoes it after.
        self.loyalty_sequence_id = response.header.loyalty_sequence_id or self.loyalty_sequence_id
        self._show_loyalty_id(response)
        changes = self.rewards.update(response)
        self._show_discounts(changes)
        self.receipt = list(response.receipt_lines)  # the latest answer's lines replace earlier
        return changes

    def _show_loyalty_id(self, response: Response) -> None:
        if response.loyalty_id_valid is True:
            self.out(f"POS screen: {response.loyalty_id_text or 'Loyalty ID accepted'}")
        elif response.loyalty_id_valid is False:
            reason = response.loyalty_id_text or "no reason given"
            self.out(f"POS screen: Loyalty ID not accepted ({reason})")

    def _show_discounts(self, changes: RewardChanges) -> None:
        amounts = self.rewards.amounts(self.lines)
        for reward in changes.removed:
            was = self.shown.get(reward.reward_id)
            note = f" (was {money(-was)})" if was is not None else ""
            self.out(f"Discount removed from {where(reward)}: {what(reward)}{note}")
        for reward in changes.kept + changes.added:
            amount = amounts.get(reward.reward_id)
            if amount is None:
                self.out(f"POS cannot apply {what(reward)}: {where(reward)} is not on sale")
                continue
            place = f"line {reward.target_line}" if reward.target_line else "the ticket"
            self.out(f"Discount on {place}: {money(-amount)} ({what(reward)})")
        self.shown = amounts

    def show_totals(self) -> None:
        self.out(f"Subtotal: {money(self.subtotal)}")
        if self.discount:
            self.out(f"Loyalty discounts: {money(-self.discount)}")
        self.out(f"Total due: {money(self.total_due)}")

    def finalize_request(self, tender: str = "cash") -> Request:
        """The FinalizeRewards the POS sends at tender: final basket, applied rewards, payment."""
        lines = self.rewards.report(self.lines, ticket_tender_line=self.next_line_number())
        number = max(line.line_number for line in lines) + 1
        lines.append(tender_line(number, tender, self.total_due))
        head = self.head(transaction_id=self.pos_transaction_id)
        return finalize(head, self.txn(lines), self.loyalty_id, final_total=self.total_due)

    def pay(self, tender: str = "cash") -> Request:
        self.show_totals()
        self.out(f"Customer pays {tender}: {money(self.total_due)}")
        return self.finalize_request(tender)

    def print_receipt(self, response: Response) -> None:
        # The box's final lines win over the ones it previewed with GetRewards.
        box_lines = response.receipt_lines or self.receipt
        for line in box_lines:
            self.out(f"Receipt: {line}")
        saved = f"You saved {money(self.discount)} today"
        if self.discount and saved not in box_lines:
            self.out(f"Receipt: {saved}")
        self.out("POS screen: Sale complete")

    def end_customer(self) -> None:
        self.send(end_customer(self.head()))

    def result(self, name: str, **extra: object) -> ScriptResult:
        return ScriptResult(name, list(self.responses), self.discount, self.total_due, **extra)
