"""The status listener: a Flask application factory with thin handlers over the Box's parts.

Served by waitress. `/healthz` answers 200 while the POS server runs (systemd, the image's boot
test and monitoring use it); `/api/status` is the machine-readable state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Flask, current_app, jsonify

if TYPE_CHECKING:
    from app.box import Box

api = Blueprint("api", __name__)


def create_app(box: Box) -> Flask:
    app = Flask(__name__)
    app.config["BOX"] = box
    app.register_blueprint(api)
    return app


def _box() -> Box:
    return current_app.config["BOX"]


@api.get("/healthz")
def healthz():
    running = _box().pos_server.running
    return jsonify({"ok": running}), 200 if running else 503


@api.get("/api/status")
def status():
    return jsonify(_box().status())
