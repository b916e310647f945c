"""Request builders: a sale's messages in a few words (header, lines, transaction, requests).

Builders take a full `RequestHeader` or just a POSSequenceID, and amounts as Decimal, str or int.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from app.money import to_cents
from app.pos.model import Line, LoyaltyIdEntry, Period, Request, RequestHeader, TransactionData

Number = Decimal | str | int


def _dec(value: Number) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def header(
    seq: str,
    loyalty_sequence_id: str = "",
    offline: bool = False,
    store: str = "S-1001",
    vendor: str = "Gilbarco",
    model: str = "12.23.03.02",
    version: str = "1.2",
) -> RequestHeader:
    return RequestHeader(
        interface_version=version,
        vendor_name=vendor,
        vendor_model_version=model,
        pos_sequence_id=seq,
        loyalty_sequence_id=loyalty_sequence_id,
        store_location_id=store,
        offline=offline,
    )


HeadLike = RequestHeader | str


def _head(head: HeadLike) -> RequestHeader:
    """Builders take a full header or just a POSSequenceID."""
    return header(head) if isinstance(head, str) else head


def item_line(
    n: int,
    upc: str,
    qty: Number,
    price: Number,
    department: str = "TOBACCO",
    description: str | None = None,
    status: str = "normal",
    applied: dict[str, Decimal] | None = None,
) -> Line:
    quantity, unit_price = _dec(qty), _dec(price)
    return Line(
        line_number=n,
        kind="item",
        status=status,
        code_format="upcA",
        code=upc,
        department=department,
        description=description or f"ITEM {upc}",
        quantity=quantity,
        unit_price=unit_price,
        regular_price=unit_price,
        amount=to_cents(quantity * unit_price),
        applied_rewards=dict(applied or {}),
    )


def fuel_line(
    n: int,
    grade: str,
    position: str,
    qty: Number,
    price: Number,
    prepay: bool = False,
    status: str = "normal",
) -> Line:
    quantity, unit_price = _dec(qty), _dec(price)
    return Line(
        line_number=n,
        kind="fuel",
        status=status,
        description=f"FUEL GRADE {grade}",
        grade=grade,
        fuel_position=position,
        quantity=quantity,
        unit_price=unit_price,
        amount=to_cents(quantity * unit_price),
        prepay=prepay,
    )


def prepay_line(n: int, grade: str, position: str, amount: Number, price: Number) -> Line:
    """A prepay (or pay-at-the-pump authorisation) before fueling, as pos-loyalty-interface.md
    "Fuel rewards" describes it: the grade's price and the amount, no quantity yet."""
    return Line(
        line_number=n,
        kind="fuel",
        description=f"FUEL GRADE {grade} PREPAY",
        grade=grade,
        fuel_position=position,
        unit_price=_dec(price),
        amount=to_cents(_dec(amount)),
        prepay=True,
    )


def pump_transaction(
    position: str, pos_transaction_id: str, lines: Iterable[Line], business_date: str | None = None
) -> TransactionData:
    """An outside sale at pump `position`: a FuelPositionID instead of a RegisterID."""
    txn = transaction("", pos_transaction_id, lines, business_date, outside_sale=True)
    txn.register_id, txn.fuel_position_id = None, position
    return txn


def tender_line(
    n: int, code: str, amount: Number, applied: dict[str, Decimal] | None = None
) -> Line:
    return Line(
        line_number=n,
        kind="tender",
        tender_code=code,
        tender_amount=to_cents(_dec(amount)),
        applied_rewards=dict(applied or {}),
    )


def transaction(
    register_id: str,
    pos_transaction_id: str,
    lines: Iterable[Line],
    business_date: str | None = None,
    cashier_id: str = "7",
    outside_sale: bool = False,
) -> TransactionData:
    return TransactionData(
        register_id=register_id,
        cashier_id=cashier_id,
        pos_transaction_id=pos_transaction_id,
        business_date=business_date,
        outside_sale=outside_sale,
        lines=list(lines),
    )


def message(
    stem: str,
    head: HeadLike,
    txn: TransactionData | None = None,
    loyalty_id: str | None = None,
    entry_method: str = "manual",
) -> Request:
    """Any request, including CancelRedemption, GetRewardStatus, GetCustomerMessaging or an
    unknown stem."""
    entry = LoyaltyIdEntry(loyalty_id, entry_method) if loyalty_id is not None else None
    return Request(stem=stem, header=_head(head), loyalty_id=entry, transaction=txn)


def online_status(head: HeadLike) -> Request:
    return message("GetLoyaltyOnlineStatus", head)


def begin_customer(head: HeadLike, register_id: str = "1", outside_sale: bool = False) -> Request:
    request = message("BeginCustomer", head)
    request.register_id, request.outside_sale = register_id, outside_sale
    return request


def end_customer(head: HeadLike) -> Request:
    return message("EndCustomer", head)  # header only, as in the field capture


def get_rewards(
    head: HeadLike,
    txn: TransactionData,
    loyalty_id: str | None = None,
    entry_method: str = "manual",
) -> Request:
    return message("GetRewards", head, txn, loyalty_id, entry_method)


def finalize(
    head: HeadLike,
    txn: TransactionData,
    loyalty_id: str | None = None,
    entry_method: str = "manual",
    final_total: Number | None = None,
    points_redeemed: Number | None = None,
) -> Request:
    request = message("FinalizeRewards", head, txn, loyalty_id, entry_method)
    request.final_total = _dec(final_total) if final_total is not None else None
    request.points_redeemed = _dec(points_redeemed) if points_redeemed is not None else None
    return request


def cancel(head: HeadLike, txn: TransactionData | None = None) -> Request:
    return message("CancelTransaction", head, txn)  # Passport sends the header only


def reverse(head: HeadLike, txn: TransactionData | None = None) -> Request:
    return message("ReverseTransaction", head, txn)


def end_period(head: HeadLike, from_date: str | None = None, to_date: str | None = None) -> Request:
    """EndPeriod closing the business day `from_date` and opening `to_date` (as Passport
    sends it: a "day" report period each)."""
    request = message("EndPeriod", head)
    for key, day in (("from", from_date), ("to", to_date)):
        if day:
            request.periods[key] = Period(business_date=day, type="day")
    return request
