"""The POS simulator: plays the POS (the TCP client) against a box (`connectbox pos-sim`).

Used by the demo, the tests and technicians. `PosClient` frames requests the way Passport or a
Verifone EPS does and checks every answer the way a strict POS would (`app/pos/client.py`); the
request builders (`messages`) write sales concisely; `Sale` (`register`) plays one sale at a
register; the scripted sales (`scenarios`) print what the POS shows on its screen and receipt.

The names below are the simulator's API: `from simulators import pos as sim`, then `sim.X`.
"""

from app.pos.client import DIALECTS, PosClientError
from simulators.pos.cli import main, parse_address
from simulators.pos.client import PosClient
from simulators.pos.messages import (
    begin_customer,
    cancel,
    end_customer,
    end_period,
    finalize,
    fuel_line,
    get_rewards,
    header,
    item_line,
    message,
    online_status,
    prepay_line,
    pump_transaction,
    reverse,
    tender_line,
    transaction,
)
from simulators.pos.register import Sale, ScriptResult
from simulators.pos.rewards import AppliedRewards, RewardChanges
from simulators.pos.scenarios import (
    SCRIPTS,
    cancelled_sale,
    changed_basket,
    finalize_resend,
    sale_without_loyalty,
    tobacco_phone_sale,
)
from simulators.pos.sequence import SHARED_COUNTER, SequenceCounter

__all__ = [
    "DIALECTS",
    "SCRIPTS",
    "SHARED_COUNTER",
    "AppliedRewards",
    "PosClient",
    "PosClientError",
    "RewardChanges",
    "Sale",
    "ScriptResult",
    "SequenceCounter",
    "begin_customer",
    "cancel",
    "cancelled_sale",
    "changed_basket",
    "end_customer",
    "end_period",
    "finalize",
    "finalize_resend",
    "fuel_line",
    "get_rewards",
    "header",
    "item_line",
    "main",
    "message",
    "online_status",
    "parse_address",
    "prepay_line",
    "pump_transaction",
    "reverse",
    "sale_without_loyalty",
    "tender_line",
    "tobacco_phone_sale",
    "transaction",
]
