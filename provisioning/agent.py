"""Remote management: heartbeats, the host's commands (each run exactly once), log upload and
token rotation.

Heartbeats. One thread posts `POST /v1/devices/{id}/heartbeat` every `heartbeat_s` (±10 %
jitter). The body is built from `status_provider()`, which is read for these keys only (all
optional): `status` ("online" | "degraded" | "offline", default "online"), `components` (a dict,
sent as is), `outbox_depth`, `oldest_pending_s`, `config_version`, `policy_version`,
`journal_size_bytes`, `journal_events`, `journal_oldest_event_at`. The agent
adds `software_version` and `clock` itself, and, when given a `config_sync` (the box passes its
policy manager: `sync_now()` and `snapshot()`), its state under
`components["config"]` (so a refused config reaches the host) and its `config_version` when the
status has none.

Commands, exactly once. The host sends a command on every heartbeat until it has the result. The
agent keeps each command's state in `state_dir/commands.json` (atomic, fsync'd):
"started" is written BEFORE the handler runs, "done" (ok, detail) right after, and "reported"
once the host answered the result post with 200 (or 409: it already has it). A command seen
again is never run again; only its result is posted again. A command found "started" after a
restart (the process died while it ran) is not run again: it is reported ok=false, "interrupted
by a restart; not run again". `rotate_token` is the exception: its own two-step protocol makes
a re-run safe, so it is resumed.

Token rotation. `POST .../token` (Idempotency-Key derived from the command id) gives the new
token; it is saved as `pending_token` in the credentials store BEFORE it is used; one
authenticated call (`GET config`) with it follows; once the host answered 200 it becomes the
token (client, credentials, `on_token`). At start (and on any 401) a pending token is tried first.
A kill -9 at any point therefore never applies a rotation twice and never loses the working token.

401 anywhere: the host link (`provisioning/link.py`, the one authority on the host's state)
turns unauthorized and admits no call with the refused token; the agent reads that (`revoked`,
with a message for the status page) and stops calling the host until the link has another
token (`link.use(...)` after a technician re-enrolled the box, then `resume()`).

Handlers take the command's `args` and return `(ok, detail)`. They run on the agent's thread, one
at a time; a handler should return promptly (the next heartbeat waits for it). The running
command's id is `agent.running_command_id`. A handler whose outcome comes later (an update that
restarts the service) returns `DEFER` and the app calls `agent.complete(command_id, ok, detail)`
when it knows; after a restart, `on_interrupted(entry)` is asked about each command that was
running: `(ok, detail)`, `DEFER` (the app will call `complete`), or None ("interrupted").
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from provisioning.api import HostClient, HostError
from provisioning.clock import SYSTEM_CLOCK, Clock
from provisioning.link import HostLink
from provisioning.redaction import redact_log_text
from provisioning.rfc3339 import format_rfc3339, now_rfc3339
from provisioning.store import CREDENTIALS_FILE, Credentials, CredentialStore, JsonDocument
from provisioning.version import software_version as installed_version

log = logging.getLogger("connectbox.agent")

Handler = Callable[[dict[str, Any]], tuple[bool, str]]
Checkpoint = Callable[[str], None]

STATUSES = ("online", "degraded", "offline")
INTERRUPTED = "interrupted by a restart; not run again"
UNKNOWN = "unknown command"
MAX_LOG_BYTES = 5 * 1024 * 1024
HISTORY_KEEP = 100  # reported commands kept in commands.json (the host will not send them again)
REVOKED_MESSAGE = (
    "The provider's host refused this box's token (401): it was revoked or replaced. "
    "Heartbeats and remote commands are paused until the box is enrolled again "
    "(connectbox enroll --claim CODE)."
)


class _Defer:
    def __repr__(self) -> str:
        return "DEFER"


DEFER: Any = _Defer()
"""What a handler (or `on_interrupted`) returns when the outcome will come later, through
`Agent.complete(command_id, ok, detail)`: e.g. an update that restarts the service and learns
its result after the restart. The command stays "started" and is never run again."""


class _NotYet(Exception):
    """A token rotation that cannot go on now (host unreachable): resumed later, not failed."""


class Agent:
    def __init__(
        self,
        link: HostLink,
        state_dir: Path | str,
        status_provider: Callable[[], dict[str, Any]],
        handlers: dict[str, Handler],
        heartbeat_s: float = 60,
        software_version: str | None = None,
        on_token: Callable[[str], None] | None = None,
        *,
        credentials: CredentialStore | None = None,
        log_provider: Callable[[], str] | None = None,
        secrets: Callable[[], list[str]] | None = None,
        config_sync: Any = None,
        max_log_bytes: int = MAX_LOG_BYTES,
        on_interrupted: Callable[[dict[str, Any]], Any] | None = None,
        checkpoint: Checkpoint | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.link = link  # every call goes through its client, and it says whether one may
        self.client: HostClient = link.client
        self._clock = clock  # tests: a clock they advance, for an exact count of heartbeats
        self.state_dir = Path(state_dir)
        self.status_provider = status_provider
        self.handlers = dict(handlers)
        self.interval_s = float(heartbeat_s)
        self.software_version = software_version or installed_version()
        self.on_token = on_token
        self.credentials = credentials or CredentialStore(self.state_dir / CREDENTIALS_FILE)
        self.log_provider = log_provider
        self.secrets = secrets
        self.config_sync = config_sync
        self.max_log_bytes = max_log_bytes
        self.on_interrupted = on_interrupted
        self._checkpoint = checkpoint or (lambda point: None)
        self._deferred: set[str] = set()
        self.running_command_id: str | None = None
        """The id of the command whose handler is running (handlers that need it, e.g. an
        updater keeping it in its own marker, read it here)."""
        self._commands = JsonDocument(self.state_dir / "commands.json")
        self.last_heartbeat_at: float | None = None
        self.last_ok_at: float | None = None
        self.last_result: str | None = None
        self._recovered = False
        self._cycle = threading.RLock()  # one heartbeat cycle (and its commands) at a time
        self._lock = threading.Lock()  # the snapshot's fields
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._due = 0.0
        self._last_beat_mono = 0.0
        self._thread: threading.Thread | None = None

    @property
    def revoked(self) -> bool:
        """The host refused the token the agent would call with (401): the link says so."""
        return self.link.refuses(self.client.token)

    # The thread.

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="agent", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def set_interval(self, seconds: float) -> None:
        """A new heartbeat interval (e.g. the config's `heartbeat_s`), used from the next wait."""
        seconds = float(seconds)
        if seconds <= 0:
            raise ValueError("the heartbeat interval must be positive")
        with self._lock:
            changed = seconds != self.interval_s
            self.interval_s = seconds
            if changed:
                base = self._last_beat_mono or self._clock.monotonic()
                self._due = base + self._jittered(seconds)
        self._wake.set()

    def _jittered(self, seconds: float) -> float:
        return seconds * random.uniform(0.9, 1.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat_now()
            except Exception:  # a bug must not end remote management
                log.exception("heartbeat cycle failed")
            with self._lock:
                self._due = self._clock.monotonic() + self._jittered(self.interval_s)
            while not self._stop.is_set():
                with self._lock:
                    left = self._due - self._clock.monotonic()
                if left <= 0:
                    break
                self._clock.wait(self._wake, left)
                self._wake.clear()

    # One cycle.

    def heartbeat_now(self) -> dict[str, Any] | None:
        """Settle a pending token, report unreported results, post one heartbeat and run the
        commands it returns. Returns the host's answer, or None when nothing was sent."""
        with self._cycle:
            # A crash may have left a rotated token the host already switched to: tried first,
            # even while the link refuses the current one.
            if not self._settle_pending_token():
                self._note("paused: a rotated token awaits confirmation (host unreachable)")
                return None
            if self.revoked:
                self._note("paused: token revoked")
                return None
            if not self._recovered:
                self._recover()
            self._report_unreported()
            if self.revoked:
                return None
            body = self.heartbeat_body()
            path = f"/v1/devices/{self.client.device_id}/heartbeat"
            with self._lock:
                self.last_heartbeat_at = time.time()
                self._last_beat_mono = self._clock.monotonic()
            try:
                answer = self.client.post(path, body, idempotency_key=str(uuid.uuid4()))
            except HostError as exc:
                self._host_failed(exc, "heartbeat")
                return None
            with self._lock:
                self.last_ok_at = time.time()
                self.last_result = "ok"
            commands = answer.get("commands") if isinstance(answer, dict) else None
            for command in commands if isinstance(commands, list) else []:
                if self.revoked:
                    break
                self._command(command)
            return answer if isinstance(answer, dict) else {}

    def heartbeat_body(self) -> dict[str, Any]:
        try:
            status = self.status_provider() or {}
        except Exception as exc:
            log.exception("status provider failed")
            status = {"status": "degraded", "components": {"status": f"unavailable: {exc}"}}
        components = status.get("components")
        components = dict(components) if isinstance(components, dict) else {}
        config_version = status.get("config_version")
        if self.config_sync is not None:
            sync = self.config_sync.snapshot()
            components["config"] = {
                "state": sync.get("state"),
                "config_version": sync.get("config_version"),
                "refused": sync.get("refused"),
            }
            if config_version is None:
                config_version = sync.get("config_version")
        state = status.get("status")
        return {
            "status": state if state in STATUSES else ("online" if state is None else "degraded"),
            "components": components,
            "outbox_depth": _int(status.get("outbox_depth"), 0),
            "oldest_pending_s": _int(status.get("oldest_pending_s"), 0),
            "software_version": self.software_version,
            "config_version": _int(config_version, None),
            "policy_version": _int(status.get("policy_version"), None),
            "journal_size_bytes": _int(status.get("journal_size_bytes"), None),
            "journal_events": _int(status.get("journal_events"), None),
            "journal_oldest_event_at": _str(status.get("journal_oldest_event_at")),
            "clock": now_rfc3339(),
        }

    def _note(self, result: str) -> None:
        with self._lock:
            self.last_result = result

    def _host_failed(self, exc: HostError, what: str) -> None:
        if exc.unauthorized:
            self._unauthorized(what)
        else:
            log.warning("%s: %s", what, exc)
            self._note(f"{what} failed: {exc}")

    def _unauthorized(self, what: str) -> None:
        # A crash may have left a rotated token the host already switched to: try it first.
        creds = self._stored_credentials()
        if creds is not None and creds.pending_token:
            self._settle_pending_token()
            if self.client.token == creds.pending_token:
                self._note(f"{what}: switched to the rotated token")
                return
        self._note(f"{what}: 401, token revoked; paused")
        log.error("%s: %s", what, REVOKED_MESSAGE)

    def resume(self) -> None:
        """The link has new credentials (a technician re-enrolled the box): beat at once."""
        with self._cycle, self._lock:
            self.last_result = "resumed with a new token"
            self._due = 0.0
        self._wake.set()

    # Commands.

    def _load(self) -> dict[str, dict[str, Any]]:
        data = self._commands.load({})
        commands = data.get("commands") if isinstance(data, dict) else None
        return commands if isinstance(commands, dict) else {}

    def _save(self, commands: dict[str, dict[str, Any]]) -> None:
        self._commands.save({"commands": _pruned(commands)})

    def _put(self, entry: dict[str, Any]) -> None:
        commands = self._load()
        commands[entry["command_id"]] = entry
        self._save(commands)

    def _recover(self) -> None:
        """After a restart: a command that was running when the process died is not run again
        (reported as interrupted), except rotate_token, which is resumed."""
        self._recovered = True
        for entry in list(self._load().values()):
            if entry.get("state") != "started":
                continue
            if entry.get("type") == "rotate_token":
                log.warning("resuming token rotation %s after a restart", entry["command_id"])
                self._execute(entry)
                continue
            verdict = self._ask_interrupted(entry)
            if verdict is DEFER:
                self._deferred.add(entry["command_id"])
            elif verdict is not None:
                self._finish(entry, bool(verdict[0]), str(verdict[1]))
            else:
                log.warning(
                    "command %s (%s) was running when the box stopped: not run again",
                    entry["command_id"],
                    entry.get("type"),
                )
                self._finish(entry, False, INTERRUPTED)

    def _ask_interrupted(self, entry: dict[str, Any]) -> Any:
        """The app may know how an interrupted command ended (an update finishes after the
        restart): (ok, detail), DEFER, or None for "interrupted"."""
        if self.on_interrupted is None:
            return None
        try:
            verdict = self.on_interrupted(dict(entry))
        except Exception:
            log.exception("on_interrupted failed for command %s", entry["command_id"])
            return None
        if verdict is DEFER or verdict is None:
            return verdict
        if isinstance(verdict, tuple) and len(verdict) == 2:
            return verdict
        log.error("on_interrupted returned %r; reporting the command as interrupted", verdict)
        return None

    def complete(self, command_id: str, ok: bool, detail: str, command_type: str = "") -> bool:
        """The outcome of a deferred command (see DEFER): stored, then posted. A command that
        already has a result keeps it (exactly once); returns False then."""
        with self._cycle:
            entry = self._load().get(command_id)
            if entry is not None and entry.get("state") in ("done", "reported", "abandoned"):
                self._deferred.discard(command_id)
                return False
            if entry is None:  # e.g. the outcome of a command this state dir never saw
                entry = {
                    "command_id": command_id,
                    "type": command_type,
                    "args": {},
                    "received_at": now_rfc3339(),
                }
            self._deferred.discard(command_id)
            self._finish(entry, bool(ok), str(detail))
            return True

    def _command(self, command: Any) -> None:
        if not isinstance(command, dict) or not isinstance(command.get("command_id"), str):
            log.warning("ignoring a malformed command from the host: %r", command)
            return
        command_id = command["command_id"]
        entry = self._load().get(command_id)
        if entry is None:
            args = command.get("args")
            entry = {
                "command_id": command_id,
                "type": str(command.get("type", "")),
                "args": args if isinstance(args, dict) else {},
                "state": "new",
                "received_at": now_rfc3339(),
            }
            self._execute(entry)
        elif entry.get("state") == "started":
            if command_id in self._deferred:  # its outcome comes through complete()
                return
            if entry.get("type") == "rotate_token":  # deferred (host unreachable): resume it
                self._execute(entry)
            else:  # not possible after _recover; never run twice
                self._finish(entry, False, INTERRUPTED)
        else:  # done, reported or abandoned: the host still lacks the result, say it again
            self._report(entry)

    def _execute(self, entry: dict[str, Any]) -> None:
        kind = entry["type"]
        run = self._runner(kind)
        if run is None:
            self._finish(entry, False, UNKNOWN)
            return
        entry.update(state="started", started_at=now_rfc3339(), runs=entry.get("runs", 0) + 1)
        self._put(entry)  # durable BEFORE it runs
        self._checkpoint("command_started")
        self.running_command_id = entry["command_id"]
        try:
            outcome = run(entry)
            if outcome is DEFER:
                self._deferred.add(entry["command_id"])
                log.info("command %s (%s): result deferred", entry["command_id"], kind)
                return
            ok, detail = outcome
        except _NotYet as exc:  # rotate_token only: left "started", resumed on the next cycle
            log.warning("command %s (%s) not finished yet: %s", entry["command_id"], kind, exc)
            self._note(f"{kind}: {exc}")
            return
        except HostError as exc:
            if exc.unauthorized:
                self._unauthorized(kind)
            ok, detail = False, f"failed: {exc}"
        except Exception as exc:
            log.exception("command %s (%s) failed", entry["command_id"], kind)
            ok, detail = False, f"failed: {type(exc).__name__}: {exc}"
        finally:
            self.running_command_id = None
        self._finish(entry, bool(ok), str(detail))

    def _runner(self, kind: str) -> Callable[[dict[str, Any]], tuple[bool, str]] | None:
        """What runs a command of this type: the built-ins (which need the command id for
        their idempotency keys), then the app's handlers."""
        if kind == "rotate_token":
            return lambda entry: self._rotate_token(entry["command_id"])
        if kind == "upload_logs":
            return lambda entry: self._upload_logs(entry["command_id"])
        handler = self.handlers.get(kind)
        if handler is not None:
            return lambda entry: handler(entry.get("args") or {})
        if kind == "sync_config" and self.config_sync is not None:
            return lambda entry: self.config_sync.sync_now()
        return None

    def _finish(self, entry: dict[str, Any], ok: bool, detail: str) -> None:
        entry.update(state="done", ok=ok, detail=detail[:1000], finished_at=now_rfc3339())
        self._put(entry)  # durable BEFORE it is reported
        self._checkpoint("command_done")
        log.info("command %s (%s): ok=%s %s", entry["command_id"], entry["type"], ok, detail)
        self._report(entry)

    def _report(self, entry: dict[str, Any]) -> None:
        """Post the result; 200 or 409 (the host already has it) mark it reported. A retryable
        failure leaves it "done", posted again on the next cycle."""
        if self.revoked:
            return
        command_id = entry["command_id"]
        path = f"/v1/devices/{self.client.device_id}/commands/{command_id}/result"
        body = {"ok": bool(entry.get("ok")), "detail": entry.get("detail", "")}
        try:
            reply = self.client.request(
                "POST", path, json=body, idempotency_key=f"result-{command_id}"
            )
        except HostError as exc:
            log.warning("result of command %s not delivered yet: %s", command_id, exc)
            return
        status = reply.status_code
        if status in (200, 409):
            if entry.get("state") != "reported":
                entry.update(state="reported", reported_at=now_rfc3339())
                self._put(entry)
            self._checkpoint("result_reported")
        elif status == 401:
            self._unauthorized("command result")
        elif status >= 500 or status == 429:
            log.warning("result of command %s: host answered %d, will retry", command_id, status)
        else:  # 404 (the host forgot the command), 422: repeating will not help
            log.error("result of command %s refused by the host (%d)", command_id, status)
            entry.update(state="abandoned", reported_at=now_rfc3339(), host_status=status)
            self._put(entry)

    def _report_unreported(self) -> None:
        for entry in list(self._load().values()):
            if self.revoked:
                return
            if entry.get("state") == "done":
                self._report(entry)

    # Token rotation.

    def settle_token(self) -> bool:
        """Finish a rotation a crash interrupted (the pending token first), before anything else
        uses the client: the app may call this at start-up before its outbox and relay run.
        True when no rotation is left pending (False: the host could not be reached)."""
        with self._cycle:
            return self._settle_pending_token()

    def _stored_credentials(self) -> Credentials | None:
        try:
            return self.credentials.load()
        except (OSError, ValueError) as exc:  # damaged: carry on with the client's token
            log.error("cannot read the stored credentials: %s", exc)
            return None

    def _settle_pending_token(self) -> bool:
        """Finish a rotation a crash interrupted: try the pending token first. True when there
        is nothing left pending (switched, or the pending token was refused and dropped)."""
        creds = self._stored_credentials()
        if creds is None or not creds.pending_token:
            return True
        try:
            self._confirm_token(creds.pending_token)
        except HostError as exc:
            if not exc.retryable:  # the host never issued or no longer accepts it: keep ours
                log.warning("the pending rotated token was refused; keeping the current token")
                self.credentials.save(replace(creds, pending_token=None))
                return True
            log.warning("cannot confirm the pending rotated token yet: %s", exc)
            return False
        self._adopt(creds, creds.pending_token)
        return True

    def _confirm_token(self, token: str) -> None:
        """One authenticated call with `token`; HostError unless the host answered 200."""
        reply = self.client.request(
            "GET",
            f"/v1/devices/{self.client.device_id}/config",
            headers={"Authorization": f"Bearer {token}"},
        )
        if reply.status_code != 200:
            raise HostError(
                f"host answered {reply.status_code} to the new token", reply.status_code
            )

    def _adopt(self, creds: Credentials, token: str) -> None:
        self.client.token = token
        self.credentials.save(replace(creds, token=token, pending_token=None))
        self._checkpoint("token_saved")
        log.info("switched to the rotated device token")
        if self.on_token is not None:
            try:
                self.on_token(token)
            except Exception:
                log.exception("on_token callback failed")

    def _rotate_token(self, command_id: str) -> tuple[bool, str]:
        """The two-step rotation; safe to run again for the same command after any crash."""
        creds = self.credentials.load() or Credentials(self.client.device_id, self.client.token, "")
        if creds.rotation_id == command_id and not creds.pending_token:
            return True, "token rotated"  # finished earlier (e.g. before a restart)
        if creds.rotation_id == command_id and creds.pending_token:
            new = creds.pending_token  # stored before a crash: confirm it, never ask again
        else:
            try:
                reply = self.client.request(
                    "POST",
                    f"/v1/devices/{self.client.device_id}/token",
                    json={},
                    idempotency_key=f"rotate-token-{command_id}",
                )
            except HostError as exc:
                raise _NotYet(f"cannot ask for a new token: {exc}") from None
            if reply.status_code >= 500 or reply.status_code == 429:
                raise _NotYet(f"cannot ask for a new token: {_error_text(reply)}")
            if reply.status_code != 200:
                raise HostError(f"token rotation refused: {_error_text(reply)}", reply.status_code)
            try:
                answer = reply.json()
            except ValueError:
                answer = None
            new = answer.get("device_token") if isinstance(answer, dict) else None
            if not isinstance(new, str) or not new:
                return False, "the host's answer carries no device_token"
            self._checkpoint("token_received")
            if new == self.client.token:  # a replayed answer: the switch already happened
                self.credentials.save(replace(creds, rotation_id=command_id, pending_token=None))
                return True, "token rotated"
            creds = replace(creds, pending_token=new, rotation_id=command_id)
            self.credentials.save(creds)  # durable BEFORE the new token is used
            self._checkpoint("token_pending_saved")
        try:
            self._confirm_token(new)
        except HostError as exc:
            if exc.retryable:  # stays pending: settled first thing on the next cycle
                raise _NotYet(f"cannot confirm the new token yet: {exc}") from None
            self.credentials.save(replace(creds, pending_token=None))
            return False, f"the host refused the new token ({exc}); the current one is kept"
        self._checkpoint("token_confirmed")
        self._adopt(creds, new)
        return True, "token rotated"

    # Logs.

    def _upload_logs(self, command_id: str) -> tuple[bool, str]:
        if self.log_provider is None:
            return False, "no log source on this box"
        text = self.log_provider() or ""
        creds = self._stored_credentials()
        tokens = [self.client.token, creds.pending_token if creds else None]
        literal = list(self.secrets() if self.secrets else [])
        clean = redact_log_text(text, tokens=tokens, secrets=literal)
        data, kept, cut = pack_logs(clean, self.max_log_bytes)
        key = f"logs-{command_id}"
        reply = self.client.request(
            "POST",
            f"/v1/devices/{self.client.device_id}/logs",
            data=data,
            headers={"Content-Type": "application/gzip"},
            idempotency_key=key,
        )
        if reply.status_code == 401:
            raise HostError("logs: 401", 401)
        if reply.status_code != 200:
            return False, f"log upload refused: {_error_text(reply)}"
        note = f", {cut} older lines cut" if cut else ""
        return True, f"uploaded {kept} lines ({len(data)} bytes gzip{note})"

    # Status page.

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            due_in = max(0.0, self._due - self._clock.monotonic()) if self._thread else None
            revoked = self.revoked
            snap: dict[str, Any] = {
                "interval_s": self.interval_s,
                "last_heartbeat_at": _iso(self.last_heartbeat_at),
                "last_ok_at": _iso(self.last_ok_at),
                "last_result": self.last_result,
                "next_heartbeat_in_s": None if due_in is None else round(due_in, 1),
                "revoked": revoked,
                "revoked_message": REVOKED_MESSAGE if revoked else None,
            }
        try:
            creds = self.credentials.load()
            commands = list(self._load().values())
        except (OSError, ValueError) as exc:
            snap["error"] = str(exc)
            return snap
        snap["rotation_pending"] = bool(creds and creds.pending_token)
        snap["commands"] = [
            {k: c.get(k) for k in ("command_id", "type", "state", "ok", "detail", "received_at")}
            for c in commands[-20:]
        ]
        return snap


def _pruned(commands: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    finished = [k for k, c in commands.items() if c.get("state") in ("reported", "abandoned")]
    drop = set(finished[: max(0, len(finished) - HISTORY_KEEP)])
    return {k: c for k, c in commands.items() if k not in drop}


# Log packing (the redaction is provisioning/redaction.py's).


def pack_logs(text: str, max_bytes: int = MAX_LOG_BYTES) -> tuple[bytes, int, int]:
    """gzip `text`, cutting the oldest lines until it fits in `max_bytes`.
    Returns (gzip data, lines kept, lines cut)."""
    lines = text.splitlines()
    keep = len(lines)
    while True:
        cut = len(lines) - keep
        head = [f"[{cut} older lines cut to stay under {max_bytes} bytes]"] if cut else []
        body = "\n".join(head + lines[len(lines) - keep :]) + "\n"
        data = gzip.compress(body.encode("utf-8"), compresslevel=9, mtime=0)
        if len(data) <= max_bytes or keep == 0:
            return data, keep, cut
        # Shrink in proportion to the overshoot (and by at least one line).
        keep = min(keep - 1, int(keep * max_bytes / len(data) * 0.95))
        keep = max(keep, 0)


def _int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error_text(reply: Any) -> str:
    try:
        return f"{reply.status_code} {reply.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{reply.status_code} {reply.reason}"


def _iso(moment: float | None) -> str | None:
    return None if moment is None else format_rfc3339(moment)
