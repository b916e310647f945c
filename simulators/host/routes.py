"""The reference host as a Flask app: authentication, the contract's error shape, and the
transaction side of host-api.md (enroll, rewards, transactions); devices' routes and the
TEST-ONLY knobs are installed from their own modules."""

from __future__ import annotations

import logging
from email.utils import formatdate
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from simulators.host import keys
from simulators.host.checks import event_problem, identify_problem, rewards_problem
from simulators.host.context import Clock, HostContext, SimState, utc_now
from simulators.host.device_routes import install_device_routes
from simulators.host.knobs import apply_fault, install_knobs
from simulators.host.policy import PolicySource, load_policy
from simulators.host.replies import answer, error, error_body, json_body, json_hash
from simulators.host.rules import (
    DEFAULT_CONFIG,
    accept_event,
    batch_result,
    device_config,
    evaluate_rewards,
    identify_customer,
)
from simulators.host.store import HostStore, Stored

log = logging.getLogger("connectbox.reference_host")

MAX_BATCH_EVENTS = 500


def create_app(
    store: HostStore,
    policy: dict[str, Any] | None = None,
    *,
    private_key: Ed25519PrivateKey | None = None,
    key_id: str = keys.TEST_KEY_ID,
    config: dict[str, Any] | None = None,
    clock: Clock = utc_now,
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
    install_device_routes(app, ctx)
    install_knobs(app, ctx)
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


def _install_contract_routes(app: Flask, ctx: HostContext) -> None:
    @app.post("/v1/enroll")
    def enroll() -> Any:
        body = json_body()
        if not isinstance(body, dict) or not isinstance(body.get("claim_code"), str):
            return error(422, "invalid_request", "claim_code is required")

        def handle() -> Stored:
            device = ctx.store.enroll(body["claim_code"].strip(), body.get("serial"))
            if device is None:
                return Stored(403, error_body("claim_code_rejected", "unknown or used claim code"))
            enrolled = {
                "device_id": device.device_id,
                "device_token": device.token,
                "site_id": device.site_id,
                "config": device_config(ctx, device),
            }
            return Stored(200, enrolled)

        key = request.headers.get("Idempotency-Key")
        return answer(ctx.store.once("enroll", key, json_hash(body), handle))

    def synchronous(record, problem_of, decide) -> Any:
        """A call the POS waits for: recorded even when faulting (tests read what the box
        sent), then the fault knob, the body check and the decision."""
        body = json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        record(g.device.device_id, body)
        fault = apply_fault(ctx)
        if fault:
            return fault
        problem = problem_of(body)
        if problem:
            return error(422, "invalid_request", problem)
        return jsonify(decide(ctx, g.device, body))

    @app.post("/v1/rewards")
    def rewards() -> Any:
        return synchronous(ctx.store.record_rewards_request, rewards_problem, evaluate_rewards)

    @app.post("/v1/customers/identify")
    def identify() -> Any:
        return synchronous(ctx.store.record_identify_request, identify_problem, identify_customer)

    @app.post("/v1/transactions")
    def transaction() -> Any:
        fault = apply_fault(ctx)
        if fault:
            return fault
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return error(400, "missing_idempotency_key", "Idempotency-Key header is required")
        body = json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        problem = event_problem(body)
        if problem:
            return error(422, "invalid_event", problem)
        return answer(accept_event(ctx, g.device, key, body))

    @app.post("/v1/transactions/batch")
    def transaction_batch() -> Any:
        fault = apply_fault(ctx)
        if fault:
            return fault
        body = json_body()
        if body is None:
            return error(400, "invalid_json", "expected an application/json body")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return error(422, "invalid_request", "events must be a list")
        if len(events) > MAX_BATCH_EVENTS:
            return error(422, "too_many_events", f"at most {MAX_BATCH_EVENTS} events per batch")
        keys = [e.get("idempotency_key") if isinstance(e, dict) else None for e in events]
        ctx.store.record_batch(g.device.device_id, keys, body.get("resend") is True)
        return jsonify({"results": [batch_result(ctx, g.device, entry) for entry in events]})
