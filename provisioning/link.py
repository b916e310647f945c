"""The one door to the central host: the token, the guards and the one answer to "is it up?".

`HostLink` owns the `HostClient` every part uses (relay, outbox, heartbeat, config and policy,
diagnostics, the technician's test). The client asks the link before each request (`admit`:
not enrolled, or a token the host refused, means no token-bearing call at all) and tells it
after each one (`record`), so the state below is set in this module only; everyone else reads
it or, like the relay with a slow answer, only hints.

States: `not_enrolled` (no credentials yet), `unknown` (credentials, no answer yet), `online`,
`degraded` (answering, but too slowly for the POS), `down` (no usable answer: connection,
timeout, 5xx), `unauthorized` (401: the token was refused; cleared by new credentials).
The agent's `revoked` and the outbox's `paused` are this state read for their own token
(`refuses`): they keep no flag of their own.

Recovery needs no traffic: while the link is down (or unknown) one thread probes the host with
backoff and jitter, a few seconds growing to `probe_max_s`; while it is up, the agent's
heartbeat is the liveness signal. Each change to or from `down` runs the layered diagnosis at
once (`diagnose`, given by the app), so the table that names the failing layer never shows a
run from before the change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from provisioning.api import HostClient, HostError
from provisioning.backoff import backoff_delay
from provisioning.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("connectbox.host")


class LinkState(StrEnum):
    NOT_ENROLLED = "not_enrolled"
    UNKNOWN = "unknown"
    ONLINE = "online"
    DEGRADED = "degraded"
    DOWN = "down"
    UNAUTHORIZED = "unauthorized"


class Refused(HostError):
    """The link did not make the call: not enrolled, or the token was refused."""


@dataclass(frozen=True)
class Health:
    state: LinkState
    reason: str
    since: float  # wall-clock time of the last change of state
    last_ok: float | None  # the last usable answer of any kind, wall-clock

    @property
    def online(self) -> bool:
        return self.state in (LinkState.ONLINE, LinkState.DEGRADED)

    @property
    def known_down(self) -> bool:
        """Known not to answer usefully (not merely: not asked yet)."""
        return self.state in (LinkState.DOWN, LinkState.DEGRADED)


Listener = Callable[[Health], None]


class HostLink:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        probe_min_s: float = 2.0,
        probe_max_s: float = 15.0,
        fast_s: float = 1.5,
        clock: Clock = SYSTEM_CLOCK,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = HostClient(url, "", "", timeout_s=timeout_s, ca_file=ca_file, gate=self)
        self.probe_min_s = probe_min_s
        self.probe_max_s = probe_max_s
        self.fast_s = fast_s  # a probe slower than this leaves a degraded link degraded
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._health = Health(LinkState.NOT_ENROLLED, "not enrolled yet", wall(), None)
        self._listeners: list[Listener] = []
        self._refused_token: str | None = None  # the token the host answered 401 to
        self.counters = {"ok": 0, "timeout": 0, "error": 0}
        self.last_error = ""
        self.diagnose: Callable[[], Any] | None = None  # the app's layered check
        self.diagnosis: Any = None
        self.diagnosed_at: float | None = None
        self.diagnosing = False
        self._diagnose_wanted = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- who the box is ---------------------------------------------------------------------

    @property
    def enrolled(self) -> bool:
        return self._health.state is not LinkState.NOT_ENROLLED

    def use(self, device_id: str, token: str) -> None:
        """New credentials: what the host thought of the old ones no longer says anything."""
        self.client.device_id = device_id
        self.client.token = token
        self._set(LinkState.UNKNOWN, "new credentials, not tried yet")
        self._wake.set()

    def not_enrolled(self, reason: str) -> None:
        """The enrollment's own word (e.g. the claim code was rejected), for the page."""
        if not self.enrolled:
            self._set(LinkState.NOT_ENROLLED, reason, force=True)

    # ---- the gate every request of the client passes ---------------------------------------

    def admit(self, what: str, token: str) -> None:
        """Before a request: Refused when no token-bearing call may be made now. A call with
        a token other than the refused one (a rotated token being confirmed) may go."""
        if self._health.state is LinkState.NOT_ENROLLED:
            raise Refused(f"{what}: not enrolled yet")
        if self.refuses(token):
            raise Refused(f"{what}: the host refused this device's token", 401)

    def refuses(self, token: str) -> bool:
        """True for the token the host refused (401), while the link is unauthorized."""
        return self._health.state is LinkState.UNAUTHORIZED and token == self._refused_token

    def record(
        self, what: str, status: int | None, error: str = "", timeout: bool = False, token: str = ""
    ) -> None:
        """After a request: the HTTP status of the answer, or None with the error. A 401 for a
        token other than the device's (a rotated one being confirmed) says nothing of the link."""
        other_token = bool(token) and token != self.client.token
        if status == 401 and other_token:
            status = 400  # the host answered: reachable
        if status is not None and status < 500 and status not in (401, 429):
            with self._lock:
                self.counters["ok"] += 1
                self._health = _replace(self._health, last_ok=self._wall())
            state = self._health.state
            # A late answer is still slow; an answer to another token leaves the device's
            # refused (the agent and the outbox read this state to know whether to call).
            if state is not LinkState.DEGRADED and not (other_token and self.unauthorized):
                self._set(LinkState.ONLINE, "answering")
            return
        if status is not None:
            error = f"HTTP {status} {error}".strip()
        with self._lock:
            self.counters["timeout" if timeout else "error"] += 1
            self.last_error = f"{what}: {error}"
        if status == 401:
            self._refused_token = token or self.client.token
            self._set(LinkState.UNAUTHORIZED, "the host refused the device token (401)")
        else:
            self._set(LinkState.DOWN, f"{what}: {error}")

    def answered_in_time(self) -> None:
        """A hint from the relay: the host answered within the POS's time."""
        if self._health.state is LinkState.DEGRADED:
            self._set(LinkState.ONLINE, "answering in time again")

    def slow(self, what: str) -> None:
        """A hint from the relay: an answer did not come before the POS deadline. The call
        goes on; its own answer (or failure) sets the state after this."""
        with self._lock:
            self.counters["timeout"] += 1
        if self._health.state in (LinkState.ONLINE, LinkState.UNKNOWN):
            self._set(LinkState.DEGRADED, f"{what}: no answer before the POS deadline")

    # ---- reading the state -------------------------------------------------------------------

    @property
    def health(self) -> Health:
        return self._health

    @property
    def state(self) -> LinkState:
        return self._health.state

    @property
    def online(self) -> bool:
        return self._health.online

    @property
    def known_down(self) -> bool:
        return self._health.known_down

    @property
    def unauthorized(self) -> bool:
        return self._health.state is LinkState.UNAUTHORIZED

    @property
    def last_ok(self) -> float | None:
        return self._health.last_ok

    def on_change(self, listener: Listener) -> None:
        """`listener(health)` on every change of state, from the thread that changed it."""
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        health = self._health
        diagnosis = self.diagnosis
        if diagnosis is not None and callable(getattr(diagnosis, "to_dict", None)):
            diagnosis = diagnosis.to_dict()
        return {
            "url": self.client.base,
            "state": str(health.state),
            "reason": health.reason,
            "since": health.since,
            "online": health.online,
            "unauthorized": health.state is LinkState.UNAUTHORIZED,
            "last_ok": health.last_ok,
            "last_error": self.last_error,
            **self.counters,
            "diagnosis": diagnosis,
            "diagnosed_at": self.diagnosed_at,
            "diagnosing": self.diagnosing,
        }

    def _set(self, state: LinkState, reason: str, force: bool = False) -> None:
        with self._lock:
            old = self._health
            if old.state is state and (not force or old.reason == reason):
                return
            if old.state is LinkState.NOT_ENROLLED and not force and state is not LinkState.UNKNOWN:
                return  # a late answer for an enrollment-less call changes nothing
            self._health = Health(state, reason, self._wall(), old.last_ok)
            health = self._health
        if state in (LinkState.ONLINE, LinkState.UNKNOWN, LinkState.NOT_ENROLLED):
            log.info("central host: %s (%s)", state, reason)
        else:
            log.warning("central host: %s (%s)", state, reason)
        if LinkState.DOWN in (old.state, state) or state is LinkState.UNAUTHORIZED:
            self.diagnose_soon()
        self._wake.set()
        for listener in self._listeners:
            try:
                listener(health)
            except Exception:  # a listener's bug must not stop the others
                log.exception("host link listener failed")

    # ---- probing and diagnosing ------------------------------------------------------------

    def diagnose_soon(self) -> None:
        """Run the layered diagnosis on the link's thread as soon as it can."""
        self._diagnose_wanted.set()
        self._wake.set()

    def diagnose_now(self) -> Any:
        """Run the layered diagnosis in this thread (the technician asked) and keep it."""
        if self.diagnose is None:
            return None
        self.diagnosing = True
        try:
            result = self.diagnose()
        finally:
            self.diagnosing = False
        self.take_diagnosis(result)
        return result

    def take_diagnosis(self, result: Any) -> None:
        """A layered check someone ran (the link itself, the network's periodic check, the
        technician): kept as the diagnosis. One that disagrees with the state is a hint: the
        link probes at once and the answer decides."""
        self.diagnosis, self.diagnosed_at = result, self._wall()
        passed = getattr(result, "ok", None)
        if (
            passed is not None
            and passed != self._health.online
            and self.enrolled
            and not self.unauthorized
        ):
            self.probe()  # its answer sets the state

    def probe(self) -> bool:
        """One cheap authenticated call (the device's config); True when the host answered
        (within `fast_s` when it was slow before)."""
        started = self._clock.monotonic()
        try:
            self.client.request("GET", f"/v1/devices/{self.client.device_id}/config")
        except HostError:
            return False
        if self._clock.monotonic() - started > self.fast_s:
            return False
        self.answered_in_time()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="host-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._diagnose_wanted.is_set():
                self._diagnose_wanted.clear()
                self.diagnosing = True  # shown at once: the table is being redone
                try:
                    self.diagnose_now()
                except Exception:
                    log.exception("host diagnosis failed")
                continue
            state = self._health.state
            if state is LinkState.DEGRADED and not failures:
                failures, wait = 1, self._probe_delay(1)  # slow: give it a moment first
            elif state in (LinkState.DOWN, LinkState.DEGRADED, LinkState.UNKNOWN):
                if self.probe():
                    failures = 0
                    continue  # the answer set the state: look again
                failures += 1
                wait = self._probe_delay(failures)
            else:
                failures, wait = 0, 3600.0  # up, or nothing to try: the heartbeat watches
            self._clock.wait(self._wake, wait)
            self._wake.clear()

    def _probe_delay(self, failures: int) -> float:
        """A few seconds, growing to probe_max_s, with jitter so boxes spread apart."""
        return backoff_delay(
            failures, self.probe_min_s, self.probe_max_s, growth=1.5, jitter=(0.75, 1.0)
        )


def _replace(health: Health, **changes: Any) -> Health:
    return Health(**{**asdict(health), **changes})
