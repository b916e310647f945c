"""A POS simulator: plays the POS (the TCP client) against a box (`connectbox pos-sim`).

Used by the demo, the tests and technicians. `PosClient` frames requests the way Passport or a
Verifone EPS does and checks every answer the way a strict POS would; the request builders write
sales concisely; the scripted sales print what the POS shows on its screen and on the receipt.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from app.money import ZERO, to_cents
from app.pos.framing import (
    ACTION_HEARTBEAT,
    ACTION_MESSAGE,
    EpsFramer,
    Frame,
    FramingError,
    PassportFramer,
    encode_eps,
    encode_passport,
)
from app.pos.model import (
    Line,
    LoyaltyIdEntry,
    Period,
    Request,
    RequestHeader,
    Response,
    Reward,
    TransactionData,
)
from app.pos.xmlcodec import XmlError, parse_xml, read_response, write_request

DIALECTS = ("passport", "eps")
DEFAULT_PORT = 9000
DEFAULT_CONNECT = f"127.0.0.1:{DEFAULT_PORT}"
SALE_KINDS = ("item", "merchandise", "fuel")

Number = Decimal | str | int


class SimulatorError(Exception):
    """The box is unreachable or answered something a POS would reject."""


# ---- sequence ids -------------------------------------------------------------------------


class SequenceCounter:
    """POSSequenceIDs shaped like Passport's: "<register>-<POS transaction>^<message number>^".

    The field capture shows "01-3585^201409^" (register 01, transaction 3585, the 201409th
    message); register 00 for GetLoyaltyOnlineStatus, 99 for EndPeriod and transaction 0 for
    messages outside a sale. Both numbers start from the clock so two runs against one box do not
    reuse POS transaction ids (the box takes a repeated one for a resent FinalizeRewards).
    """

    def __init__(self, start: int | None = None, first_transaction: int | None = None) -> None:
        seed = int(time.time())
        self._messages = itertools.count(start if start is not None else seed % 10**6)
        first = first_transaction if first_transaction is not None else seed % 10**6 * 100
        self._transactions = itertools.count(first)
        self._lock = threading.Lock()

    def next(self, register: str | int = "01", transaction: str | int = 0) -> str:
        with self._lock:
            number = next(self._messages)
        return f"{_register_code(register)}-{transaction}^{number}^"

    def new_transaction(self) -> str:
        """A fresh POSTransactionID."""
        with self._lock:
            return str(next(self._transactions))


def _register_code(register: str | int) -> str:
    text = str(register)
    return f"{int(text):02d}" if text.isdigit() else text


SHARED_COUNTER = SequenceCounter()  # one POS per process: numbers keep rising across clients


# ---- the connection -----------------------------------------------------------------------


class PosClient:
    """One persistent TCP connection to the box, as the POS keeps it."""

    def __init__(
        self,
        host: str,
        port: int,
        dialect: str = "passport",
        complement_crc: bool = False,
        timeout: float = 5.0,
        counter: SequenceCounter | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r} (use passport or eps)")
        self.host = host
        self.port = port
        self.dialect = dialect
        self.complement_crc = complement_crc
        self.timeout = timeout
        self.counter = counter or SHARED_COUNTER
        self.last_rtt_s: float | None = None
        self.rtts: list[float] = []
        self.last_payload: bytes | None = None  # the last response payload, as received
        self._sock: socket.socket | None = None
        self._framer: PassportFramer | EpsFramer | None = None
        self._frames: deque[Frame] = deque()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def framer(self) -> PassportFramer | EpsFramer | None:
        """The framer of the current connection (it records the CRC form the box answered in)."""
        return self._framer

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise SimulatorError(
                f"cannot connect to the box at {self.address}: {_reason(exc)}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._framer = PassportFramer() if self.dialect == "passport" else EpsFramer()
        self._frames.clear()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def __enter__(self) -> PosClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, request: Request) -> Response:
        """Send one request and return the box's answer, checked as a strict POS checks it."""
        payload = self.send_raw(write_request(request, self.dialect))
        expected = f"{request.stem}Response"
        try:
            root = parse_xml(payload)
            response = read_response(payload)
        except XmlError as exc:
            raise SimulatorError(f"unreadable answer to {request.stem}Request: {exc}") from None
        name = root.tag.rsplit("}", 1)[-1] if isinstance(root.tag, str) else "?"
        if name != expected:
            raise SimulatorError(f"answer to {request.stem}Request is named {name}, not {expected}")
        sent, got = request.header.pos_sequence_id, response.header.pos_sequence_id
        if got != sent:
            raise SimulatorError(
                f"{expected} carries POSSequenceID {got!r}, the request had {sent!r}"
            )
        return response

    def send_raw(self, payload: bytes) -> bytes:
        """Frame `payload` as a message, send it and return the payload of the answer frame."""
        self.connect()
        started = time.monotonic()
        try:
            self._write(self._encode(payload, ACTION_MESSAGE))
            answer = self._read_payload(started + self.timeout)
        except SimulatorError:
            self.close()  # the stream's state is unknown now: the next call reconnects
            raise
        self.last_rtt_s = time.monotonic() - started
        self.rtts.append(self.last_rtt_s)
        self.last_payload = answer
        return answer

    def heartbeat(self) -> None:
        """A Passport heartbeat (action 2); the box sends no reply."""
        if self.dialect != "passport":
            raise SimulatorError("heartbeats are known for the Passport framing only")
        self.connect()
        self._write(self._encode(b"", ACTION_HEARTBEAT))

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes, unframed: for hostile-input tests."""
        self.connect()
        self._write(data)

    def wait_closed(self, timeout: float = 2.0) -> bool:
        """True when the box closes the connection within `timeout` (what it does to garbage)."""
        if self._sock is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv(65536):
                    self.close()
                    return True
        except TimeoutError:
            return False
        except OSError:  # a reset is a close too
            self.close()
            return True
        return False

    def _encode(self, payload: bytes, action: int) -> bytes:
        if self.dialect == "eps":
            return encode_eps(payload)
        return encode_passport(payload, action, self.complement_crc)

    def _write(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise SimulatorError(
                f"cannot send to the box at {self.address}: {_reason(exc)}"
            ) from None

    def _read_payload(self, deadline: float) -> bytes:
        """The next message frame; heartbeats from the box (none are expected) are skipped."""
        assert self._sock is not None and self._framer is not None
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if not frame.heartbeat:
                    return frame.payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimulatorError(f"no answer from the box within {self.timeout:g} s")
            try:
                self._sock.settimeout(left)
                data = self._sock.recv(65536)
            except TimeoutError:
                raise SimulatorError(f"no answer from the box within {self.timeout:g} s") from None
            except OSError as exc:
                raise SimulatorError(f"connection to the box lost: {_reason(exc)}") from None
            if not data:
                raise SimulatorError("the box closed the connection without answering")
            try:
                self._frames.extend(self._framer.feed(data))
            except FramingError as exc:
                raise SimulatorError(f"badly framed answer from the box: {exc}") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ---- request builders ---------------------------------------------------------------------


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


# ---- what the POS applied -----------------------------------------------------------------


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
        sale = {line.line_number: line for line in lines if _on_sale(line)}
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
                if reward_id in amounts and _on_sale(line):
                    copy.applied_rewards[reward_id] = amounts[reward_id]
                elif held:
                    copy.applied_rewards[reward_id] = ZERO
            reported.append(copy)
        ticket = {rid: a for rid, a in amounts.items() if not self.rewards[rid].target_line}
        if ticket and ticket_tender_line is not None:
            total = sum(ticket.values(), ZERO)
            reported.append(tender_line(ticket_tender_line, "loyalty", total, applied=ticket))
        return reported


def _on_sale(line: Line) -> bool:
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


# ---- scripted sales -----------------------------------------------------------------------


@dataclass
class ScriptResult:
    name: str
    responses: list[Response]
    discount: Decimal
    """The total discount the POS applied."""
    total_due: Decimal
    resend_identical: bool | None = None
    """finalize_resend only: whether both answers to the same FinalizeRewards were identical."""


Out = Callable[[str], None]
Script = Callable[[PosClient, Out], ScriptResult]


def _money(value: Decimal) -> str:
    text = f"${abs(to_cents(value)):,.2f}"
    return f"-{text}" if value < 0 else text


def _price(value: Decimal) -> str:
    """Unit prices keep fuel's third decimal ($3.199)."""
    return _money(value) if value == to_cents(value) else f"${value}"


def _what(reward: Reward) -> str:
    return reward.receipt_long or reward.receipt_short or reward.reward_id


def _where(reward: Reward) -> str:
    return f"line {reward.target_line}" if reward.target_line else "ticket"


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
                f" @ {_price(line.unit_price or ZERO)} = {_money(line.amount or ZERO)}"
            )
        else:
            self.out(
                f"Cashier scans: {line.quantity} x {line.description}"
                f" @ {_price(line.unit_price or ZERO)} = {_money(line.amount or ZERO)}"
            )

    def void(self, line_number: int) -> None:
        for line in self.lines:
            if line.line_number == line_number:
                line.status = "void"
                self.out(f"Cashier voids line {line_number}: {line.description}")

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount or ZERO for line in self.lines if _on_sale(line)), ZERO)

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
            note = f" (was {_money(-was)})" if was is not None else ""
            self.out(f"Discount removed from {_where(reward)}: {_what(reward)}{note}")
        for reward in changes.kept + changes.added:
            amount = amounts.get(reward.reward_id)
            if amount is None:
                self.out(f"POS cannot apply {_what(reward)}: {_where(reward)} is not on sale")
                continue
            where = f"line {reward.target_line}" if reward.target_line else "the ticket"
            self.out(f"Discount on {where}: {_money(-amount)} ({_what(reward)})")
        self.shown = amounts

    def show_totals(self) -> None:
        self.out(f"Subtotal: {_money(self.subtotal)}")
        if self.discount:
            self.out(f"Loyalty discounts: {_money(-self.discount)}")
        self.out(f"Total due: {_money(self.total_due)}")

    def finalize_request(self, tender: str = "cash") -> Request:
        """The FinalizeRewards the POS sends at tender: final basket, applied rewards, payment."""
        lines = self.rewards.report(self.lines, ticket_tender_line=self.next_line_number())
        number = max(line.line_number for line in lines) + 1
        lines.append(tender_line(number, tender, self.total_due))
        head = self.head(transaction_id=self.pos_transaction_id)
        return finalize(head, self.txn(lines), self.loyalty_id, final_total=self.total_due)

    def pay(self, tender: str = "cash") -> Request:
        self.show_totals()
        self.out(f"Customer pays {tender}: {_money(self.total_due)}")
        return self.finalize_request(tender)

    def print_receipt(self, response: Response) -> None:
        # The box's final lines win over the ones it previewed with GetRewards.
        box_lines = response.receipt_lines or self.receipt
        for line in box_lines:
            self.out(f"Receipt: {line}")
        saved = f"You saved {_money(self.discount)} today"
        if self.discount and saved not in box_lines:
            self.out(f"Receipt: {saved}")
        self.out("POS screen: Sale complete")

    def end_customer(self) -> None:
        self.send(end_customer(self.head()))

    def result(self, name: str, **extra: object) -> ScriptResult:
        return ScriptResult(name, list(self.responses), self.discount, self.total_due, **extra)


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
    return ", ".join(f"{r.reward_id} ({_what(r)})" for r in rewards) or "none"


def cancelled_sale(client: PosClient, out: Out) -> ScriptResult:
    """The customer walks away after the discount was shown: the POS cancels the sale."""
    sale = Sale(client, out)
    sale.ring(_marlboro(1))
    sale.get_rewards("2142840125", "manual")
    dropped = sale.discount
    sale.send(cancel(sale.head(transaction_id=sale.pos_transaction_id)))
    out("POS screen: Sale cancelled, nothing due")
    if dropped:
        out(f"Loyalty discount dropped: {_money(-dropped)}")
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


SCRIPTS: dict[str, Script] = {
    "tobacco_phone_sale": tobacco_phone_sale,
    "sale_without_loyalty": sale_without_loyalty,
    "changed_basket": changed_basket,
    "cancelled_sale": cancelled_sale,
    "finalize_resend": finalize_resend,
}


# ---- command line -------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or HOST alone (port 9000)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r} (expected HOST:PORT)")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r} (expected HOST:PORT, port 1-65535)")
    return host, int(port_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectbox pos-sim", description="Play scripted sales as a POS against a box."
    )
    parser.add_argument(
        "--connect", default=DEFAULT_CONNECT, metavar="HOST:PORT", help="the box (%(default)s)"
    )
    parser.add_argument("--dialect", choices=DIALECTS, default="passport")
    parser.add_argument(
        "--complement-crc", action="store_true", help="send complemented CRCs (Passport)"
    )
    parser.add_argument(
        "--script",
        action="append",
        choices=list(SCRIPTS),
        metavar="NAME",
        help="a sale to play (repeatable; default: all, in order)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per answer (5)")
    parser.add_argument("--list", action="store_true", help="list the scripted sales")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, script in SCRIPTS.items():
            print(f"{name:22} {(script.__doc__ or '').strip().splitlines()[0]}")
        return 0
    try:
        host, port = parse_address(args.connect)
    except ValueError as exc:
        print(f"pos-sim: {exc}", file=sys.stderr)
        return 2
    client = PosClient(host, port, args.dialect, args.complement_crc, args.timeout)
    crc = ", complemented CRC" if args.complement_crc and args.dialect == "passport" else ""
    try:
        with client:
            client.connect()
            print(f"Connected to the box at {client.address} ({args.dialect} framing{crc})\n")
            for name in args.script or list(SCRIPTS):
                _play(client, name)
    except SimulatorError as exc:
        print(f"pos-sim: {exc}", file=sys.stderr)
        return 1
    return 0


def _play(client: PosClient, name: str) -> None:
    print(f"=== {name} ===")
    before = len(client.rtts)
    result = SCRIPTS[name](client, print)
    rtts = client.rtts[before:]
    slowest = f", slowest in {max(rtts) * 1000:.0f} ms" if rtts else ""
    print(f"({len(result.responses)} answers from the box{slowest})\n")


if __name__ == "__main__":
    sys.exit(main())
