"""Software updates done by a separate, privileged unit, so the service never writes its code.

In the image the service cannot write the software root (`/opt/connectbox`, owned by root and
read-only in its sandbox). It hands each update to `connectbox-update@.service` instead: one
JSON request per connection to `connectbox-update.socket`; systemd starts one instance per
connection with the connection as its standard input, and the instance runs

    python -m provisioning.update_unit --root /opt/connectbox

from the slot's factory release (an app release cannot break its own update path). The
instance does what `Updater` (provisioning/updates.py) always did: download, verify, unpack,
wait for an idle moment (the status API's open POS sessions), switch, restart the service,
check its health (`/healthz`) and roll back if needed. Requests:

    {"action": "apply", "command_id": "c-1", "args": {...the update command's args}}
    {"action": "resume"}            settle an update a power cut or a crash interrupted
    {"action": "acknowledge", "command_id": "c-1"}   the service reported the result
    {"action": "start-service"}     try the service again (safe mode's `restart`)

Results go to `<root>/results/<command_id>.json` (readable by the service): `state` "running"
as soon as a request is taken, then "done" with `ok` and `detail`. The service reports a done
result through its agent (exactly once per command id) and then acknowledges it, which removes
the file. The `Updater`'s own marker stays the record of an update between switch and result.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from provisioning.store import write_json_atomic
from provisioning.updates import UpdateOutcome, Updater, http_health

log = logging.getLogger("connectbox.update_unit")

RESULTS = "results"
RESULT_MODE = 0o644  # written by root, read by the service
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# reset-failed first: a service that hit its start limit would refuse to start.
RESTART_CMD = "systemctl reset-failed connectbox; systemctl --no-block restart connectbox"
START_CMD = "systemctl reset-failed connectbox; systemctl --no-block start connectbox"
SAFE_MODE_CMD = "systemctl --no-block start connectbox-safe-mode"


class Restarted(Exception):
    """The service was restarted: `Updater` keeps its marker and `resume()` settles it."""


# -- the service's side ---------------------------------------------------------------------


class UnitUpdates:
    """The service's view: hand requests to the unit, read and acknowledge its results."""

    def __init__(self, socket_path: Path, root: Path, timeout_s: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.results = Path(root) / RESULTS
        self.marker = Path(root) / "update-in-progress.json"
        self.timeout_s = timeout_s

    def send(self, request: dict[str, Any]) -> None:
        """One request; OSError when the unit's socket cannot take it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)

    def apply(self, command_id: str, args: dict[str, Any]) -> None:
        """ValueError for a command id the unit would refuse (its result names a file)."""
        _result_path(self.results, command_id)
        self.send({"action": "apply", "command_id": command_id, "args": args})

    def acknowledge(self, command_id: str) -> None:
        self.send({"action": "acknowledge", "command_id": command_id})

    def done(self) -> list[UpdateOutcome]:
        """The results the unit has settled and the service has not acknowledged yet."""
        found = []
        for path in sorted(self.results.glob("*.json")):
            result = _read(path) or {}
            if result.get("state") == "done" and isinstance(result.get("command_id"), str):
                found.append(
                    UpdateOutcome(
                        result["command_id"],
                        str(result.get("version", "")),
                        bool(result.get("ok")),
                        str(result.get("detail", "")),
                    )
                )
        return found

    def knows(self, command_id: str) -> bool:
        """Whether the unit took this command (its result will come, or has come)."""
        return _result_path(self.results, command_id).exists()

    def unsettled(self) -> bool:
        """An update between switch and result, or a request whose instance may have died with
        the box (the unit settles both when asked to resume)."""
        states = ((_read(path) or {}).get("state") for path in self.results.glob("*.json"))
        return self.marker.exists() or "running" in states


def _result_path(results: Path, command_id: str) -> Path:
    if not SAFE_ID.fullmatch(command_id):
        raise ValueError(f"command id {command_id!r} is not a safe file name")
    return results / f"{command_id}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- the unit's side ------------------------------------------------------------------------


def idle_check(status_url: str) -> Callable[[], bool]:
    """No POS transaction open (the status API's `pos.open_sessions`); a service that does not
    answer serves no POS either."""

    def idle() -> bool:
        try:
            with urllib.request.urlopen(status_url, timeout=5) as response:
                status = json.loads(response.read())
        except (OSError, ValueError):
            return True
        return not status.get("pos", {}).get("open_sessions")

    return idle


class Unit:
    """One request of the update unit, with the `Updater` that does the work."""

    def __init__(self, updater: Updater, root: Path, start_cmd: str = START_CMD) -> None:
        self.updater = updater
        self.results = Path(root) / RESULTS
        self.start_cmd = start_cmd

    def handle(self, request: Any) -> int:
        if not isinstance(request, dict):
            log.error("not a request: %r", request)
            return 2
        action = request.get("action")
        command_id = request.get("command_id")
        if action == "resume":
            with self._one_at_a_time():  # after any request still at work
                self._fail_orphans()
                self.settle(None)
            return 0
        if action == "start-service":
            log.info("starting the service again (asked by safe mode)")
            return _shell(self.start_cmd)
        if not isinstance(command_id, str) or not SAFE_ID.fullmatch(command_id):
            log.error("%s: bad command id %r", action, command_id)
            return 2
        if action == "acknowledge":
            _result_path(self.results, command_id).unlink(missing_ok=True)
            self.updater.acknowledge(command_id)
            return 0
        if action == "apply":
            args = request.get("args") if isinstance(request.get("args"), dict) else {}
            self._store(command_id, args.get("version"), state="running")
            with self._one_at_a_time():
                try:
                    ok, detail = self.updater.apply(args, command_id)
                except Restarted:
                    self.settle(command_id)
                    return 0
            self._store(command_id, args.get("version"), state="done", ok=ok, detail=detail)
            return 0
        log.error("unknown action %r", action)
        return 2

    def settle(self, command_id: str | None) -> None:
        """Settle the marker's update (each restart `Updater` asks for ends a round), store its
        outcome as a result and let the marker go."""
        while True:
            try:
                outcome = self.updater.resume()
                break
            except Restarted:
                continue
            except TimeoutError:  # another instance holds the update: it settles it
                log.info("another update request is settling the update")
                return
        if outcome is None:
            if command_id is not None:
                self._store(command_id, None, state="done", ok=False, detail="update lost")
            return
        if outcome.command_id and SAFE_ID.fullmatch(outcome.command_id):
            self._store(
                outcome.command_id,
                outcome.version,
                state="done",
                ok=outcome.ok,
                detail=outcome.detail,
            )
        self.updater.acknowledge(outcome.command_id)

    def _fail_orphans(self) -> None:
        """Requests left "running" by an instance that died (a power cut while downloading):
        nothing was switched, so they failed; one the marker names is settled by `settle`."""
        marker = self.updater.pending() or {}
        for path in self.results.glob("*.json"):
            result = _read(path) or {}
            command_id = result.get("command_id")
            if result.get("state") != "running" or command_id == marker.get("command_id"):
                continue
            detail = "interrupted (the box stopped) before the switch; nothing changed"
            self._store(
                str(command_id), result.get("version"), state="done", ok=False, detail=detail
            )

    @contextlib.contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
        """Update commands in turn (one instance each): the next waits for the one before,
        instead of being refused as busy by the Updater's own lock."""
        self.results.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(self.results, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _store(self, command_id: str, version: Any, **result: Any) -> None:
        path = _result_path(self.results, command_id)
        self.results.mkdir(mode=0o755, exist_ok=True)  # the service reads it
        body = {"command_id": command_id, "version": version, "at": time.time(), **result}
        write_json_atomic(path, body, mode=RESULT_MODE)
        if result.get("state") == "done":
            log.info("update command %s: ok=%s %s", command_id, result["ok"], result["detail"])


def trusted_keys(config: Path) -> dict[str, str]:
    """`[policy] trusted_keys` of the box's configuration, read here and never taken from the
    service: a request cannot bring its own key."""
    try:
        with open(config, "rb") as handle:
            keys = tomllib.load(handle).get("policy", {}).get("trusted_keys", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.error("cannot read the trusted keys from %s: %s", config, exc)
        return {}
    return {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}


def _shell(command: str) -> int:
    return subprocess.run(["/bin/sh", "-c", command], timeout=120).returncode


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.update_unit",
        description="One request of the privileged update unit, read from standard input.",
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--health-url", default="http://127.0.0.1:8080/healthz")
    parser.add_argument("--status-url", default="http://127.0.0.1:8080/api/status")
    parser.add_argument("--restart-cmd", default=RESTART_CMD)
    parser.add_argument("--deadline", type=float, default=90.0)
    parser.add_argument(
        "--guard",
        action="store_true",
        help="no request: the service cannot start (its OnFailure=); roll back the update that "
        "did it, or else start safe mode",
    )
    parser.add_argument("--config", type=Path, default=Path("/etc/connectbox/connectbox.toml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    restarts: list[float] = []

    def restart() -> None:
        restarts.append(time.time())
        if _shell(opts.restart_cmd) != 0:
            log.error("restart command failed: %s", opts.restart_cmd)
        raise Restarted()

    updater = Updater(
        opts.root,
        trusted_keys(opts.config),
        restart,
        http_health(opts.health_url),
        idle_check(opts.status_url),
        health_deadline_s=opts.deadline,
    )
    unit = Unit(updater, opts.root)
    if opts.guard:
        unit.settle(None)
        if restarts:  # rolled back: the previous release is starting
            return 0
        log.warning("the service cannot start and no update explains it: starting safe mode")
        return _shell(SAFE_MODE_CMD)
    try:
        request = json.loads(sys.stdin.buffer.read(64 * 1024) or b"null")
    except ValueError as exc:
        log.error("unreadable request: %s", exc)
        return 2
    return unit.handle(request)


if __name__ == "__main__":
    sys.exit(main())
