"""The loyalty host the POS talks to: one method per message type, each returning its Response.

Every request gets a well-formed response of the matching name within the deadline, whatever
the central host does. GetRewards asks the host and turns its rewards into AddRewards;
BeginCustomer and GetCustomerMessaging ask it who the customer is; GetRewardStatus is answered
from the journal; EndCustomer forgets the customer of a transaction; FinalizeRewards,
CancelTransaction, ReverseTransaction, CancelRedemption and EndPeriod become host events.

Durable first, in one place (`handle_frame`): the exact bytes of a durable request are
committed to the journal before they are parsed. After that the request either settles into
its event, or into an `unreadable` event when the box cannot understand it, and only then is
it answered; when the journal cannot commit, it is not answered at all (`NotAccepted`), so the
POS keeps it and sends it again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from app.host.payload import (
    Identity,
    identify_body,
    pos_facts,
    rewards_body,
    transaction_body,
    unreadable_body,
)
from app.host.relay import HostRelay, Outcome
from app.host.translate import receipt_lines, translate_rewards, trim
from app.journal import Journal, JournalError, Kept, dumps
from app.logs import mask_id
from app.money import ZERO, fmt_decimal, fmt_money
from app.offline.engine import OfflineEngine
from app.outbox import Outbox
from app.pos import wire
from app.pos.loyalty_ids import read_age_check, resolve
from app.pos.model import Request, RequestHeader, Response, Reward
from app.pos.sessions import Session, SessionStore
from app.pos.xmlcodec import XmlError, read_request, sniff_stem
from app.programs.nanp import normalize_us_phone
from app.readers import PendingReads
from app.stats import Counters
from provisioning.api import HostClient
from provisioning.link import LinkState
from provisioning.rfc3339 import now_rfc3339, parse_rfc3339

log = logging.getLogger("connectbox.pos")
EVENT_NAMESPACE = uuid.UUID("6f1c8f56-3c1e-4c55-9a43-8d3c0f7e1b20")
ACCEPTED_OFFLINE_TEXT = "ACCEPTED OFFLINE"
DURABLE_STEMS = (
    "FinalizeRewards",
    "CancelTransaction",
    "ReverseTransaction",
    "CancelRedemption",
    "EndPeriod",
)


class NotAccepted(Exception):
    """The request could not be made durable: do not answer, so the POS keeps and resends it."""


class Unreadable(Exception):
    """A kept durable request the box cannot turn into its event; the message says why."""


@dataclass
class Handled:
    response: Response
    host_wait_s: float = 0.0
    request: Request | None = None  # what the POS sent, when the box could read it


class LoyaltyService:
    def __init__(
        self,
        identity: Identity,
        client: HostClient,
        relay: HostRelay,
        sessions: SessionStore,
        journal: Journal,
        outbox: Outbox,
        engine: OfflineEngine,
        reads: PendingReads | None = None,
        deadline_s: float = 1.5,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.identity = identity
        self.client = client
        self.relay = relay
        self.sessions = sessions
        self.journal = journal
        self.outbox = outbox
        self.engine = engine
        self.reads = reads
        self.deadline_s = deadline_s
        self.today = today
        self.counters = Counters()
        self._handlers: dict[str, Callable[[Request, float], Handled]] = {
            "GetLoyaltyOnlineStatus": self._online_status,
            "BeginCustomer": self._begin_customer,
            "GetRewards": self._get_rewards,
            "GetRewardStatus": self._reward_status,
            "GetCustomerMessaging": self._customer_messaging,
            "EndCustomer": self._end_customer,
        }
        self._durable_handlers: dict[str, Callable[[Request, float, Kept], Handled]] = {
            "FinalizeRewards": self._finalize,
            "CancelTransaction": self._cancel,
            "ReverseTransaction": self._reverse,
            "CancelRedemption": self._cancel_redemption,
            "EndPeriod": self._end_period,
        }

    def handle_frame(self, payload: bytes, dialect: str, received_at: float) -> Handled:
        """Answer one frame from the POS; `received_at` (monotonic) starts the POS's deadline.
        XmlError when a frame that is not a durable request cannot be read (the server closes
        that connection); NotAccepted when a durable request could not be committed."""
        stem = sniff_stem(payload)
        if stem in DURABLE_STEMS:
            return self._durable(self._keep(stem, dialect, payload), received_at)
        request = read_request(payload, dialect)
        if request.stem in DURABLE_STEMS:  # an odd prolog hid it from the sniff: keep it now
            return self._durable(self._keep(request.stem, dialect, payload), received_at)
        return self._plain(request, received_at)

    def settle_unsettled(self) -> int:
        """Settle requests kept before a crash but never turned into events (called at start,
        before the POS can connect). Their POS got no answer and will resend: the resend then
        finds the event. Returns how many were settled."""
        settled = 0
        for kept in self.journal.unsettled():
            log.warning("settling %sRequest %d kept before a stop", kept.stem, kept.id)
            # A deadline already passed: nothing waits for the host here.
            self._durable(kept, time.monotonic() - self.deadline_s)
            settled += 1
        return settled

    def _plain(self, request: Request, received_at: float) -> Handled:
        """A request that changes nothing durable: whatever goes wrong, it gets its answer."""
        self._count(request)
        if request.refused:
            log.warning(
                "%sRequest refused: %s; answered without rewards", request.stem, request.refused
            )
            self.counters.add("requests.refused")
            return Handled(_answer(request), request=request)
        handler = self._handlers.get(request.stem)
        if handler is None:
            if not request.known:
                log.info("unknown request %sRequest: header-only answer", request.stem)
            return Handled(_answer(request), request=request)
        try:
            handled = handler(request, received_at + self.deadline_s)
        except JournalError as exc:
            self.counters.add("journal_errors")
            log.error("cannot journal %sRequest (%s): answering without rewards", request.stem, exc)
            handled = Handled(_answer(request))
        except Exception:
            # A bug must not leave the POS without a well-formed answer of the right name.
            log.exception("error handling %sRequest; answering header-only", request.stem)
            self.counters.add("handler_errors")
            handled = Handled(_answer(request))
        handled.request = request
        return handled

    def _keep(self, stem: str, dialect: str, payload: bytes) -> Kept:
        try:
            return self.journal.keep(stem, dialect, payload)
        except JournalError as exc:
            self.counters.add("journal_errors")
            # Acknowledging what we could not store would lose it; unanswered, the POS
            # stores it itself and sends it again later (LoyaltyOfflineFlag="yes").
            log.error("cannot journal %sRequest (%s): not acknowledged", stem, exc)
            raise NotAccepted(str(exc)) from exc

    def _durable(self, kept: Kept, received_at: float) -> Handled:
        """A kept request: its event, else an unreadable event; answered once one is committed."""
        request: Request | None = None
        try:
            request = read_request(kept.raw, kept.dialect)
            self._count(request)
            if request.refused:
                raise Unreadable(request.refused)
            handler = self._durable_handlers[request.stem]
            handled = handler(request, received_at + self.deadline_s, kept)
        except JournalError as exc:
            self.counters.add("journal_errors")
            log.error("cannot journal %sRequest (%s): not acknowledged", kept.stem, exc)
            raise NotAccepted(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - whatever it was, the request is kept
            return self._after_failure(kept, request, exc)
        handled.request = request
        return handled

    def _after_failure(self, kept: Kept, request: Request | None, exc: Exception) -> Handled:
        """Answer a kept request whose handling failed, once its event is committed."""
        response = _answer(request) if request else Response(kept.stem, RequestHeader())
        try:
            if self.journal.settled(kept.id):
                # Its event was committed before the failure: the request is safe.
                log.exception("error after journaling %sRequest; answering header-only", kept.stem)
                self.counters.add("handler_errors")
                return Handled(response, request=request)
            if isinstance(exc, (XmlError, Unreadable)):
                error = str(exc)
                log.warning("%sRequest kept as unreadable: %s", kept.stem, error)
            else:
                error = f"{type(exc).__name__}: {exc}"
                log.exception("error handling %sRequest; kept as unreadable", kept.stem)
                self.counters.add("handler_errors")
            event_id = str(
                uuid.uuid5(
                    EVENT_NAMESPACE,
                    f"{self.identity.device_id}|unreadable|{hashlib.sha256(kept.raw).hexdigest()}",
                )
            )
            body = unreadable_body(self.identity, kept, error)
            self.journal.add_event(event_id, "unreadable", body, received_id=kept.id)
        except JournalError as journal_exc:
            self.counters.add("journal_errors")
            log.error("cannot journal %sRequest (%s): not acknowledged", kept.stem, journal_exc)
            raise NotAccepted(str(journal_exc)) from journal_exc
        self.counters.add("events.journaled.unreadable")
        self.outbox.wake()
        return Handled(response, request=request)

    def _count(self, request: Request) -> None:
        self.counters.add(f"request.{request.stem}" if request.known else "request.unknown")

    # ---- message types ------------------------------------------------------------------

    def _online_status(self, request: Request, deadline: float) -> Handled:
        response = _answer(request)
        # "no" only when the box knows it can give no rewards at all: host down and no policy.
        down = self.relay.link.state in (LinkState.DOWN, LinkState.UNAUTHORIZED)
        response.prompt_for_loyalty = self.engine.prompt_for_loyalty() if down else True
        return Handled(response)

    def _get_rewards(self, request: Request, deadline: float) -> Handled:
        session = self.sessions.open(request.header.loyalty_sequence_id)
        txn = request.transaction
        session.register_id = request.register or session.register_id
        if txn and txn.pos_transaction_id:
            session.pos_transaction_id = txn.pos_transaction_id
        age_checked = self._take_loyalty_id(request, session)
        self._take_reader_read(request, session)

        body = rewards_body(
            request,
            self.identity,
            session.session_id,
            session.loyalty_id,
            session.entry_method,
            session.age_verified,
            source=session.loyalty_source,
        )
        body_json = dumps(body)
        session.last_body = body_json
        label = f"GetRewards {session.session_id} id {mask_id(session.loyalty_id)}"
        outcome = self.relay.call(lambda: self.client.rewards(body), deadline, label)

        response = _answer(request, session.session_id)
        answer = outcome.answer if outcome.ok and isinstance(outcome.answer, dict) else None
        if answer is not None:
            translated = translate_rewards(answer.get("rewards"), txn, request.dialect)
            response.receipt_lines = receipt_lines(answer.get("receipt_lines"))
            session.decision = {"origin": "host", "policy_version": None, "rule": None}
            valid = bool(answer.get("loyalty_id_valid", True))
            text = answer.get("display_text") or ("WELCOME" if valid else "INVALID LOYALTY ID")
        else:
            self.counters.add(_failure_counter(outcome))
            offline = self.engine.decide(body)
            translated = translate_rewards(offline.rewards, txn, request.dialect)
            session.decision = {
                "origin": "offline",
                "policy_version": offline.policy_version,
                "rule": offline.rule,
            }
            # Tell the POS nothing false: the ID was accepted offline (or failed the check).
            valid = offline.loyalty_id_valid is not False
            text = ACCEPTED_OFFLINE_TEXT if valid else "INVALID LOYALTY ID"
            self.counters.add(f"offline.{offline.rule}")

        if session.loyalty_id:
            response.loyalty_id_valid = valid
            response.loyalty_id_text = trim(text, wire.RECEIPT_LINE_MAX)
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
        session.dropped = translated.dropped
        # Committed before the POS hears the decision: the audit trail, the offline limits and
        # GetRewardStatus (the rewards as they were sent).
        self.journal.record_decision(
            session.session_id,
            session.decision["origin"],
            body_json,
            {**session.decision, "granted": [_reward_json(r) for r in translated.rewards]},
            discount=sum(translated.amounts.values(), ZERO),
            loyalty_key=_loyalty_key(session.loyalty_id),
        )
        self.counters.add("rewards.granted", len(translated.rewards))
        return Handled(response, outcome.waited_s)

    def _begin_customer(self, request: Request, deadline: float) -> Handled:
        """A customer before the basket: with a loyalty ID, the host says who it is (display
        text, balance, receipt lines) and the transaction's session remembers the ID for the
        GetRewards that follows; without one, a header-only answer."""
        if request.loyalty_id is None:
            return Handled(_answer(request))
        session = self.sessions.open(request.header.loyalty_sequence_id)
        session.register_id = request.register or session.register_id
        return self._identify(request, session, "begin_customer", deadline)

    def _customer_messaging(self, request: Request, deadline: float) -> Handled:
        session = self.sessions.open(request.header.loyalty_sequence_id)
        session.register_id = request.register or session.register_id
        return self._identify(request, session, "messaging", deadline)

    def _identify(
        self, request: Request, session: Session, purpose: str, deadline: float
    ) -> Handled:
        response = _answer(request, session.session_id)
        age_checked = self._take_loyalty_id(request, session)
        if not session.loyalty_id:
            if age_checked:
                response.loyalty_id_valid = True
                over = session.age_verified
                response.loyalty_id_text = "AGE 21+ VERIFIED" if over else "AGE 21+ NOT VERIFIED"
            return Handled(response)
        body = identify_body(
            request,
            self.identity,
            session.session_id,
            session.loyalty_id,
            session.entry_method,
            purpose,
        )
        label = f"identify {session.session_id} id {mask_id(session.loyalty_id)}"
        outcome = self.relay.call(lambda: self.client.identify(body), deadline, label)
        answer = outcome.answer if outcome.ok and isinstance(outcome.answer, dict) else None
        if answer is not None:
            valid = answer.get("loyalty_id_valid") is not False
            text = answer.get("display_text") or ("WELCOME" if valid else "INVALID LOYALTY ID")
            response.receipt_lines = receipt_lines(answer.get("receipt_lines"))
        else:
            self.counters.add(_failure_counter(outcome, "identify"))
            valid = self.engine.loyalty_id_valid(session.loyalty_id) is not False
            text = ACCEPTED_OFFLINE_TEXT if valid else "INVALID LOYALTY ID"
            log.info(
                "session %s: customer %s identified by the offline policy (valid: %s)",
                session.session_id,
                mask_id(session.loyalty_id),
                valid,
            )
        response.loyalty_id_valid = valid
        response.loyalty_id_text = trim(text, wire.RECEIPT_LINE_MAX)
        return Handled(response, outcome.waited_s)

    def _end_customer(self, request: Request, deadline: float) -> Handled:
        """The customer part of the transaction ends: its loyalty ID and age check are
        forgotten; the basket and the rewards the POS was told about stay."""
        session = self.sessions.get(request.header.loyalty_sequence_id)
        if session is not None:
            session.loyalty_id = None
            session.entry_method = ""
            session.loyalty_source = "pos"
            session.age_verified = None
        return Handled(_answer(request))

    def _reward_status(self, request: Request, deadline: float) -> Handled:
        """The rewards the box last gave for this transaction, as they were sent."""
        response = _answer(request)
        session_id = request.header.loyalty_sequence_id
        granted = self.journal.granted_rewards(session_id) if session_id else None
        response.add_rewards = [r for r in map(_reward_from_json, granted or []) if r]
        return Handled(response)

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

    def _take_reader_read(self, request: Request, session: Session) -> None:
        """A card read at this register's reader: its age result, and its ID when the POS
        sent none of its own."""
        if self.reads is None:
            return
        age = self.reads.take_age(request.register)
        if age is not None:
            session.age_verified = age.over_21
        if request.loyalty_id is None and not session.loyalty_id:
            read = self.reads.take_id(request.register)
            if read is not None:
                session.loyalty_id = read.loyalty_id
                session.entry_method = "swipe" if read.source == "magstripe" else "scan"
                session.loyalty_source = "reader"
                log.info(
                    "session %s: loyalty ID %s from the reader of register %s",
                    session.session_id,
                    mask_id(read.loyalty_id),
                    read.register_id,
                )

    def _finalize(self, request: Request, deadline: float, kept: Kept) -> Handled:
        session = self.sessions.get(request.header.loyalty_sequence_id)
        event_id = self._event_id("finalize", request, session)
        earlier = self._earlier_answer(event_id, request, kept)
        if earlier is not None:
            self.counters.add("finalize.resent")
            return Handled(earlier)
        response = _answer(request, session.session_id if session else "")
        body = self._event_body("finalize", request, session)
        body["rewards_dropped"] = list(session.dropped) if session else []
        if body["decision"]["origin"] == "offline":
            # Accrual the host confirms later: points are never lost for being earned offline.
            discount = sum((Decimal(r["amount"]) for r in body["rewards_applied"]), ZERO)
            body["points_pending"] = self.engine.points_pending(body, discount)
        # Claimed before it is journaled: the outbox must not send it while we do.
        self.outbox.claim(event_id)
        try:
            self._journal_event(event_id, body, kept)
        except BaseException:
            self.outbox.release(event_id)
            raise
        waited = self._deliver_now(body, event_id, deadline)
        if waited.answer is not None:
            response.receipt_lines = receipt_lines(waited.answer.get("receipt_lines"))
        self.journal.set_answer(event_id, {"receipt_lines": response.receipt_lines})
        if session is not None:
            self.sessions.drop(session.session_id)
        return Handled(response, waited.waited_s)

    def _cancel(self, request: Request, deadline: float, kept: Kept) -> Handled:
        session = self.sessions.drop(request.header.loyalty_sequence_id)
        if session is not None:
            event_id = self._event_id("cancel", request, session)
            body = self._event_body("cancel", request, session)
            self._journal_event(event_id, body, kept)
            self.outbox.wake()
        else:  # nothing was granted in a session the box does not know: nothing to report
            self.journal.settle(kept.id, "no_event")
        return Handled(_answer(request, request.header.loyalty_sequence_id))

    def _reverse(self, request: Request, deadline: float, kept: Kept) -> Handled:
        event_id = self._event_id("reverse", request, None)
        earlier = self._earlier_answer(event_id, request, kept)
        if earlier is not None:
            return Handled(earlier)
        self._journal_event(event_id, self._event_body("reverse", request, None), kept)
        self.journal.set_answer(event_id, {"receipt_lines": []})
        self.outbox.wake()
        return Handled(_answer(request))

    def _cancel_redemption(self, request: Request, deadline: float, kept: Kept) -> Handled:
        """The POS takes back a redemption: a `cancel_redemption` event with the loyalty ID and
        the reward ids or points it names."""
        head = request.header
        key = "/".join(
            [head.store_location_id, head.loyalty_sequence_id, head.pos_sequence_id]
            + request.reward_ids
        )
        event_id = self._event_id_for("cancel_redemption", key)
        earlier = self._earlier_answer(event_id, request, kept)
        if earlier is not None:
            return Handled(earlier)
        session = self.sessions.get(head.loyalty_sequence_id)
        loyalty_id = session.loyalty_id if session else None
        if request.loyalty_id is not None:
            loyalty_id = resolve(loyalty_id, request.loyalty_id.value)
        body = {
            "event": "cancel_redemption",
            "device_id": self.identity.device_id,
            "site_id": self.identity.site_id,
            "session_id": head.loyalty_sequence_id,
            "pos": pos_facts(request),
            "loyalty_id": {"value": loyalty_id} if loyalty_id else None,
            "reward_ids": list(request.reward_ids),
            "points": fmt_decimal(request.points_redeemed) or "0",
            "occurred_at": now_rfc3339(),
            "recorded_at": now_rfc3339(),
        }
        return self._not_a_sale(event_id, body, kept, request)

    def _end_period(self, request: Request, deadline: float, kept: Kept) -> Handled:
        """The POS closes a business period: an `end_period` event describing the period that
        closed, with the box's own counts for it so the host can reconcile."""
        closed = request.periods.get("from")
        if closed is None or not closed.business_date:
            raise Unreadable("EndPeriod without a FromPeriod business date")
        key = "/".join(
            [
                request.header.store_location_id,
                closed.business_date,
                closed.type or "",
                closed.begin or "",
            ]
        )
        event_id = self._event_id_for("end_period", key)
        earlier = self._earlier_answer(event_id, request, kept)
        if earlier is not None:
            return Handled(earlier)
        body = {
            "event": "end_period",
            "device_id": self.identity.device_id,
            "site_id": self.identity.site_id,
            "pos": pos_facts(request),
            "period": closed.as_json(),
            "business_date": closed.business_date,
            **self.journal.period_counts(closed.business_date, _counting_from(closed.begin)),
            "occurred_at": closed.end if closed.end and closed.end < "2100" else now_rfc3339(),
            "recorded_at": now_rfc3339(),
        }
        return self._not_a_sale(event_id, body, kept, request)

    def _not_a_sale(
        self, event_id: str, body: dict[str, Any], kept: Kept, request: Request
    ) -> Handled:
        """No discount, no per-ID limit, nothing to print: answered once it is committed."""
        self._journal_event(event_id, body, kept, answer={"receipt_lines": []})
        self.outbox.wake()
        return Handled(_answer(request))

    # ---- transaction events -------------------------------------------------------------

    def _event_id_for(self, event: str, key: str) -> str:
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{self.identity.device_id}|{event}|{key}"))

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
        return self._event_id_for(event, key)

    def _event_body(self, event: str, request: Request, session: Session | None) -> dict[str, Any]:
        if request.transaction is None and session is not None and session.last_body:
            base = json.loads(session.last_body)
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
        if session is not None and session.decision:
            decision = dict(session.decision)
        elif request.header.offline:
            decision = {"origin": "offline", "policy_version": None, "rule": "pos_stored_offline"}
        else:
            decision = {"origin": "offline", "policy_version": None, "rule": "no_session"}
        return transaction_body(base, event, request, applied, decision)

    def _journal_event(
        self, event_id: str, body: dict[str, Any], kept: Kept, answer: dict[str, Any] | None = None
    ) -> None:
        """Commit the event (settling its kept request) before the POS is answered; the outbox
        delivers it if we do not."""
        discount = sum((Decimal(r["amount"]) for r in body.get("rewards_applied", [])), ZERO)
        loyalty = body.get("loyalty_id") or {}
        self.journal.add_event(
            event_id,
            body["event"],
            body,
            answer=answer,
            loyalty_key=_loyalty_key(loyalty.get("value")),
            day=self.today().isoformat(),
            discount=discount,
            origin=(body.get("decision") or {}).get("origin", "host"),
            received_id=kept.id,
        )
        self.counters.add(f"events.journaled.{body['event']}")

    def _deliver_now(self, body: dict[str, Any], event_id: str, deadline: float) -> _Waited:
        """Try to deliver a claimed event inside the POS deadline (for receipt lines); the
        outbox takes it over when this fails or the host is known to be down."""
        started = time.monotonic()
        if self.relay.link.known_down or deadline <= started:
            self.outbox.release(event_id)
            return _Waited(None, 0.0)
        label = f"{body['event']} event {event_id}"
        try:
            future = self.relay.submit(lambda: self.client.transaction(body, event_id), label)
        except Exception as exc:  # noqa: BLE001 - the event is journaled: the outbox sends it
            log.warning("cannot send %s now (%s): the outbox will", label, exc)
            self.outbox.release(event_id)
            return _Waited(None, 0.0)
        future.add_done_callback(lambda f: self._delivered_now(f, event_id))
        try:
            answer = future.result(timeout=max(0.0, deadline - started))
        except Exception:
            answer = None
        waited = time.monotonic() - started
        return _Waited(answer if isinstance(answer, dict) else None, waited)

    def _delivered_now(self, future: Future[Any], event_id: str) -> None:
        try:
            if future.exception() is None:
                answer = future.result()
                lines = answer.get("receipt_lines") if isinstance(answer, dict) else None
                answers = {event_id: {"receipt_lines": lines if isinstance(lines, list) else []}}
                self.journal.mark_delivered([event_id], answers)
                self.counters.add("events.delivered_inline")
        finally:
            self.outbox.release(event_id)  # failures and final answers: the outbox's job

    def _earlier_answer(self, event_id: str, request: Request, kept: Kept) -> Response | None:
        earlier = self.journal.get_event(event_id)
        if earlier is None:
            return None
        self.journal.settle(kept.id, "duplicate", event_id)
        log.info("%sRequest resent for event %s: same answer", request.stem, event_id)
        session_id = (
            earlier.body.get("session_id") or "" if request.stem == "FinalizeRewards" else None
        )
        response = _answer(request, session_id)
        stored = earlier.answer or {}
        response.receipt_lines = [str(line) for line in stored.get("receipt_lines") or []]
        return response


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


def _reward_json(reward: Reward) -> dict[str, Any]:
    return {**vars(reward), "value": str(reward.value)}


def _reward_from_json(raw: Any) -> Reward | None:
    """A reward as the journal kept it (GetRewardStatus); None for a row it cannot read."""
    try:
        return Reward(**{**raw, "value": Decimal(str(raw["value"]))})
    except (TypeError, KeyError, ArithmeticError):
        return None


def _counting_from(begin: str | None) -> float:
    """From when events can belong to a period that began at `begin` (a day's margin for a
    POS clock that is off); without a begin, the last 8 days."""
    try:
        return parse_rfc3339(begin).timestamp() - 86_400
    except ValueError:
        return time.time() - 8 * 86_400


def _failure_counter(outcome: Outcome, call: str = "rewards") -> str:
    """The counter of a host call that gave no answer, e.g. `rewards.timeout`."""
    if outcome.skipped:
        return f"{call}.host_refused"  # not enrolled, or the token was refused
    if outcome.hedged:
        return f"{call}.host_known_down"
    return f"{call}.timeout" if outcome.timed_out else f"{call}.host_error"


def _loyalty_key(loyalty_id: str | None) -> str | None:
    """What per-ID limits count by: a phone number in its 10-digit form, else the ID itself."""
    if not loyalty_id:
        return None
    return normalize_us_phone(loyalty_id) or loyalty_id


def _echo(request: Request, loyalty_sequence_id: str | None = None):
    header = copy.copy(request.header)
    if loyalty_sequence_id is not None:
        header.loyalty_sequence_id = loyalty_sequence_id
    return header


def _answer(request: Request, loyalty_sequence_id: str | None = None) -> Response:
    """A header-only response of the matching name, echoing the request's header."""
    return Response(stem=request.stem, header=_echo(request, loyalty_sequence_id))
