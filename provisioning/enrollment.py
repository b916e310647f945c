"""Zero-touch enrollment: a fresh box trades its claim code for a device id and token.

`POST /v1/enroll` is the only call made without a bearer token (host-api.md); it carries a stable
`Idempotency-Key` derived from the serial and the claim code, so a box that lost the answer (power
cut between the host's answer and the write) gets the same device back instead of a 403 for a
claim code it already used. The credentials are written atomically (0600) before `enroll_once`
returns. `run()` retries with exponential backoff and jitter while the host cannot be reached and
stops for good when the host refuses the claim code.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from provisioning import http
from provisioning.api import HostError, is_loopback_host
from provisioning.backoff import backoff_delay
from provisioning.rfc3339 import format_rfc3339, now_rfc3339
from provisioning.store import Credentials, CredentialStore
from provisioning.version import software_version as installed_version

log = logging.getLogger("connectbox.enrollment")

STATES = ("waiting", "enrolling", "enrolled", "claim_rejected", "host_unreachable")


class ClaimRejected(HostError):
    """The host refused the claim code (403): unknown, or already used by another box."""


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def check_url(url: str, allow_plain_http: bool = False) -> None:
    """host-api.md: HTTPS, plain http only for a loopback host (development and tests)."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and (allow_plain_http or is_loopback_url(url))):
        return
    raise ValueError(f"host URL {url!r}: use https:// (plain http:// only for a loopback host)")


def enroll_key(serial: str, claim_code: str) -> str:
    """The Idempotency-Key of an enrollment: the same box with the same code, the same key."""
    digest = hashlib.sha256(f"{serial}\n{claim_code}".encode()).hexdigest()
    return str(uuid.UUID(digest[:32]))


class Enroller:
    def __init__(
        self,
        url: str,
        credentials: CredentialStore,
        serial: str,
        claim_code: str | None,
        model: str = "connectbox",
        software_version: str | None = None,
        timeout_s: float = 10,
        backoff_base_s: float = 1,
        backoff_max_s: float = 300,
        ca_file: str | None = None,
        allow_plain_http: bool = False,
    ) -> None:
        check_url(url, allow_plain_http)
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.serial = serial
        self.claim_code = claim_code.strip() if claim_code else None
        self.model = model
        self.software_version = software_version or installed_version()
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._pool = http.new_pool(ca_file, maxsize=1)
        self.state = "waiting"
        self.last_error: str | None = None
        self.attempts = 0
        self.next_try_at: float | None = None  # wall clock, for the status page
        self.enrolled: Credentials | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    # One attempt.

    def enroll_once(self) -> Credentials:
        """One `POST /v1/enroll`; the credentials are stored before this returns.

        Raises ClaimRejected (403), or HostError when the host is unreachable or answers
        something else."""
        if not self.claim_code:
            raise HostError("no claim code: type the code printed on the box label")
        body = {
            "claim_code": self.claim_code,
            "serial": self.serial,
            "model": self.model,
            "software_version": self.software_version,
        }
        headers = {
            # Deliberately no Authorization header: the box has no token yet.
            "User-Agent": f"connectbox/{self.software_version}",
            "X-Device-Clock": now_rfc3339(),
            "Idempotency-Key": enroll_key(self.serial, self.claim_code),
        }
        with self._lock:
            self.attempts += 1
        headers["Content-Type"] = "application/json"
        try:
            reply = http.exchange(
                self._pool, "POST", self.url + "/v1/enroll", headers=headers,
                body=http.json_body(body), timeout_s=self.timeout_s,
            )  # fmt: skip
        except http.HttpFailure as exc:
            if exc.timeout:
                raise HostError(f"no answer from the host within {self.timeout_s:g} s") from None
            raise HostError(f"cannot reach the host at {self.url}: {exc}") from None
        if reply.status_code == 403:
            raise ClaimRejected(
                f"the host refused claim code {self.claim_code} ({_error_message(reply)}): check"
                " the code on the box label, or ask the provider for a new one",
                403,
                _error_code(reply),
            )
        if reply.status_code != 200:
            raise HostError(
                f"enrollment failed: host answered {reply.status_code} ({_error_message(reply)})",
                reply.status_code,
                _error_code(reply),
            )
        creds = _credentials(reply)
        self.credentials.save(creds)
        with self._lock:
            self.enrolled = creds
            self.state = "enrolled"
            self.last_error = None
            self.next_try_at = None
        log.info("enrolled as device %s at site %s", creds.device_id, creds.site_id)
        return creds

    # Until it works.

    def run(self, stop: threading.Event, reenroll: bool = False) -> Credentials | None:
        """Enroll, retrying while the host cannot be reached. Returns the credentials (stored
        ones when the box is already enrolled, unless `reenroll`), or None when the claim code
        was refused or `stop` was set. Stored credentials are replaced only by new ones."""
        existing = None if reenroll else self.credentials.load()
        if existing is not None:
            with self._lock:
                self.enrolled, self.state = existing, "enrolled"
            return existing
        failures = 0
        while not stop.is_set():
            if not self.claim_code:
                self._set("waiting", "no claim code yet: type the code printed on the box label")
                self._sleep(stop, None)
                continue
            self._set("enrolling", self.last_error)
            try:
                return self.enroll_once()
            except ClaimRejected as exc:
                self._set("claim_rejected", str(exc))
                log.error("%s", exc)
                return None
            except HostError as exc:
                failures += 1
                delay = self.backoff(failures)
                with self._lock:
                    self.state = "host_unreachable"
                    self.last_error = str(exc)
                    self.next_try_at = time.time() + delay
                log.warning("enrollment: %s; next try in %.0f s", exc, delay)
                self._sleep(stop, delay)
        return None

    def backoff(self, failures: int) -> float:
        """Exponential (base * 2^(n-1), capped) with jitter: 50-100 % of the step."""
        return backoff_delay(failures, self.backoff_base_s, self.backoff_max_s)

    def set_claim_code(self, code: str) -> None:
        """A technician typed a (new) claim code: try it now."""
        with self._lock:
            self.claim_code = code.strip() or None
            if self.state == "claim_rejected":
                self.state = "waiting"
            self.next_try_at = None
        self._wake.set()

    def retry_now(self) -> None:
        self._wake.set()

    def _set(self, state: str, error: str | None) -> None:
        with self._lock:
            self.state = state
            self.last_error = error
            if state != "host_unreachable":
                self.next_try_at = None

    def _sleep(self, stop: threading.Event, seconds: float | None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.is_set():
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0 or self._wake.wait(left):
                break
        self._wake.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            enrolled = self.enrolled
            next_in = None if self.next_try_at is None else max(0.0, self.next_try_at - time.time())
            return {
                "state": self.state,
                "serial": self.serial,
                # Printed on the box label; shown until the box is enrolled, never after.
                "claim_code": None if enrolled else self.claim_code,
                "last_error": self.last_error,
                "attempts": self.attempts,
                "next_try_at": _iso(self.next_try_at),
                "next_try_in_s": None if next_in is None else round(next_in, 1),
                "device_id": enrolled.device_id if enrolled else None,
                "site_id": enrolled.site_id if enrolled else None,
            }


def _credentials(reply: http.Answer) -> Credentials:
    try:
        data = reply.json()
    except ValueError:
        raise HostError("enrollment answer is not JSON", reply.status_code) from None
    values = [data.get(k) if isinstance(data, dict) else None for k in _ANSWER_KEYS]
    if not all(isinstance(v, str) and v for v in values[:2]) or not isinstance(values[2], str):
        raise HostError("enrollment answer lacks device_id, device_token or site_id", 200)
    return Credentials(device_id=values[0], token=values[1], site_id=values[2])


_ANSWER_KEYS = ("device_id", "device_token", "site_id")


def _error_message(reply: http.Answer) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return reply.reason or f"HTTP {reply.status_code}"


def _error_code(reply: http.Answer) -> str:
    try:
        return str(reply.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _iso(moment: float | None) -> str | None:
    return None if moment is None else format_rfc3339(moment)
