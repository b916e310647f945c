"""How the reference host reads bodies and answers: the contract's error shape, stored answers
replayed, and the hashes that tell a replayed Idempotency-Key's body from a different one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, jsonify, request

from app.programs.policy import canonical_json
from simulators.host.store import Stored


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error_body(code, message)), status


def answer(stored: Stored) -> tuple[Response, int]:
    return jsonify(stored.body), stored.status


def body_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_hash(body: Any) -> str:
    # Hash of the canonical form: key order and spacing do not make a body "different", and an
    # event hashes the same sent alone or inside a batch.
    return body_hash(canonical_json(body) if isinstance(body, dict) else json.dumps(body).encode())


def json_body() -> Any:
    """The request's JSON, or None when it is missing, not JSON or not application/json."""
    return request.get_json(silent=True)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
