"""The scripted sales: what a cashier and a customer do, played through `Sale`."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

from app.money import ZERO
from app.pos.model import Line, Response, Reward
from simulators.pos.client import PosClient
from simulators.pos.display import money, price, what
from simulators.pos.messages import (
    cancel,
    fuel_line,
    get_rewards,
    item_line,
    prepay_line,
    pump_transaction,
    tender_line,
)
from simulators.pos.messages import finalize as finalize_request
from simulators.pos.register import Out, Sale, ScriptResult

Script = Callable[[PosClient, Out], ScriptResult]

TOBACCO_UPC = "028200003843"
TOBACCO_NAME = "MARLBORO GOLD BOX"


def _marlboro(n: int, qty: int = 2) -> Line:
    return item_line(n, TOBACCO_UPC, qty, "9.49", "TOBACCO", TOBACCO_NAME)


def tobacco_phone_sale(client: PosClient, out: Out) -> ScriptResult:
    """Two packs of cigarettes, phone number keyed in: the standard Scan Data discount."""
    sale = Sale(client, out)
    sale.begin_customer()
    sale.online_status()
    sale.ring(_marlboro(1))
    sale.get_rewards("2142840123", "manual")
    response = sale.send(sale.pay("cash"))
    sale.print_receipt(response)
    sale.end_customer()
    return sale.result("tobacco_phone_sale")


def sale_without_loyalty(client: PosClient, out: Out) -> ScriptResult:
    """Snacks and drinks, the customer gives no loyalty ID."""
    sale = Sale(client, out)
    sale.ring(item_line(1, "028400090896", 1, "2.19", "SNACKS", "DORITOS NACHO CHEESE"))
    sale.ring(item_line(2, "049000050103", 2, "2.29", "BEVERAGES", "COCA-COLA 20OZ"))
    out("Customer has no loyalty ID")
    sale.get_rewards()
    response = sale.send(sale.pay("cash"))
    sale.print_receipt(response)
    return sale.result("sale_without_loyalty")


def changed_basket(client: PosClient, out: Out) -> ScriptResult:
    """The cigarettes are voided and a coffee added after the discount was shown."""
    sale = Sale(client, out)
    sale.ring(_marlboro(1))
    sale.get_rewards("2142840124", "manual")
    sale.void(1)
    sale.ring(item_line(2, "000000004016", 1, "1.99", "COFFEE", "HOT COFFEE 16OZ"))
    changes = sale.get_rewards()
    out(f"Rewards removed: {_names(changes.removed)}")
    out(f"Rewards added: {_names(changes.added)}")
    response = sale.send(sale.pay("cash"))
    sale.print_receipt(response)
    return sale.result("changed_basket")


def _names(rewards: list[Reward]) -> str:
    return ", ".join(f"{r.reward_id} ({what(r)})" for r in rewards) or "none"


def cancelled_sale(client: PosClient, out: Out) -> ScriptResult:
    """The customer walks away after the discount was shown: the POS cancels the sale."""
    sale = Sale(client, out)
    sale.ring(_marlboro(1))
    sale.get_rewards("2142840125", "manual")
    dropped = sale.discount
    sale.send(cancel(sale.head(transaction_id=sale.pos_transaction_id)))
    out("POS screen: Sale cancelled, nothing due")
    if dropped:
        out(f"Loyalty discount dropped: {money(-dropped)}")
    responses = list(sale.responses)
    return ScriptResult("cancelled_sale", responses, ZERO, ZERO)


def finalize_resend(client: PosClient, out: Out) -> ScriptResult:
    """Cigarettes and fuel; the POS misses the FinalizeRewards answer and sends it again."""
    sale = Sale(client, out)
    sale.ring(_marlboro(1, qty=1))
    sale.ring(fuel_line(2, "001", "3", "10.000", "3.199"))
    sale.get_rewards("2142840126", "manual")
    request = sale.pay("cash")
    first = sale.send(request)
    first_payload = client.last_payload
    out(f"Answer 1: {_describe(first)} (the POS did not see it)")
    out("POS sends the same FinalizeRewards again")
    second = sale.send(request)
    identical = first_payload == client.last_payload
    out(f"Answer 2: {_describe(second)}")
    out(f"Answers identical: {'yes' if identical else 'no'}")
    sale.print_receipt(second)
    return sale.result("finalize_resend", resend_identical=identical)


def _describe(response: Response) -> str:
    lsid = response.header.loyalty_sequence_id or "none"
    lines = len(response.receipt_lines)
    return f"{response.stem}Response, LoyaltySequenceID {lsid}, {lines} receipt line(s)"


def prepay_at_the_pump(client: PosClient, out: Out) -> ScriptResult:
    """Pay at the pump: the customer keys a phone number at pump 3 and prepays $40 of regular.
    The cents-per-gallon reward must reach the pump before the nozzle is lifted: Passport rolls
    the price back; EPS cannot carry it before fueling (the box tells the host it was dropped)."""
    sale = Sale(client, out)
    pump, prepaid, full = "3", Decimal("40.00"), Decimal("3.459")
    line = prepay_line(1, "001", pump, prepaid, full)
    out(f"Pump {pump}: customer keys 2142840127 and prepays {money(prepaid)} of regular")
    txn = pump_transaction(pump, sale.pos_transaction_id, [line], sale.business_date)
    head = sale.head(register=pump, transaction_id=sale.pos_transaction_id)
    answer = sale.send(get_rewards(head, txn, "2142840127"))
    roll_back = next((r for r in answer.add_rewards if r.method == "newPrice"), None)
    unit = roll_back.value if roll_back else full
    limit = Decimal(roll_back.limit_quantity or 0) if roll_back else Decimal(0)
    if roll_back:
        shown = price(unit.normalize())
        out(f"Pump display: {shown}/gal (was {price(full)}) for up to {limit} gal")
    else:
        out(f"Pump display: {price(full)}/gal (no per-gallon discount before fueling here)")
    # The pump stops at the prepaid amount: the discounted gallons first, then full price.
    cheap = min(limit, (prepaid / unit).quantize(Decimal("0.001"), ROUND_DOWN)) if roll_back else 0
    gallons = cheap + ((prepaid - cheap * unit) / full).quantize(Decimal("0.001"), ROUND_DOWN)
    saved = ((full - unit) * cheap).quantize(Decimal("0.01"))
    out(f"Fueling done: {gallons} gal for {money(prepaid)}")
    line.quantity = gallons
    if roll_back:
        line.applied_rewards[roll_back.reward_id] = saved
    txn.lines.append(tender_line(2, "credit", prepaid))
    head = sale.head(register=pump, transaction_id=sale.pos_transaction_id)
    head.loyalty_sequence_id = answer.header.loyalty_sequence_id
    done = sale.send(finalize_request(head, txn, "2142840127", final_total=prepaid))
    for receipt in done.receipt_lines:
        out(f"Receipt: {receipt}")
    if saved:
        out(f"Receipt: You saved {money(saved)} on fuel")
    return ScriptResult("prepay_at_the_pump", list(sale.responses), saved, prepaid)


SCRIPTS: dict[str, Script] = {
    "tobacco_phone_sale": tobacco_phone_sale,
    "sale_without_loyalty": sale_without_loyalty,
    "changed_basket": changed_basket,
    "cancelled_sale": cancelled_sale,
    "finalize_resend": finalize_resend,
    "prepay_at_the_pump": prepay_at_the_pump,
}
