"""The reference host's state, in SQLite: devices, events, commands, and what boxes sent.

One connection shared by waitress's worker threads (`check_same_thread=False`), serialised by a
re-entrant lock so a check-then-write (idempotency keys, claim codes, "exactly once" command
results) is atomic. WAL when the store is a file, so a demo host survives restarts.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

COMMAND_TYPES = (
    "restart",
    "rediscover",
    "sync_config",
    "upload_logs",
    "rotate_token",
    "update",
    "update_os",
    "resend_events",
)


@dataclass(frozen=True)
class Device:
    device_id: str
    token: str
    site_id: str


# The demo device and claim code every fresh store starts with (see create_app's docs).
DEMO_DEVICE = Device("D-DEMO", "demo-token", "S-1001")
DEMO_CLAIM_CODES: Mapping[str, str] = {"DEMO-0001": "S-1001"}


@dataclass(frozen=True)
class Stored:
    """An answer the host gave (or gives again for a replayed Idempotency-Key)."""

    status: int
    body: dict[str, Any]
    deliveries: int = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE, next_token TEXT UNIQUE,
    site_id TEXT NOT NULL, serial TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claim_codes (
    code TEXT PRIMARY KEY, site_id TEXT NOT NULL, used_by TEXT);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL, event_type TEXT NOT NULL, body TEXT NOT NULL,
    body_hash TEXT NOT NULL, response TEXT NOT NULL, deliveries INTEGER NOT NULL,
    loyalty_key TEXT, day TEXT, discounted INTEGER NOT NULL, received_at TEXT NOT NULL,
    UNIQUE (device_id, idempotency_key));
CREATE INDEX IF NOT EXISTS events_by_id_day ON events (loyalty_key, day, discounted);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, body_hash TEXT NOT NULL,
    status INTEGER NOT NULL, response TEXT NOT NULL, PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS heartbeats (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, received_at TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, type TEXT NOT NULL,
    args TEXT NOT NULL, created_at TEXT NOT NULL, result TEXT, result_at TEXT);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, received_at TEXT NOT NULL,
    size INTEGER NOT NULL, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS token_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, event TEXT NOT NULL,
    token TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, resend INTEGER NOT NULL,
    keys TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rewards_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, received_at TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identify_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, received_at TEXT NOT NULL,
    body TEXT NOT NULL);
"""

_TABLES = (
    "devices",
    "claim_codes",
    "events",
    "idempotency",
    "heartbeats",
    "commands",
    "logs",
    "rewards_requests",
    "identify_requests",
    "token_history",
    "batches",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class HostStore:
    def __init__(
        self,
        path: str = ":memory:",
        devices: Iterable[Device] = (DEMO_DEVICE,),
        claim_codes: Mapping[str, str] = DEMO_CLAIM_CODES,
    ) -> None:
        self.path = path
        self._seed_devices = tuple(devices)
        self._seed_codes = dict(claim_codes)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
        self._seed()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Forget everything and start again from the seeded device and claim codes."""
        with self._lock, self._db:
            for table in _TABLES:
                self._db.execute(f"DELETE FROM {table}")  # fixed names, never input
        self._seed()

    def _seed(self) -> None:
        # INSERT OR IGNORE: a file store keeps a rotated demo token and a used claim code.
        with self._lock, self._db:
            for device in self._seed_devices:
                self._db.execute(
                    "INSERT OR IGNORE INTO devices (device_id, token, site_id, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (device.device_id, device.token, device.site_id, _now()),
                )
            for code, site_id in self._seed_codes.items():
                self._db.execute(
                    "INSERT OR IGNORE INTO claim_codes (code, site_id) VALUES (?, ?)",
                    (code, site_id),
                )

    # Devices, tokens and enrollment.

    def add_device(self, device_id: str, token: str, site_id: str) -> Device:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO devices (device_id, token, site_id, created_at) VALUES (?, ?, ?, ?)",
                (device_id, token, site_id, _now()),
            )
        return Device(device_id, token, site_id)

    def add_claim_code(self, code: str, site_id: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO claim_codes (code, site_id) VALUES (?, ?)", (code, site_id)
            )

    def get_device(self, device_id: str) -> Device | None:
        with self._lock:
            row = self._db.execute(
                "SELECT device_id, token, site_id FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
        return Device(*row) if row else None

    def device_for_token(self, token: str) -> Device | None:
        """The device a bearer token belongs to; using a rotated token retires the old one."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT device_id, token, next_token, site_id FROM devices"
                " WHERE token = ? OR next_token = ?",
                (token, token),
            ).fetchone()
            if row is None:
                return None
            if row["next_token"] == token:
                self._db.execute(
                    "UPDATE devices SET token = next_token, next_token = NULL WHERE device_id = ?",
                    (row["device_id"],),
                )
                self._token_event(row["device_id"], "activated", token)
        return Device(row["device_id"], token, row["site_id"])

    def rotate_token(self, device_id: str) -> str:
        """A new token; the current one keeps working until the new one is first used."""
        token = secrets.token_urlsafe(24)
        with self._lock, self._db:
            self._db.execute(
                "UPDATE devices SET next_token = ? WHERE device_id = ?", (token, device_id)
            )
            self._token_event(device_id, "issued", token)
        return token

    def revoke_token(self, device_id: str) -> None:
        """Revoke the device's token (and any rotated one): every call gets 401 until the box
        is enrolled again. TEST knob for the "token revoked" path."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE devices SET token = ?, next_token = NULL WHERE device_id = ?",
                ("revoked-" + secrets.token_urlsafe(24), device_id),
            )
            self._token_event(device_id, "revoked", "")

    def _token_event(self, device_id: str, event: str, token: str) -> None:
        self._db.execute(
            "INSERT INTO token_history (device_id, event, token, at) VALUES (?, ?, ?, ?)",
            (device_id, event, token, _now()),
        )

    def token_history(self, device_id: str) -> list[dict[str, Any]]:
        """What happened to the device's tokens, in order: enrolled (first token), issued
        (a rotation answered), activated (the rotated token first used: the old one retired),
        revoked."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event, token, at FROM token_history WHERE device_id = ? ORDER BY seq",
                (device_id,),
            ).fetchall()
        return [{"event": r["event"], "token": r["token"], "at": r["at"]} for r in rows]

    def enroll(self, claim_code: str, serial: str | None) -> Device | None:
        """Use up `claim_code` and create its device; None for an unknown or used code."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT site_id FROM claim_codes WHERE code = ? AND used_by IS NULL", (claim_code,)
            ).fetchone()
            if row is None:
                return None
            device = Device(
                "D-" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24), row["site_id"]
            )
            self._db.execute(
                "INSERT INTO devices (device_id, token, site_id, serial, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (device.device_id, device.token, device.site_id, serial, _now()),
            )
            self._db.execute(
                "UPDATE claim_codes SET used_by = ? WHERE code = ?", (device.device_id, claim_code)
            )
            self._token_event(device.device_id, "enrolled", device.token)
        return device

    # Idempotency for the POSTs other than transaction events.

    def once(
        self, scope: str, key: str | None, body_hash: str, handle: Callable[[], Stored]
    ) -> Stored:
        """Run `handle` once per (scope, key): the same key and body get the stored answer,
        the same key with another body a 409. Without a key, `handle` simply runs.

        Only 2xx answers are stored: a refused request changed nothing, so it may be retried.
        """
        if not key:
            return handle()
        with self._lock:
            row = self._db.execute(
                "SELECT body_hash, status, response FROM idempotency WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None:
                if row["body_hash"] != body_hash:
                    return _conflict(key)
                return Stored(row["status"], json.loads(row["response"]))
            answer = handle()
            if 200 <= answer.status < 300:
                with self._db:
                    self._db.execute(
                        "INSERT INTO idempotency (scope, key, body_hash, status, response)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (scope, key, body_hash, answer.status, _dump(answer.body)),
                    )
            return answer

    # Transaction events.

    def record_event(
        self,
        device_id: str,
        key: str,
        body: dict[str, Any],
        body_hash: str,
        response: dict[str, Any],
        *,
        loyalty_key: str | None,
        day: str | None,
        discounted: bool,
    ) -> Stored:
        """Store an event once per key; a replay gets the first answer (or 409 if it differs)."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT body_hash, response, deliveries FROM events"
                " WHERE device_id = ? AND idempotency_key = ?",
                (device_id, key),
            ).fetchone()
            if row is not None:
                deliveries = row["deliveries"] + 1
                self._db.execute(
                    "UPDATE events SET deliveries = ? WHERE device_id = ? AND idempotency_key = ?",
                    (deliveries, device_id, key),
                )
                if row["body_hash"] != body_hash:
                    return _conflict(key, deliveries)
                return Stored(200, json.loads(row["response"]), deliveries)
            self._db.execute(
                "INSERT INTO events (device_id, idempotency_key, event_type, body, body_hash,"
                " response, deliveries, loyalty_key, day, discounted, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    device_id,
                    key,
                    body.get("event", ""),
                    _dump(body),
                    body_hash,
                    _dump(response),
                    loyalty_key,
                    day,
                    int(discounted),
                    _now(),
                ),
            )
        return Stored(200, response)

    def discounted_count(self, loyalty_key: str, day: str) -> int:
        """Finalized transactions with rewards applied for this loyalty ID on this day."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE loyalty_key = ? AND day = ? AND discounted = 1",
                (loyalty_key, day),
            ).fetchone()
        return int(row[0])

    def finalized_total(self, loyalty_key: str) -> Decimal:
        """What the customer paid in finalized sales with this loyalty ID (points balances)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT json_extract(body, '$.final_total') FROM events"
                " WHERE loyalty_key = ? AND event_type = 'finalize'",
                (loyalty_key,),
            ).fetchall()
        return sum((Decimal(str(r[0])) for r in rows if r[0] is not None), Decimal(0))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, idempotency_key, event_type, deliveries, received_at, body"
                " FROM events ORDER BY seq"
            ).fetchall()
        return [
            {
                "device_id": row["device_id"],
                "idempotency_key": row["idempotency_key"],
                "event": row["event_type"],
                "deliveries": row["deliveries"],
                "received_at": row["received_at"],
                "body": json.loads(row["body"]),
            }
            for row in rows
        ]

    # What boxes sent: batch calls, rewards requests, heartbeats, logs.

    def record_batch(self, device_id: str, keys: list[Any], resend: bool) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO batches (device_id, resend, keys) VALUES (?, ?, ?)",
                (device_id, int(resend), _dump(keys)),
            )

    def batches(self) -> list[dict[str, Any]]:
        """Each batch call: its device, its `resend` flag and the keys in it, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, resend, keys FROM batches ORDER BY seq"
            ).fetchall()
        return [{**r, "resend": bool(r["resend"]), "keys": json.loads(r["keys"])} for r in rows]

    def record_rewards_request(self, device_id: str, body: Any) -> None:
        self._record_body("rewards_requests", device_id, body)

    def rewards_requests(self) -> list[dict[str, Any]]:
        return self._bodies("rewards_requests")

    def record_identify_request(self, device_id: str, body: Any) -> None:
        self._record_body("identify_requests", device_id, body)

    def identify_requests(self) -> list[dict[str, Any]]:
        return self._bodies("identify_requests")

    def _record_body(self, table: str, device_id: str, body: Any) -> None:
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO {table} (device_id, received_at, body) VALUES (?, ?, ?)",
                (device_id, _now(), _dump(body)),
            )

    def _bodies(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT body FROM {table} ORDER BY seq").fetchall()
        return [json.loads(row["body"]) for row in rows]

    def record_heartbeat(self, device_id: str, body: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO heartbeats (device_id, received_at, body) VALUES (?, ?, ?)",
                (device_id, _now(), _dump(body)),
            )

    def heartbeats(self, device_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, received_at, body FROM heartbeats ORDER BY seq"
            ).fetchall()
        return [
            {"device_id": r["device_id"], "received_at": r["received_at"], **json.loads(r["body"])}
            for r in rows
            if device_id is None or r["device_id"] == device_id
        ]

    def add_log(self, device_id: str, content: bytes) -> int:
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO logs (device_id, received_at, size, content) VALUES (?, ?, ?, ?)",
                (device_id, _now(), len(content), content),
            )
        return int(cursor.lastrowid or 0)

    def logs(self, device_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, device_id, received_at, size, content FROM logs ORDER BY seq"
            ).fetchall()
        return [
            {
                "log_id": r["seq"],
                "device_id": r["device_id"],
                "received_at": r["received_at"],
                "size": r["size"],
                "content": bytes(r["content"]),
            }
            for r in rows
            if device_id is None or r["device_id"] == device_id
        ]

    # Commands.

    def queue_command(
        self,
        device_id: str,
        command_type: str,
        args: dict[str, Any] | None = None,
        command_id: str | None = None,
    ) -> str:
        if command_type not in COMMAND_TYPES:
            known = ", ".join(COMMAND_TYPES)
            raise ValueError(f"unknown command type {command_type!r}; one of {known}")
        command_id = command_id or "c-" + secrets.token_hex(4)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO commands (command_id, device_id, type, args, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (command_id, device_id, command_type, _dump(args or {}), _now()),
            )
        return command_id

    def pending_commands(self, device_id: str) -> list[dict[str, Any]]:
        """Commands without a result yet. Sent on every heartbeat until the result arrives
        (at least once): the box recognises a command it already ran by its command_id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT command_id, type, args FROM commands"
                " WHERE device_id = ? AND result IS NULL ORDER BY rowid",
                (device_id,),
            ).fetchall()
        return [
            {"command_id": r["command_id"], "type": r["type"], "args": json.loads(r["args"])}
            for r in rows
        ]

    def record_command_result(
        self, device_id: str, command_id: str, result: dict[str, Any]
    ) -> Stored:
        """Exactly once per command: 404 for an unknown command, 409 once it has a result."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT result FROM commands WHERE command_id = ? AND device_id = ?",
                (command_id, device_id),
            ).fetchone()
            if row is None:
                return _error(404, "unknown_command", f"no command {command_id!r} for this device")
            if row["result"] is not None:
                return _error(
                    409, "result_already_recorded", f"command {command_id!r} already has a result"
                )
            self._db.execute(
                "UPDATE commands SET result = ?, result_at = ? WHERE command_id = ?",
                (_dump(result), _now(), command_id),
            )
        return Stored(200, {"accepted": True})

    def commands(self, device_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT command_id, device_id, type, args, result FROM commands ORDER BY rowid"
            ).fetchall()
        return [
            {
                "command_id": r["command_id"],
                "device_id": r["device_id"],
                "type": r["type"],
                "args": json.loads(r["args"]),
                "result": json.loads(r["result"]) if r["result"] else None,
            }
            for r in rows
            if device_id is None or r["device_id"] == device_id
        ]


def _error(status: int, code: str, message: str, deliveries: int = 1) -> Stored:
    return Stored(status, {"error": {"code": code, "message": message}}, deliveries)


def _conflict(key: str, deliveries: int = 1) -> Stored:
    return _error(
        409,
        "idempotency_conflict",
        f"Idempotency-Key {key!r} was already used with a different body",
        deliveries,
    )
