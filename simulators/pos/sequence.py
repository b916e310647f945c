"""POSSequenceIDs and POS transaction ids, numbered the way a Passport numbers them."""

from __future__ import annotations

import itertools
import threading
import time


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
