"""The internal model of POS loyalty messages, independent of either wire dialect.

The XML reader fills these from whatever a POS sends; the writers turn a `Response` into exact
XML for one dialect. Wire names live in `wire.py` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

# The message stems of the interface. A request is "<Stem>Request", its answer "<Stem>Response".
MESSAGE_STEMS = (
    "GetLoyaltyOnlineStatus",
    "BeginCustomer",
    "GetRewards",
    "FinalizeRewards",
    "CancelTransaction",
    "ReverseTransaction",
    "CancelRedemption",
    "GetRewardStatus",
    "GetCustomerMessaging",
    "EndCustomer",
    "EndPeriod",
)


@dataclass
class RequestHeader:
    interface_version: str = ""
    vendor_name: str = ""
    vendor_model_version: str = ""
    pos_sequence_id: str = ""
    loyalty_sequence_id: str = ""
    store_location_id: str = ""
    offline: bool = False


@dataclass
class LoyaltyIdEntry:
    value: str
    entry_method: str = ""


@dataclass
class Line:
    """One TransactionLine. `kind` is item, merchandise, fuel, tender, tax or other."""

    line_number: int
    kind: str
    status: str = "normal"
    code_format: str | None = None
    code: str | None = None
    department: str | None = None
    description: str | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    regular_price: Decimal | None = None
    amount: Decimal | None = None
    discountable: bool | None = None
    grade: str | None = None
    fuel_position: str | None = None
    prepay: bool | None = None
    tender_code: str | None = None
    tender_amount: Decimal | None = None
    applied_rewards: dict[str, Decimal | None] = field(default_factory=dict)
    """Rewards the POS reports as applied on this line (Promotion/TenderInfo): id -> amount."""


@dataclass
class Period:
    """A POS business period (BusinessPeriod): its date, kind and bounds, as RFC 3339."""

    business_date: str | None = None
    type: str | None = None  # the PrimaryReportPeriod's interval: "day", "shift", ...
    begin: str | None = None
    end: str | None = None

    def as_json(self) -> dict[str, str]:
        return {
            k: v for k, v in (("type", self.type), ("begin", self.begin), ("end", self.end)) if v
        }


@dataclass
class TransactionData:
    register_id: str | None = None
    fuel_position_id: str | None = None
    cashier_id: str | None = None
    pos_transaction_id: str | None = None
    business_date: str | None = None
    outside_sale: bool = False
    training: bool = False
    period: Period | None = None
    event_started_at: str | None = None  # RFC 3339, from EventStartDate/EventStartTime
    event_ended_at: str | None = None
    lines: list[Line] = field(default_factory=list)

    def applied_rewards(self) -> dict[str, Decimal | None]:
        applied: dict[str, Decimal | None] = {}
        for line in self.lines:
            applied.update(line.applied_rewards)
        return applied


@dataclass
class Request:
    stem: str
    header: RequestHeader
    loyalty_id: LoyaltyIdEntry | None = None
    transaction: TransactionData | None = None
    register_id: str | None = None  # BeginCustomer carries it outside TransactionData
    outside_sale: bool | None = None
    points_redeemed: Decimal | None = None
    final_total: Decimal | None = None
    reward_ids: list[str] = field(default_factory=list)
    """CancelRedemption: the LoyaltyRewardIDs it names (anywhere in the body)."""
    periods: dict[str, Period] = field(default_factory=dict)
    """EndPeriod: "from" (the period it closes) and "to" (the one it opens)."""
    dialect: str = "passport"
    extra: dict[str, str] = field(default_factory=dict)
    """Unknown top-level elements, kept as raw text by name instead of failing."""
    refused: str | None = None
    """Why the body was not read (a value out of bounds); the request then has no body."""

    @property
    def known(self) -> bool:
        return self.stem in MESSAGE_STEMS

    @property
    def register(self) -> str | None:
        if self.transaction and self.transaction.register_id:
            return self.transaction.register_id
        return self.register_id


@dataclass
class Reward:
    """An AddReward as the POS will see it (POS method names: amountOff, percentOff, newPrice)."""

    reward_id: str
    target_line: int
    method: str
    value: Decimal
    limit_quantity: int | None = None
    receipt_short: str = ""
    receipt_long: str = ""


@dataclass
class Response:
    stem: str
    header: RequestHeader
    """The request's header, echoed; `loyalty_sequence_id` may be the newly assigned one."""
    prompt_for_loyalty: bool | None = None
    loyalty_id_valid: bool | None = None
    loyalty_id_text: str = ""
    add_rewards: list[Reward] = field(default_factory=list)
    remove_reward_ids: list[str] = field(default_factory=list)
    receipt_lines: list[str] = field(default_factory=list)
