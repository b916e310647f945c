"""HTTP client for the provider's central host (host-api.md), with pooling and timeouts.

One thread-safe connection pool, TLS verification always on, every call carrying the bearer
token, User-Agent and the box's clock, every answer read whole within a size cap and the timeout
(provisioning/http.py). It lives in `provisioning/` because enrollment and remote management use
it too (and never import `app/`); the relay in `app/` uses the same client.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Protocol

from provisioning import http
from provisioning.http import MAX_ANSWER_BYTES, Answer, HttpFailure
from provisioning.rfc3339 import now_rfc3339
from provisioning.version import software_version

__all__ = ["MAX_ANSWER_BYTES", "Answer", "HostClient", "HostError", "is_loopback_host"]


class HostError(Exception):
    """The host did not give a usable answer. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def unauthorized(self) -> bool:
        return self.status == 401

    @property
    def retryable(self) -> bool:
        """Connection problems, timeouts and 5xx: try again later. 4xx will not get better."""
        return self.status is None or self.status >= 500 or self.status == 429


class Gate(Protocol):
    """What every request passes: `admit` may refuse it (raising HostError) before it is
    made, `record` hears how it went (the HTTP status, or None and the error)."""

    def admit(self, what: str, token: str) -> None: ...

    def record(
        self, what: str, status: int | None, error: str = "", timeout: bool = False, token: str = ""
    ) -> None: ...


class HostClient:
    def __init__(
        self,
        url: str,
        token: str,
        device_id: str,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.base = url.rstrip("/")
        self.gate = gate
        self.token = token
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.last_date_header: str | None = None
        """The host's `Date` header of the latest answer (clock-skew checks)."""
        self.last_date_at: float | None = None
        """When (time.monotonic()) that answer came: the host's time is `Date` plus the age."""
        self._pool = http.new_pool(ca_file)
        self._user_agent = f"connectbox/{software_version()}"

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "User-Agent": self._user_agent,
            "X-Device-Clock": now_rfc3339(),
        }
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        """One HTTP call with a `json` or raw `data` body; connection problems, timeouts and
        oversize answers become HostError.
        The gate, when there is one, admits it first and hears how it went."""
        sent = {**self._headers(idempotency_key), **(headers or {})}
        body = data
        if json is not None:
            body = http.json_body(json)
            sent["Content-Type"] = "application/json"
        token = sent.get("Authorization", "").removeprefix("Bearer ")
        what = f"{method} {path}"
        if self.gate is not None:
            self.gate.admit(what, token)
        try:
            reply = http.exchange(
                self._pool, method, self.base + path, headers=sent, body=body,
                timeout_s=self.timeout_s,
            )  # fmt: skip
        except HttpFailure as exc:
            if exc.status is not None:
                error = HostError(f"host answer over {MAX_ANSWER_BYTES} bytes", exc.status)
            elif exc.timeout:
                error = HostError(f"no answer from the host within {self.timeout_s:g} s")
            else:
                error = HostError(f"cannot reach the host: {exc}")
            self._record(what, None, str(error), timeout=exc.timeout)
            raise error from None
        self.last_date_header = reply.headers.get("Date")
        self.last_date_at = time.monotonic()
        self._record(what, reply.status_code, reply.reason, token=token)
        return reply

    def _record(
        self, what: str, status: int | None, error: str, timeout: bool = False, token: str = ""
    ) -> None:
        if self.gate is not None:
            self.gate.record(what, status, error, timeout=timeout, token=token or self.token)

    def post(self, path: str, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        return _json_or_raise(
            self.request("POST", path, json=body, idempotency_key=idempotency_key)
        )

    # The calls of host-api.md the relay makes.

    def rewards(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/v1/rewards", body)

    def identify(self, body: dict[str, Any]) -> dict[str, Any]:
        """A customer before or outside a basket (v1.1: BeginCustomer, GetCustomerMessaging)."""
        return self.post("/v1/customers/identify", body)

    def transaction(self, body: dict[str, Any], event_id: str) -> dict[str, Any]:
        return self.post("/v1/transactions", body, idempotency_key=event_id)

    def transactions_batch(
        self, events: list[tuple[str, dict[str, Any]]], *, resend: bool = False
    ) -> list[dict[str, Any]]:
        """Deliver (idempotency key, event) pairs in one call; the per-event results, in order.
        `resend`: events the host already has, sent again on its `resend_events` command."""
        body: dict[str, Any] = {
            "events": [{"idempotency_key": key, "event": event} for key, event in events]
        }
        if resend:
            body["resend"] = True
        answer = self.post("/v1/transactions/batch", body)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(events):
            raise HostError("batch answer does not list one result per event", 200)
        return results

    def config(self, etag: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """GET the device config: (config, ETag), or (None, etag) when unchanged (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        reply = self.request("GET", f"/v1/devices/{self.device_id}/config", headers=headers)
        if reply.status_code == 304:
            return None, etag
        return _json_or_raise(reply), reply.headers.get("ETag")


def _json_or_raise(reply: Answer) -> Any:
    if reply.status_code >= 400:
        code, message = "", reply.reason
        try:
            error = reply.json().get("error", {})
            code, message = error.get("code", ""), error.get("message", message)
        except (ValueError, AttributeError):
            pass
        raise HostError(f"host answered {reply.status_code}: {message}", reply.status_code, code)
    try:
        return reply.json()
    except ValueError:
        raise HostError("host answered with a body that is not JSON", reply.status_code) from None


def is_loopback_host(hostname: str) -> bool:
    """localhost or a loopback address: where plain http is allowed (development, tests)."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
