"""The reference host's TEST-ONLY knobs under /_sim/ (no authentication, not in the contract):
what boxes sent, queued commands, a fault to play (500s or a hang), files to download (OS update
artefacts, with HTTP Range) and a reset."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request, send_file

from simulators.host.context import HostContext
from simulators.host.replies import error, json_body
from simulators.host.store import COMMAND_TYPES

FAULT_MODES = ("ok", "error500", "hang")


def apply_fault(ctx: HostContext) -> tuple[Response, int] | None:
    """Apply the `/_sim/fault` setting: a 500, or a delay before answering normally."""
    mode, seconds = ctx.sim.current()
    if mode == "error500":
        return error(500, "simulated_fault", "the reference host is set to fail (/_sim/fault)")
    if mode == "hang":
        ctx.sim.stopping.wait(seconds)  # stop() cuts the wait short
    return None


def install_knobs(app: Flask, ctx: HostContext) -> None:
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
        body = json_body()
        if not isinstance(body, dict) or body.get("type") not in COMMAND_TYPES:
            return error(422, "invalid_request", f"type is one of {', '.join(COMMAND_TYPES)}")
        command_id = ctx.store.queue_command(
            body.get("device_id") or "D-DEMO",
            body["type"],
            body.get("args") or {},
            body.get("command_id"),
        )
        return jsonify({"command_id": command_id})

    @app.get("/_sim/files/<name>")
    def sim_file(name: str) -> Any:
        with ctx.sim.lock:
            ctx.sim.downloads.append((name, request.headers.get("Range")))
            path = ctx.sim.files.get(name)
        if path is None:
            return error(404, "not_found", f"no file {name!r} published (RunningHost.publish)")
        return send_file(path, mimetype="application/x-tar", conditional=True)

    @app.post("/_sim/fault")
    def sim_fault() -> Any:
        body = json_body()
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
