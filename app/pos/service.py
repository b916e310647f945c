"""The loyalty host the POS talks to: one method per message type, each returning its Response.

Every request gets a well-formed response of the matching name within the deadline, whatever
the central host does. GetRewards asks the host and turns its rewards into AddRewards;
FinalizeRewards, CancelTransaction and ReverseTransaction become host transaction events.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from app.host.client import HostClient
from app.host.payload import Identity, rewards_body, transaction_body
from app.host.relay import HostRelay
from app.host.translate import Translated, receipt_lines, translate_rewards, trim
from app.logs import mask_id
from app.money import ZERO, fmt_money
from app.pos import wire
from app.pos.loyalty_ids import read_age_check, resolve
from app.pos.model import Request, Response
from app.pos.sessions import Session, SessionStore
from app.stats import Counters

log = logging.getLogger("connectbox.pos")
EVENT_NAMESPACE = uuid.UUID("6f1c8f56-3c1e-4c55-9a43-8d3c0f7e1b20")
ACCEPTED_OFFLINE_TEXT = "ACCEPTED OFFLINE"


@dataclass
class Handled:
    response: Response
    host_wait_s: float = 0.0


class LoyaltyService:
    def __init__(
        self,
        identity: Identity,
        client: HostClient,
        relay: HostRelay,
        sessions: SessionStore,
        deadline_s: float = 1.5,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.identity = identity
        self.client = client
        self.relay = relay
        self.sessions = sessions
        self.deadline_s = deadline_s
        self.today = today
        self.counters = Counters()
        self.failed_events: deque[dict[str, str]] = deque(maxlen=200)
        self._answered: OrderedDict[str, Response] = OrderedDict()  # event id -> first answer
        self._answered_lock = threading.Lock()
        self._handlers: dict[str, Callable[[Request, float], Handled]] = {
            "GetLoyaltyOnlineStatus": self._online_status,
            "GetRewards": self._get_rewards,
            "FinalizeRewards": self._finalize,
            "CancelTransaction": self._cancel,
            "ReverseTransaction": self._reverse,
        }

    def handle(self, request: Request, received_at: float) -> Handled:
        """Answer one request; `received_at` (monotonic) starts the POS's deadline."""
        self.counters.add(f"request.{request.stem}" if request.known else "request.unknown")
        handler = self._handlers.get(request.stem)
        if handler is None:
            if not request.known:
                log.info("unknown request %sRequest: header-only answer", request.stem)
            return Handled(_answer(request))
        try:
            return handler(request, received_at + self.deadline_s)
        except Exception:
            # A bug must not leave the POS without a well-formed answer of the right name.
            log.exception("error handling %sRequest; answering header-only", request.stem)
            self.counters.add("handler_errors")
            return Handled(_answer(request))

    # ---- message types ------------------------------------------------------------------

    def _online_status(self, request: Request, deadline: float) -> Handled:
        response = _answer(request)
        response.prompt_for_loyalty = True
        return Handled(response)

    def _get_rewards(self, request: Request, deadline: float) -> Handled:
        session = self.sessions.open(request.header.loyalty_sequence_id)
        txn = request.transaction
        session.register_id = request.register or session.register_id
        if txn and txn.pos_transaction_id:
            session.pos_transaction_id = txn.pos_transaction_id
        age_checked = self._take_loyalty_id(request, session)

        body = rewards_body(
            request,
            self.identity,
            session.session_id,
            session.loyalty_id,
            session.entry_method,
            session.age_verified,
        )
        session.last_body = body
        label = f"GetRewards {session.session_id} id {mask_id(session.loyalty_id)}"
        outcome = self.relay.call(lambda: self.client.rewards(body), deadline, label)

        response = _answer(request, session.session_id)
        translated = Translated()
        answer = outcome.answer if outcome.ok and isinstance(outcome.answer, dict) else None
        if answer is not None:
            translated = translate_rewards(answer.get("rewards"), txn, request.dialect)
            response.receipt_lines = receipt_lines(answer.get("receipt_lines"))
            session.decided_by = "host"
        else:
            self.counters.add("rewards.timeout" if outcome.timed_out else "rewards.host_error")
            session.decided_by = "none"

        if session.loyalty_id:
            valid = bool(answer.get("loyalty_id_valid", True)) if answer else True
            response.loyalty_id_valid = valid
            default = "WELCOME" if valid else "INVALID LOYALTY ID"
            text = answer.get("display_text") if answer else ACCEPTED_OFFLINE_TEXT
            response.loyalty_id_text = trim(text or default, wire.RECEIPT_LINE_MAX)
        elif age_checked:
            response.loyalty_id_valid = True
            over = session.age_verified
            response.loyalty_id_text = "AGE 21+ VERIFIED" if over else "AGE 21+ NOT VERIFIED"

        # The field-proven way to change what the POS applied: remove every reward it had,
        # then add the current set under the same stable ids.
        previous = list(session.granted)
        previous += [r for r in (txn.applied_rewards() if txn else {}) if r not in previous]
        response.remove_reward_ids = previous
        response.add_rewards = translated.rewards
        session.granted = {r.reward_id: r for r in translated.rewards}
        session.amounts = dict(translated.amounts)
        self.counters.add("rewards.granted", len(translated.rewards))
        return Handled(response, outcome.waited_s)

    def _take_loyalty_id(self, request: Request, session: Session) -> bool:
        """Record the request's LoyaltyID in the session; True when it was an age check."""
        entry = request.loyalty_id
        if entry is None:
            return False
        age = read_age_check(entry.value, self.today())
        if age is not None:
            session.age_verified = age.over_21
            log.info("session %s: age check, over 21: %s", session.session_id, age.over_21)
            return True
        full = resolve(session.loyalty_id, entry.value)
        if full != session.loyalty_id:
            session.loyalty_id = full
            session.entry_method = entry.entry_method
        return False

    def _finalize(self, request: Request, deadline: float) -> Handled:
        head = request.header
        session = self.sessions.get(head.loyalty_sequence_id)
        event_id = self._event_id("finalize", request, session)
        earlier = self._earlier_answer(event_id, request)
        if earlier is not None:
            self.counters.add("finalize.resent")
            return Handled(earlier)

        response = _answer(request, session.session_id if session else "")
        body = self._event_body("finalize", request, session)
        outcome = self._deliver(body, event_id, deadline)
        if outcome is not None and isinstance(outcome.answer, dict):
            response.receipt_lines = receipt_lines(outcome.answer.get("receipt_lines"))
        self._remember(event_id, response)
        if session is not None:
            self.sessions.drop(session.session_id)
        return Handled(response, outcome.waited_s if outcome else 0.0)

    def _cancel(self, request: Request, deadline: float) -> Handled:
        session = self.sessions.drop(request.header.loyalty_sequence_id)
        if session is not None:
            event_id = self._event_id("cancel", request, session)
            self._deliver(self._event_body("cancel", request, session), event_id, None)
        return Handled(_answer(request, request.header.loyalty_sequence_id))

    def _reverse(self, request: Request, deadline: float) -> Handled:
        event_id = self._event_id("reverse", request, None)
        earlier = self._earlier_answer(event_id, request)
        if earlier is not None:
            return Handled(earlier)
        response = _answer(request)
        self._deliver(self._event_body("reverse", request, None), event_id, None)
        self._remember(event_id, response)
        return Handled(response)

    # ---- transaction events -------------------------------------------------------------

    def _event_id(self, event: str, request: Request, session: Session | None) -> str:
        """A stable id for one event of one transaction, so a resend maps to the same event."""
        txn = request.transaction
        if txn and txn.pos_transaction_id:
            key = "/".join(
                [
                    request.header.store_location_id,
                    request.register or "",
                    txn.business_date or "",
                    txn.pos_transaction_id,
                ]
            )
        elif session is not None:
            key = "session/" + session.session_id
        else:
            key = "body/" + hashlib.sha256(repr(txn).encode()).hexdigest()
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{self.identity.device_id}|{event}|{key}"))

    def _event_body(self, event: str, request: Request, session: Session | None) -> dict[str, Any]:
        if request.transaction is None and session is not None and session.last_body:
            base = copy.deepcopy(session.last_body)
        else:
            base = rewards_body(
                request,
                self.identity,
                session.session_id if session else request.header.loyalty_sequence_id,
                session.loyalty_id if session else None,
                session.entry_method if session else "",
                session.age_verified if session else None,
            )
        applied = _rewards_applied(request, session)
        if session is not None and session.decided_by == "host":
            decision = {"origin": "host", "policy_version": None, "rule": None}
        elif request.header.offline:
            decision = {"origin": "offline", "policy_version": None, "rule": "pos_stored_offline"}
        else:
            decision = {"origin": "offline", "policy_version": None, "rule": "no_host_answer"}
        return transaction_body(base, event, request, applied, decision)

    def _deliver(self, body: dict[str, Any], event_id: str, deadline: float | None):
        """Send an event now; wait for it until `deadline` (None: do not wait)."""
        label = f"{body['event']} event {event_id}"
        future = self.relay.submit(lambda: self.client.transaction(body, event_id), label)
        future.add_done_callback(lambda f: self._record_delivery(f, event_id, body["event"]))
        if deadline is None:
            return None
        started = time.monotonic()
        try:
            answer = future.result(timeout=max(0.0, deadline - started))
        except Exception:
            return _Waited(None, time.monotonic() - started)
        return _Waited(answer, time.monotonic() - started)

    def _record_delivery(self, future, event_id: str, event: str) -> None:
        error = future.exception()
        if error is None:
            self.counters.add(f"events.delivered.{event}")
            return
        self.counters.add(f"events.failed.{event}")
        self.failed_events.append({"event_id": event_id, "event": event, "reason": str(error)})
        log.error("%s event %s not delivered: %s", event, event_id, error)

    def _earlier_answer(self, event_id: str, request: Request) -> Response | None:
        with self._answered_lock:
            earlier = self._answered.get(event_id)
        if earlier is None:
            return None
        log.info("%sRequest resent for event %s: same answer", request.stem, event_id)
        response = copy.deepcopy(earlier)
        response.header = _echo(request, earlier.header.loyalty_sequence_id)
        return response

    def _remember(self, event_id: str, response: Response) -> None:
        with self._answered_lock:
            self._answered[event_id] = response
            while len(self._answered) > 10_000:
                self._answered.popitem(last=False)


@dataclass
class _Waited:
    answer: Any
    waited_s: float


def _rewards_applied(request: Request, session: Session | None) -> list[dict[str, Any]]:
    """What the POS applied: what it reports on its lines, else what the box granted."""
    applied: list[dict[str, Any]] = []
    txn = request.transaction
    for line in txn.lines if txn else []:
        for reward_id, amount in line.applied_rewards.items():
            if amount is None and session is not None:
                amount = session.amounts.get(reward_id)
            target = 0 if line.kind == "tender" else line.line_number
            applied.append(
                {"reward_id": reward_id, "target_line": target, "amount": fmt_money(amount or ZERO)}
            )
    if not applied and session is not None:
        for reward in session.granted.values():
            amount = session.amounts.get(reward.reward_id, Decimal(0))
            applied.append(
                {
                    "reward_id": reward.reward_id,
                    "target_line": reward.target_line,
                    "amount": fmt_money(amount),
                }
            )
    return applied


def _echo(request: Request, loyalty_sequence_id: str | None = None):
    header = copy.copy(request.header)
    if loyalty_sequence_id is not None:
        header.loyalty_sequence_id = loyalty_sequence_id
    return header


def _answer(request: Request, loyalty_sequence_id: str | None = None) -> Response:
    """A header-only response of the matching name, echoing the request's header."""
    return Response(stem=request.stem, header=_echo(request, loyalty_sequence_id))
