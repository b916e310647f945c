"""The status listener: a Flask application factory with thin handlers over the box's status
and the technician's controls (`create_app(source, controls)`; never the Box itself).

Served by waitress. Blueprints:
- `api`: `/healthz` (200 while the POS server runs; systemd, the image's boot test and monitoring
  use it), `/api/status` (the machine-readable state), `/metrics` (Prometheus text format);
- `page`: the technician's page `/` and its self-refreshing part `/live`;
- `actions`: POST `/actions/<name>`, behind the site PIN and a CSRF token.
The logic lives beside this file: verdict.py, view.py, metrics.py, auth.py, actions.py,
diagnostics.py, privacy.py, logbuffer.py (the recent log lines, installed here).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from app.status import actions as box_actions
from app.status import auth, diagnostics, logbuffer, metrics, view
from app.status.privacy import redact
from app.status.source import Status
from app.status.verdict import Context, PosWatch

log = logging.getLogger("connectbox.status")

api = Blueprint("api", __name__)
page = Blueprint("page", __name__)
actions = Blueprint("actions", __name__)

REFRESH_S = 5
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class StatusContext:
    source: Status
    controls: box_actions.BoxControls
    gate: auth.PinGate
    pos_watch: PosWatch
    logs: logbuffer.LogBuffer
    pin: str | None

    def status(self) -> dict[str, Any] | None:
        """One snapshot, with secrets and loyalty IDs made safe; None when the box cannot say."""
        try:
            status = redact(self.source.status())
        except Exception:
            log.exception("status snapshot failed")
            return None
        self.pos_watch.observe(status, time.time())
        return status


def create_app(source: Status, controls: box_actions.BoxControls) -> Flask:
    """The status application: the page, the API and the metrics read `source`, the actions
    work with `controls`."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # per process: sessions end with a restart
    app.config.update(
        SESSION_COOKIE_NAME="connectbox_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=16 * 1024,
        STATUS_REFRESH_S=REFRESH_S,
        POS_IDLE_S=None,  # None: verdict.POS_IDLE_S
    )
    configured = controls.config.status.pin
    pin = str(configured) if configured not in (None, "") else None  # TOML may give a number
    app.extensions["connectbox"] = StatusContext(
        source=source,
        controls=controls,
        gate=auth.PinGate(pin, config_file=controls.config.source),
        pos_watch=PosWatch(),
        logs=logbuffer.install(),
        pin=pin,
    )
    app.register_blueprint(api)
    app.register_blueprint(page)
    app.register_blueprint(actions)
    app.after_request(_headers)
    return app


def _ctx() -> StatusContext:
    return current_app.extensions["connectbox"]


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# ---- api --------------------------------------------------------------------------------------


@api.get("/healthz")
def healthz():
    running = _ctx().source.serving()
    return jsonify({"ok": running}), 200 if running else 503


@api.get("/api/status")
def status():
    ctx = _ctx()
    snapshot = ctx.status()
    # The page's verdict, in its words: a script need not work it out again.
    judged = view.judge(snapshot, _judging(ctx)).summary()
    if snapshot is None:
        return jsonify({"error": "status unavailable", "verdict": judged}), 503
    return jsonify({**snapshot, "verdict": judged})


@api.get("/metrics")
def prometheus():
    snapshot = _ctx().status()
    if snapshot is None:
        return Response("status unavailable\n", 503, mimetype="text/plain")
    return Response(metrics.render(snapshot), content_type=metrics.CONTENT_TYPE)


# ---- page -------------------------------------------------------------------------------------


def _judging(ctx: StatusContext) -> Context:
    idle_s = current_app.config["POS_IDLE_S"]
    extra = {"pos_idle_s": idle_s} if idle_s else {}
    return Context(time.time(), ctx.pos_watch.last_seen, **extra)


def _page_model(snapshot: dict[str, Any] | None) -> view.Page:
    return view.build_page(snapshot, request.host, _judging(_ctx()))


@page.get("/")
def index():
    ctx = _ctx()
    snapshot = ctx.status()
    return render_template(
        "status.html",
        m=_page_model(snapshot),
        address_form=view.address_form(snapshot),
        has_fixed_address=ctx.controls.fixed_address is not None,
        csrf=auth.csrf_token(),
        actions_enabled=ctx.gate.enabled,
        disabled_message=ctx.gate.disabled_message,
        locked_s=ctx.gate.locked_for(request.remote_addr or ""),
        refresh_s=current_app.config["STATUS_REFRESH_S"],
        has_network=ctx.controls.network is not None,
    )


@page.get("/live")
def live():
    return render_template("_live.html", m=_page_model(_ctx().status()))


# ---- actions ----------------------------------------------------------------------------------


def _back() -> Response:
    return redirect(url_for("page.index") + "#actions", code=303)


@actions.post("/actions/<name>")
def run_action(name: str):
    ctx = _ctx()
    known = {"diagnostics", *box_actions.ACTIONS, *box_actions.FORM_ACTIONS}
    if name not in known:
        abort(404)
    if not auth.csrf_valid(request.form.get(auth.CSRF_FIELD)):
        log.warning("technician action %s refused: missing or wrong CSRF token", name)
        abort(400)
    client = request.remote_addr or ""
    check = ctx.gate.check(client, request.form.get("pin"))
    if not check.ok:
        log.warning("technician action %s from %s refused: %s", name, client, check.message)
        flash(check.message, "error")
        return _back()
    log.info("technician action %s from %s", name, client)
    try:
        if name == "diagnostics":
            return _diagnostics(ctx)
        if name in box_actions.FORM_ACTIONS:
            result = box_actions.FORM_ACTIONS[name](ctx.controls, request.form)
        else:
            result = box_actions.ACTIONS[name](ctx.controls)
    except Exception as exc:
        log.exception("technician action %s failed", name)
        result = box_actions.Result(False, f"The action failed: {type(exc).__name__}: {exc}")
    log.info("technician action %s: %s", name, result.message)
    flash(result.message, "ok" if result.ok else "error")
    return _back()


@actions.app_errorhandler(400)
def bad_request(error):
    message = (
        "This form was out of date (the service restarted, or the page was open for a long "
        "time), so nothing was done. Reload the status page and try again."
    )
    return render_template("error.html", title="Nothing was done", message=message), 400


def _diagnostics(ctx: StatusContext) -> Response:
    snapshot = ctx.status()
    judging = _judging(ctx)
    judged = view.judge(snapshot, judging)
    config = ctx.controls.config
    hidden = [config.host.token, ctx.controls.link.client.token, ctx.pin]
    name, data = diagnostics.bundle(config, snapshot, judged, ctx.logs.lines(), hidden, judging.now)
    return Response(
        data,
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
