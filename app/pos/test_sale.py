"""The technician's test sale: GetRewards, then FinalizeRewards, through the box's own POS port.

One item at 0.01 on register TEST with TrainingModeFlag set and no loyalty ID, so the host and
the reports can tell it from a real sale and it earns nothing. It goes through the same port,
framing and journal as a POS's sale: a success proves the whole path, not a shortcut.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from app import __version__
from app.pos.client import PosClient
from app.pos.model import Line, Request, RequestHeader, TransactionData

TEST_REGISTER = "TEST"
TEST_UPC = "012345678905"
_PRICE = Decimal("0.01")


@dataclass(frozen=True)
class SaleTimes:
    """How long the box took to answer each request, in milliseconds."""

    rewards_ms: float
    finalize_ms: float


def play_test_sale(
    host: str, port: int, dialect: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> SaleTimes:
    """Play the test sale (over TLS with `tls`); raises `PosClientError` when the box does not
    answer as a POS needs."""
    # Milliseconds since the epoch: two test sales never share a POS transaction id (the box
    # would take the second FinalizeRewards for a resend of the first).
    txn_id = str(time.time_ns() // 1_000_000)
    txn = TransactionData(
        register_id=TEST_REGISTER,
        pos_transaction_id=txn_id,
        business_date=date.today().isoformat(),
        training=True,
        lines=[_test_item()],
    )
    with PosClient(host, port, dialect, timeout=timeout, tls=tls) as pos:
        answer = pos.send(Request("GetRewards", _header(txn_id, 1), transaction=txn))
        rewards_ms = (pos.last_rtt_s or 0.0) * 1000
        head = _header(txn_id, 2, answer.header.loyalty_sequence_id)
        pos.send(Request("FinalizeRewards", head, transaction=txn, final_total=_PRICE))
        return SaleTimes(rewards_ms, (pos.last_rtt_s or 0.0) * 1000)


def _test_item() -> Line:
    return Line(
        line_number=1,
        kind="item",
        code_format="upcA",
        code=TEST_UPC,
        department="TEST",
        description="CONNECT BOX TEST SALE",
        quantity=Decimal(1),
        unit_price=_PRICE,
        regular_price=_PRICE,
        amount=_PRICE,
    )


def _header(txn_id: str, message: int, loyalty_sequence_id: str = "") -> RequestHeader:
    # POSSequenceID shaped like Passport's "<register>-<transaction>^<message>^".
    return RequestHeader(
        interface_version="1.2",
        vendor_name="Connect Box",
        vendor_model_version=__version__,
        pos_sequence_id=f"{TEST_REGISTER}-{txn_id}^{message}^",
        loyalty_sequence_id=loyalty_sequence_id,
    )
