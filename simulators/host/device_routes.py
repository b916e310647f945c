"""The reference host's routes under /v1/devices/<id>/: config (with ETag), heartbeat and
commands, command results, log uploads and token rotation."""

from __future__ import annotations

import zlib
from typing import Any

from flask import Flask, Response, g, jsonify, request

from simulators.host.context import HostContext
from simulators.host.replies import answer, body_hash, error, json_body, json_hash
from simulators.host.rules import config_etag, device_config
from simulators.host.store import Stored

HEARTBEAT_STATUSES = ("online", "degraded", "offline")
MAX_LOG_BYTES = 5 * 1024 * 1024


def _other_device(device_id: str) -> tuple[Response, int] | None:
    if device_id != g.device.device_id:
        return error(403, "forbidden", "this token belongs to another device")
    return None


def install_device_routes(app: Flask, ctx: HostContext) -> None:
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
        body = json_body()
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
        body = json_body()
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            return error(422, "invalid_request", "ok (a boolean) is required")
        key = request.headers.get("Idempotency-Key")
        return answer(
            ctx.store.once(
                f"result:{device_id}:{command_id}",
                key,
                json_hash(body),
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
        return answer(ctx.store.once(f"logs:{device_id}", key, body_hash(data), handle))

    @app.post("/v1/devices/<device_id>/token")
    def rotate_token(device_id: str) -> Any:
        if refused := _other_device(device_id):
            return refused
        key = request.headers.get("Idempotency-Key")
        return answer(
            ctx.store.once(
                f"token:{device_id}",
                key,
                body_hash(request.get_data()),
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
