"""The reference central host: every endpoint of host-api.md, for the demo, tests and technicians.

It is a simulator of the provider's system, not the provider's system: the box must depend on
nothing it does beyond host-api.md. Policies are signed with the public TEST key of `keys.py`.

Endpoints under `/_sim/` are TEST-ONLY knobs (no authentication, not part of the contract):
`GET /_sim/events`, `GET /_sim/rewards-requests`, `GET /_sim/heartbeats`, `GET /_sim/logs`,
`GET|POST /_sim/commands`, `POST /_sim/fault` and `POST /_sim/reset`.

Run it: `python -m app.host.reference.server --port 8700 [--store host.db] [--policy FILE]`.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, g, jsonify, request
from waitress import create_server
from werkzeug.exceptions import HTTPException

from app.host.reference import keys
from app.host.reference.store import COMMAND_TYPES, Device, HostStore, Stored
from app.money import ZERO, fmt_money, parse_decimal
from app.programs import scan_data
from app.programs.nanp import normalize_us_phone
from app.programs.policy import canonical_json, sign_policy
from app.web_server import serve_in_thread, stop_server
from provisioning.rfc3339 import parse_rfc3339

log = logging.getLogger("connectbox.reference_host")

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.json")
EVENT_TYPES = ("finalize", "cancel", "reverse", "unreadable")
HEARTBEAT_STATUSES = ("online", "degraded", "offline")
MAX_BATCH_EVENTS = 500
MAX_LOG_BYTES = 5 * 1024 * 1024
FAULT_MODES = ("ok", "error500", "hang")

# What a device's config carries besides its site id and policy (host-api.md's example).
DEFAULT_CONFIG: dict[str, Any] = {
    "site": {"name": "Main St #4", "timezone": "America/Chicago"},
    "pos": {"dialect": "passport", "listen_port": 9000, "deadline_ms": 1500},
    "readers": [{"match": {"vendor_id": "0801"}, "register_id": "1"}],
    "heartbeat_s": 60,
}

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolicySource:
    """Renders the policy template for a site, with dates that stay valid while the host runs.

    Dates the template leaves out are filled in: `issued_at` moves forward every 7 days (and
    `policy_version` with it) and `expires_at` is 14 days after it, so the document, its
    signature and the config ETag stay the same for a week and a running demo never serves an
    expired policy. Program windows span the issue year (to the end of the expiry year).
    """

    RENEW_EVERY = timedelta(days=7)
    LIFETIME = timedelta(days=14)

    def __init__(self, template: dict[str, Any], started: datetime) -> None:
        self.template = template
        self.started = started.replace(microsecond=0)

    def render(self, site_id: str, now: datetime) -> dict[str, Any]:
        doc = copy.deepcopy(self.template)
        period = self.period(now)
        issued = self.started + period * self.RENEW_EVERY
        expires = issued + self.LIFETIME
        doc["site_id"] = site_id  # a policy is only ever used at its own site
        doc["policy_version"] = int(doc.get("policy_version") or 1) + period
        doc["issued_at"] = doc.get("issued_at") or _rfc3339(issued)
        doc["expires_at"] = doc.get("expires_at") or _rfc3339(expires)
        if not doc.get("subscription_valid_until"):
            doc["subscription_valid_until"] = (expires + timedelta(days=365)).date().isoformat()
        for program in doc.get("programs") or []:
            program["valid_from"] = program.get("valid_from") or f"{issued.year}-01-01"
            program["valid_to"] = program.get("valid_to") or f"{expires.year}-12-31"
        return doc

    def period(self, now: datetime) -> int:
        """How many times the dates were renewed (0 when the template sets its own)."""
        if self.template.get("issued_at") or self.template.get("expires_at"):
            return 0
        return max(0, (now - self.started) // self.RENEW_EVERY)


def load_policy(path: str | Path | None = None) -> dict[str, Any]:
    """A policy template from a JSON file (default: the package's default_policy.json)."""
    with open(path or DEFAULT_POLICY_PATH, encoding="utf-8") as handle:
        doc = json.load(handle)
    if not isinstance(doc, dict) or not isinstance(doc.get("programs", []), list):
        raise ValueError(f"{path}: a policy is a JSON object with a programs list")
    return doc


@dataclass
class SimState:
    """The `/_sim/fault` setting, shared by the request threads."""

    mode: str = "ok"
    seconds: float = 0.0
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, mode: str, seconds: float) -> None:
        with self.lock:
            self.mode, self.seconds = mode, seconds

    def current(self) -> tuple[str, float]:
        with self.lock:
            return self.mode, self.seconds


@dataclass
class HostContext:
    store: HostStore
    policies: PolicySource
    private_key: Ed25519PrivateKey
    key_id: str
    config: dict[str, Any]
    clock: Clock
    sim: SimState


# Helpers shared by the routes.


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _answer(stored: Stored) -> tuple[Response, int]:
    return jsonify(stored.body), stored.status


def _body_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_hash(body: Any) -> str:
    # Hash of the canonical form: key order and spacing do not make a body "different", and an
    # event hashes the same sent alone or inside a batch.
    return _body_hash(canonical_json(body) if isinstance(body, dict) else json.dumps(body).encode())


def _json_body() -> Any:
    """The request's JSON, or None when it is missing, not JSON or not application/json."""
    return request.get_json(silent=True)


def _parse_time(value: Any) -> datetime | None:
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def _loyalty_value(body: dict[str, Any]) -> str | None:
    loyalty = body.get("loyalty_id")
    value = loyalty.get("value") if isinstance(loyalty, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def _loyalty_key(value: str) -> str:
    """What daily limits count by: the 10 digits of a phone number, else the ID as sent."""
    return normalize_us_phone(value) or value.strip()


def _is_decimal_text(value: Any) -> bool:
    return isinstance(value, str) and parse_decimal(value) is not None


# /v1/rewards


def _rewards_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    basket = body.get("basket")
    if not isinstance(basket, dict) or not isinstance(basket.get("lines"), list):
        return "basket.lines must be a list"
    if any(not isinstance(line, dict) for line in basket["lines"]):
        return "every basket line must be an object"
    loyalty = body.get("loyalty_id")
    if loyalty is not None and not isinstance(loyalty, dict):
        return "loyalty_id must be an object or null"
    if _parse_time(body.get("occurred_at")) is None:
        return "occurred_at must be an RFC 3339 time with offset"
    return None


def evaluate_rewards(ctx: HostContext, device: Device, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a basket: every scan_data program of the site's policy, evaluated."""
    policy = ctx.policies.render(device.site_id, ctx.clock())
    programs = [p for p in policy.get("programs") or [] if p.get("kind") == "scan_data"]
    lines = body["basket"]["lines"]
    loyalty_id = _loyalty_value(body)
    occurred = _parse_time(body["occurred_at"])
    assert occurred is not None  # checked by _rewards_problem
    today = occurred.date()  # the sale's own local date: limits are per day at the site
    customer = body.get("customer") if isinstance(body.get("customer"), dict) else {}
    already = 0
    if loyalty_id is not None:
        already = ctx.store.discounted_count(_loyalty_key(loyalty_id), today.isoformat())
    subscription = _date_or_none(policy.get("subscription_valid_until"))
    rewards: list[dict[str, Any]] = []
    for program in programs:
        decision = scan_data.evaluate(
            program, lines, loyalty_id, customer.get("age_verified"), today, already, subscription
        )
        rewards.extend(decision.rewards)
    rewards = scan_data.cap_to_lines(rewards, lines)
    valid = loyalty_id is not None and all(
        scan_data.loyalty_id_accepted(p, loyalty_id) for p in programs
    )
    saved = sum((Decimal(r["value"]) for r in rewards), ZERO)
    return {
        "loyalty_id_valid": valid,
        "display_text": _display_text(loyalty_id, valid, saved),
        "rewards": rewards,
        "receipt_lines": [f"You saved ${fmt_money(saved)} today"] if rewards else [],
        "prompt_for_loyalty": True,
    }


def _date_or_none(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _display_text(loyalty_id: str | None, valid: bool, saved: Decimal) -> str:
    if loyalty_id is None:
        return "Enter your phone number to save"
    if not valid:
        return "Loyalty ID not valid"
    if saved > ZERO:
        return f"You save ${fmt_money(saved)}"
    return "Welcome back"


# /v1/transactions


def _event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "the event must be a JSON object"
    kind = event.get("event")
    if kind is None:
        return "event is required"
    if kind not in EVENT_TYPES:
        return f"unknown event type {kind!r}; one of {', '.join(EVENT_TYPES)}"
    if kind == "unreadable":
        return _unreadable_problem(event)
    applied = event.get("rewards_applied", [])
    if not isinstance(applied, list) or any(
        not isinstance(r, dict) or not _is_decimal_text(r.get("amount")) for r in applied
    ):
        return "rewards_applied must be a list of objects with a decimal string amount"
    if "final_total" in event and not _is_decimal_text(event["final_total"]):
        return "final_total must be a decimal string"
    if "occurred_at" in event and _parse_time(event["occurred_at"]) is None:
        return "occurred_at must be an RFC 3339 time with offset"
    return None


def _unreadable_problem(event: dict[str, Any]) -> str | None:
    """A request the box kept but could not read: its type, the exact bytes and why."""
    for key in ("request_type", "raw", "error"):
        if not isinstance(event.get(key), str):
            return f"an unreadable event needs {key} as a string"
    try:
        base64.b64decode(event["raw"], validate=True)
    except ValueError:
        return "raw must be base64"
    return None


def accept_event(ctx: HostContext, device: Device, key: str, event: dict[str, Any]) -> Stored:
    """Store one (valid) transaction event under its Idempotency-Key."""
    applied = event.get("rewards_applied") or []
    saved = sum((Decimal(r["amount"]) for r in applied), ZERO)
    receipt = (
        [f"Loyalty savings ${fmt_money(saved)}"]
        if event["event"] == "finalize" and applied and saved > ZERO
        else []
    )
    loyalty_id = _loyalty_value(event)
    occurred = _parse_time(event.get("occurred_at")) or ctx.clock()
    return ctx.store.record_event(
        device.device_id,
        key,
        event,
        _json_hash(event),
        {"accepted": True, "receipt_lines": receipt},
        loyalty_key=_loyalty_key(loyalty_id) if loyalty_id else None,
        day=occurred.date().isoformat(),
        discounted=event["event"] == "finalize" and bool(applied) and loyalty_id is not None,
    )


def _batch_result(ctx: HostContext, device: Device, entry: Any) -> dict[str, Any]:
    key = entry.get("idempotency_key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key:
        problem = "idempotency_key is required"
    else:
        problem = _event_problem(entry.get("event"))
    if problem:
        return {
            "idempotency_key": key if isinstance(key, str) else None,
            "status": 422,
            "receipt_lines": [],
            "error": {"code": "invalid_event", "message": problem},
        }
    stored = accept_event(ctx, device, key, entry["event"])
    result: dict[str, Any] = {"idempotency_key": key, "status": stored.status}
    result["receipt_lines"] = stored.body.get("receipt_lines", [])
    if "error" in stored.body:
        result["error"] = stored.body["error"]
    return result


# Config


def device_config(ctx: HostContext, device: Device) -> dict[str, Any]:
    now = ctx.clock()
    policy = ctx.policies.render(device.site_id, now)
    config = copy.deepcopy(ctx.config)
    config["config_version"] = int(config.get("config_version") or 1) + ctx.policies.period(now)
    config["site"] = {"site_id": device.site_id, **config.get("site", {})}
    config["policy"] = sign_policy(policy, ctx.private_key, ctx.key_id)
    return config


def config_etag(config: dict[str, Any]) -> str:
    # Ed25519 signatures are deterministic, so the same config always has the same tag.
    return _body_hash(canonical_json(config))[:32]


# The application.


def create_app(
    store: HostStore,
    policy: dict[str, Any] | None = None,
    *,
    private_key: Ed25519PrivateKey | None = None,
    key_id: str = keys.TEST_KEY_ID,
    config: dict[str, Any] | None = None,
    clock: Clock = _utc_now,
    sim: SimState | None = None,
) -> Flask:
    """The reference host as a Flask app over `store`.

    `policy` is the policy template (default: default_policy.json), signed with `private_key`
    (default: the public TEST key) under `key_id`. `clock` lets tests move time.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024  # bounds every body; logs check 5 MiB
    ctx = HostContext(
        store=store,
        policies=PolicySource(policy if policy is not None else load_policy(), clock()),
        private_key=private_key or keys.test_private_key(),
        key_id=key_id,
        config=config if config is not None else DEFAULT_CONFIG,
        clock=clock,
        sim=sim or SimState(),
    )
    app.extensions["reference_host"] = ctx
    _install_hooks(app, ctx)
    _install_contract_routes(app, ctx)
    _install_device_routes(app, ctx)
    _install_sim_routes(app, ctx)
    return app


def _install_hooks(app: Flask, ctx: HostContext) -> None:
    @app.before_request
    def authenticate() -> Any:
        path = request.path
        if not path.startswith("/v1/") or path == "/v1/enroll":
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        device = ctx.store.device_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if device is None:
            response, status = error(401, "unauthorized", "missing, invalid or revoked token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="connectbox"'
            return response, status
        g.device = device
        return None

    @app.after_request
    def date_header(response: Response) -> Response:
        # The box measures its clock skew from this; never leave it to the WSGI server.
        response.headers["Date"] = formatdate(usegmt=True)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Any:
        # Still the contract's error shape, so a box sees a plain retryable 5xx.
        log.exception("reference host failed on %s %s", request.method, request.path)
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")


def _fault(ctx: HostContext) -> tuple[Response, int] | None:
    """Apply the `/_sim/fault` setting: a 500, or a delay before answering normally."""
    mode, seconds = ctx.sim.current()
    if mode == "error500":
        return error(500, "simulated_fault", "the reference host is set to fail (/_sim/fault)")
    if mode == "hang":
        ctx.sim.stopping.wait(seconds)  # stop() cuts the wait short
    return None


def _install_contract_routes(app: Flask, ctx: HostContext) -> None:
    @app.post("/v1/enroll")
    def enroll() -> Any:
        body = _json_body()
        if not isinstance(body, dict) or not isinstance(body.get("claim_code"), str):
            return error(422, "invalid_request", "claim_code is required")

        def handle() -> Stored:
            device = ctx.store.enroll(body["claim_code"].strip(), body.get("serial"))
            if device is None:
                return Stored(403, _error_body("claim_code_rejected", "unknown or used claim code"))
            answer = {
                "device_id": device.device_id,
                "device_token": device.token,
                "site_id": device.site_id,
                "config": device_config(ctx, device),
            }
            return Stored(200, answer)

        key = request.headers.get("Idempotency-Key")
        return _answer(ctx.store.once("enroll", key, _json_hash(body), handle))

    @app.post("/v1/rewards")
    def rewards() -> Any:
        body = _json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        ctx.store.record_rewards_request(g.device.device_id, body)  # even when faulting
        fault = _fault(ctx)
        if fault:
            return fault
        problem = _rewards_problem(body)
        if problem:
            return error(422, "invalid_request", problem)
        return jsonify(evaluate_rewards(ctx, g.device, body))

    @app.post("/v1/transactions")
    def transaction() -> Any:
        fault = _fault(ctx)
        if fault:
            return fault
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return error(400, "missing_idempotency_key", "Idempotency-Key header is required")
        body = _json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        problem = _event_problem(body)
        if problem:
            return error(422, "invalid_event", problem)
        return _answer(accept_event(ctx, g.device, key, body))

    @app.post("/v1/transactions/batch")
    def transaction_batch() -> Any:
        fault = _fault(ctx)
        if fault:
            return fault
        body = _json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return error(422, "invalid_request", "events must be a list")
        if len(events) > MAX_BATCH_EVENTS:
            return error(422, "too_many_events", f"at most {MAX_BATCH_EVENTS} events per batch")
        keys = [e.get("idempotency_key") if isinstance(e, dict) else None for e in events]
        ctx.store.record_batch(g.device.device_id, keys, body.get("resend") is True)
        return jsonify({"results": [_batch_result(ctx, g.device, entry) for entry in events]})


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _other_device(device_id: str) -> tuple[Response, int] | None:
    if device_id != g.device.device_id:
        return error(403, "forbidden", "this token belongs to another device")
    return None


def _install_device_routes(app: Flask, ctx: HostContext) -> None:
    @app.get("/v1/devices/<device_id>/config")
    def config(device_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        body = device_config(ctx, g.device)
        tag = config_etag(body)
        if request.if_none_match and (
            request.if_none_match.star_tag or request.if_none_match.contains_weak(tag)
        ):
            response = Response(status=304)
        else:
            response = jsonify(body)
        response.set_etag(tag)
        return response

    @app.post("/v1/devices/<device_id>/heartbeat")
    def heartbeat(device_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        body = _json_body()
        if not isinstance(body, dict):
            return error(422, "invalid_request", "the body must be a JSON object")
        if body.get("status") not in HEARTBEAT_STATUSES:
            allowed = ", ".join(HEARTBEAT_STATUSES)
            return error(422, "invalid_request", f"status is one of {allowed}")
        ctx.store.record_heartbeat(device_id, body)
        return jsonify({"commands": ctx.store.pending_commands(device_id)})

    @app.post("/v1/devices/<device_id>/commands/<command_id>/result")
    def command_result(device_id: str, command_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        body = _json_body()
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            return error(422, "invalid_request", "ok (a boolean) is required")
        key = request.headers.get("Idempotency-Key")
        return _answer(
            ctx.store.once(
                f"result:{device_id}:{command_id}",
                key,
                _json_hash(body),
                lambda: ctx.store.record_command_result(device_id, command_id, body),
            )
        )

    @app.post("/v1/devices/<device_id>/logs")
    def logs(device_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        if request.mimetype not in ("application/gzip", "application/x-gzip"):
            return error(415, "unsupported_media_type", "logs are sent as application/gzip")
        if (request.content_length or 0) > MAX_LOG_BYTES:
            return error(413, "too_large", f"at most {MAX_LOG_BYTES} bytes per call")
        data = request.stream.read(MAX_LOG_BYTES + 1)
        if len(data) > MAX_LOG_BYTES:
            return error(413, "too_large", f"at most {MAX_LOG_BYTES} bytes per call")
        if not _is_gzip(data):
            return error(422, "invalid_request", "the body is not gzip data")

        def handle() -> Stored:
            return Stored(200, {"accepted": True, "log_id": ctx.store.add_log(device_id, data)})

        key = request.headers.get("Idempotency-Key")
        return _answer(ctx.store.once(f"logs:{device_id}", key, _body_hash(data), handle))

    @app.post("/v1/devices/<device_id>/token")
    def rotate_token(device_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        key = request.headers.get("Idempotency-Key")
        return _answer(
            ctx.store.once(
                f"token:{device_id}",
                key,
                _body_hash(request.get_data()),
                lambda: Stored(200, {"device_token": ctx.store.rotate_token(device_id)}),
            )
        )


def _is_gzip(data: bytes) -> bool:
    """A sanity check, not a full decode: the gzip header and the first bytes inflate."""
    try:
        zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:65536], 1)
    except zlib.error:
        return False
    return data[:2] == b"\x1f\x8b"


def _install_sim_routes(app: Flask, ctx: HostContext) -> None:
    """TEST-ONLY knobs for tests, the demo and technicians: no auth, not in the contract."""

    @app.get("/_sim/events")
    def sim_events() -> Any:
        return jsonify({"events": ctx.store.events()})

    @app.get("/_sim/rewards-requests")
    def sim_rewards_requests() -> Any:
        return jsonify({"requests": ctx.store.rewards_requests()})

    @app.get("/_sim/heartbeats")
    def sim_heartbeats() -> Any:
        return jsonify({"heartbeats": ctx.store.heartbeats()})

    @app.get("/_sim/logs")
    def sim_logs() -> Any:
        entries = [{k: v for k, v in e.items() if k != "content"} for e in ctx.store.logs()]
        return jsonify({"logs": entries})

    @app.get("/_sim/commands")
    def sim_commands() -> Any:
        return jsonify({"commands": ctx.store.commands()})

    @app.post("/_sim/commands")
    def sim_queue_command() -> Any:
        body = _json_body()
        if not isinstance(body, dict) or body.get("type") not in COMMAND_TYPES:
            return error(422, "invalid_request", f"type is one of {', '.join(COMMAND_TYPES)}")
        command_id = ctx.store.queue_command(
            body.get("device_id") or "D-DEMO",
            body["type"],
            body.get("args") or {},
            body.get("command_id"),
        )
        return jsonify({"command_id": command_id})

    @app.post("/_sim/fault")
    def sim_fault() -> Any:
        body = _json_body()
        mode = body.get("mode") if isinstance(body, dict) else None
        seconds = body.get("seconds", 5) if isinstance(body, dict) else 5
        if mode not in FAULT_MODES:
            return error(422, "invalid_request", f"mode is one of {', '.join(FAULT_MODES)}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return error(422, "invalid_request", "seconds must be a non-negative number")
        ctx.sim.set(mode, float(seconds))
        return jsonify({"mode": mode, "seconds": seconds})

    @app.post("/_sim/reset")
    def sim_reset() -> Any:
        ctx.store.reset()
        ctx.sim.set("ok", 0.0)
        return jsonify({"reset": True})


# Serving.


@dataclass
class RunningHost:
    """A reference host serving on a background thread (tests and the demo)."""

    url: str
    store: HostStore
    app: Flask
    _server: Any
    _thread: threading.Thread
    _sim: SimState

    def set_fault(self, mode: str, seconds: float = 0.0) -> None:
        self._sim.set(mode, seconds)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; idempotent (a test may stop it, and then its fixture again)."""
        self._sim.stopping.set()  # release requests held by the "hang" fault
        stop_server(self._server, self._thread, timeout)

    def __enter__(self) -> RunningHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _server(app: Flask, host: str, port: int) -> Any:
    server = create_server(app, host=host, port=port, threads=8, clear_untrusted_proxy_headers=True)
    if not hasattr(server, "effective_port"):  # a name that resolved to several addresses
        stop_server(server)
        raise ValueError(f"listen on one address (e.g. 127.0.0.1), not {host!r}")
    return server


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    store: HostStore | None = None,
    policy_path: str | None = None,
    **app_options: Any,
) -> RunningHost:
    """Start a reference host on `host:port` (0: any free port) and return once it listens."""
    store = store or HostStore()
    sim = app_options.pop("sim", None) or SimState()
    policy = app_options.pop("policy", None)
    if policy is None and policy_path:
        policy = load_policy(policy_path)
    app = create_app(store, policy, sim=sim, **app_options)
    server = _server(app, host, port)
    thread = serve_in_thread(server, "reference-host")
    url = f"http://{_url_host(server.effective_host)}:{server.effective_port}"
    return RunningHost(url, store, app, server, thread, sim)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    host: str, port: int, store_path: str = ":memory:", policy_path: str | None = None
) -> None:
    """Serve the reference host until interrupted (blocking)."""
    store = HostStore(store_path)
    app = create_app(store, load_policy(policy_path))
    server = _server(app, host, port)
    url = f"http://{_url_host(server.effective_host)}:{server.effective_port}"
    print(f"reference host on {url} (TEST signing key {keys.TEST_KEY_ID})", flush=True)
    try:
        server.run()
    finally:
        stop_server(server)  # the loop has ended (Ctrl-C): close what it left open
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Connect Box reference central host (testing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8700, help="port (0: any free port)")
    parser.add_argument("--store", default=":memory:", help="SQLite file for the host's state")
    parser.add_argument("--policy", default=None, help="policy template JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve(args.host, args.port, args.store, args.policy)


if __name__ == "__main__":
    main()
