"""The durable journal: every POS request that matters, committed before the POS is answered.

A plain SQLite file in WAL mode with `synchronous=FULL`: when a write method returns, the row
is in the write-ahead log and fsync'd, so it survives kill -9 and power loss. It holds:

- `events`: the transaction events (finalize, cancel, reverse) the outbox delivers to the host
  at least once, in journal order (`seq`), with the event id as the `Idempotency-Key`;
  `due_events` never lets a later event overtake an earlier pending one. Delivered events are
  kept for the provider's retention period (`expire`, run by `app/retention.py`) and can be
  sent again meanwhile (`delivered_span`, `delivered_events`); undelivered ones are never
  deleted.
- `decisions`: the GetRewards decisions (host or offline), for the audit trail and the offline
  exposure limits; committed without an fsync of their own (`record_decision` says why).
- `state`: a tiny key-value table for durable facts such as the last time the host answered.
- `received`: the exact bytes of every durable POS request (FinalizeRewards, CancelTransaction,
  ...), committed before the box parses them (`keep`). `add_event(received_id=...)` settles a
  kept request in the same transaction as its event; a request still `kept` after a crash is
  settled at the next start.
- `counts`: the rows in `events` and `decisions`, kept by triggers (rows are deleted, so the
  largest rowid no longer counts them, and COUNT(*) reads the whole table).

One connection shared by the POS threads and the outbox thread, serialised by a lock. Every
write is one explicit `BEGIN IMMEDIATE ... COMMIT`, except GetRewards decisions: committed but
not fsync'd (see `record_decision`). Checkpoints run on a thread of their own (`_Checkpointer`).
A database error on write (disk full, I/O error) raises `JournalError`; the caller decides what
the POS hears.

On start an existing file gets `PRAGMA quick_check`. A file that is not a database or fails the
check is moved aside (never deleted) with its -wal/-shm files, a fresh journal is created and
`recovered_from` names the moved file.

Schema changes are versioned: `MIGRATIONS[i]` takes the file from `user_version` i to i + 1, in
one transaction. Migrations must stay additive (new tables, new columns with defaults) so that a
rolled-back software version can still use a journal a newer version migrated.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import takewhile
from pathlib import Path
from typing import Any

from provisioning.rfc3339 import format_rfc3339

log = logging.getLogger(__name__)

KINDS = ("finalize", "cancel", "reverse", "cancel_redemption", "end_period", "unreadable")
FINAL_STATES = ("conflict", "rejected")

MIGRATIONS: list[str] = [
    # v1: events and decisions.
    """
    CREATE TABLE events (
        seq             INTEGER PRIMARY KEY,
        event_id        TEXT    NOT NULL UNIQUE,
        kind            TEXT    NOT NULL,
        body            TEXT    NOT NULL,
        answer          TEXT,
        state           TEXT    NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL    NOT NULL,
        last_error      TEXT    NOT NULL DEFAULT '',
        created_at      REAL    NOT NULL,
        delivered_at    REAL,
        loyalty_key     TEXT,
        day             TEXT,
        discount        TEXT    NOT NULL DEFAULT '0',
        discounted      INTEGER NOT NULL DEFAULT 0,
        origin          TEXT    NOT NULL DEFAULT 'host'
    );
    -- The outbox's queue: only pending rows, in journal order, covering due_events/backlog.
    CREATE INDEX events_pending ON events (seq, next_attempt_at, created_at, state)
        WHERE state = 'pending';
    -- End states other than delivered (few): the backlog counts.
    CREATE INDEX events_final ON events (state) WHERE state IN ('conflict', 'rejected');
    -- Discounted transactions per loyalty ID per day (the manufacturers' daily limit).
    CREATE INDEX events_discounted ON events (loyalty_key, day, kind, discounted)
        WHERE kind = 'finalize' AND discounted = 1;

    CREATE TABLE decisions (
        id          INTEGER PRIMARY KEY,
        session_id  TEXT    NOT NULL,
        origin      TEXT    NOT NULL,
        body        TEXT    NOT NULL,
        decision    TEXT    NOT NULL,
        discount    TEXT    NOT NULL DEFAULT '0',
        discounted  INTEGER NOT NULL DEFAULT 0,
        loyalty_key TEXT,
        created_at  REAL    NOT NULL
    );
    CREATE INDEX decisions_session ON decisions (session_id);
    -- Offline exposure: discounted offline decisions by time, covering the discount.
    CREATE INDEX decisions_offline ON decisions (created_at, discount, origin, discounted)
        WHERE origin = 'offline' AND discounted = 1;
    """,
    # v2: durable facts (e.g. host_last_ok_at) that must survive a restart.
    """
    CREATE TABLE state (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # v3: the exact bytes of every durable POS request, committed before it is parsed.
    """
    CREATE TABLE received (
        id          INTEGER PRIMARY KEY,
        stem        TEXT    NOT NULL,
        dialect     TEXT    NOT NULL,
        raw         BLOB    NOT NULL,
        received_at REAL    NOT NULL,
        state       TEXT    NOT NULL DEFAULT 'kept',
        event_id    TEXT
    );
    -- Requests kept but not yet settled into an event (after a crash: recovered at start).
    CREATE INDEX received_kept ON received (id) WHERE state = 'kept';
    CREATE INDEX events_unreadable ON events (kind) WHERE kind = 'unreadable';
    """,
    # v4: retention. The indexes cover what `expire` and the resends look up; the partial ones
    # change with a delivery or a settle, not with each POS request's insert.
    """
    CREATE INDEX events_delivered ON events (created_at) WHERE delivered_at IS NOT NULL;
    CREATE INDEX received_event ON received (event_id) WHERE event_id IS NOT NULL;
    CREATE INDEX received_no_event ON received (received_at) WHERE state = 'no_event';
    CREATE TABLE counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counts (name, n) SELECT 'events', COUNT(*) FROM events;
    INSERT INTO counts (name, n) SELECT 'decisions', COUNT(*) FROM decisions;
    CREATE TRIGGER events_added AFTER INSERT ON events
        BEGIN UPDATE counts SET n = n + 1 WHERE name = 'events'; END;
    CREATE TRIGGER events_deleted AFTER DELETE ON events
        BEGIN UPDATE counts SET n = n - 1 WHERE name = 'events'; END;
    CREATE TRIGGER decisions_added AFTER INSERT ON decisions
        BEGIN UPDATE counts SET n = n + 1 WHERE name = 'decisions'; END;
    CREATE TRIGGER decisions_deleted AFTER DELETE ON decisions
        BEGIN UPDATE counts SET n = n - 1 WHERE name = 'decisions'; END;
    """,
]
SETTLED_STATES = ("derived", "duplicate", "no_event")
# Checkpoints (copying the WAL into the database file, with two fsyncs) run every
# CHECKPOINT_EVERY_S on a thread of their own, outside the journal's lock. Left to SQLite, one ran
# every few hundred commits inside the commit that crossed 1,000 WAL pages, and held every POS
# request up for tens of ms. SQLite still does it there past FALLBACK_CHECKPOINT_PAGES (the
# thread fell behind, or writes never paused), and then finds most of the WAL already copied.
CHECKPOINT_EVERY_S = 0.5
FALLBACK_CHECKPOINT_PAGES = 4000

_EVENT_COLUMNS = (
    "seq, event_id, kind, body, answer, state, attempts, next_attempt_at, last_error, "
    "created_at, delivered_at"
)
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
_SIDE_FILES = ("-wal", "-shm", "-journal")


class JournalError(Exception):
    """The journal could not be opened, read or written (disk full, I/O error, closed, ...)."""


class _Corrupt(Exception):
    """An existing file is not a usable database; it is moved aside."""


@dataclass
class Event:
    seq: int  # journal order
    event_id: str  # also the Idempotency-Key at the host
    kind: str  # "finalize" | "cancel" | "reverse"
    body: dict[str, Any]  # the /v1/transactions JSON body
    answer: dict[str, Any] | None  # what the POS was answered, for resends
    state: str  # "pending" | "delivered" | "conflict" | "rejected"
    attempts: int
    next_attempt_at: float  # unix time
    last_error: str
    created_at: float
    delivered_at: float | None


@dataclass
class Backlog:
    depth: int  # pending events
    oldest_pending_at: float | None
    conflicts: int  # events ended as conflict (409 on replay)
    rejected: int  # events the host refused for good (other 4xx, e.g. 422)


@dataclass(frozen=True)
class Kept:
    """A durable request as the POS sent it, committed and not yet settled into an event."""

    id: int
    stem: str
    dialect: str
    raw: bytes
    received_at: float


@dataclass(frozen=True)
class Expired:
    """What one `expire` call deleted."""

    events: int
    requests: int  # kept POS requests: those of the deleted events, and those that made none
    decisions: int
    more: bool  # a limit was reached: the next call may find more


def dumps(value: Any) -> str:
    """JSON as the journal stores it (money as decimal strings)."""
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money is a decimal string on the wire, never a float
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _event(row: tuple[Any, ...]) -> Event:
    return Event(
        seq=row[0],
        event_id=row[1],
        kind=row[2],
        body=json.loads(row[3]),
        answer=json.loads(row[4]) if row[4] is not None else None,
        state=row[5],
        attempts=row[6],
        next_attempt_at=row[7],
        last_error=row[8],
        created_at=row[9],
        delivered_at=row[10],
    )


def _apply_migrations(conn: sqlite3.Connection, migrations: list[str]) -> int:
    """Bring the file up to len(migrations); each step in its own transaction. Returns the
    version found. A file newer than `migrations` is left as it is (see the module doc)."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > len(migrations):
        log.warning(
            "journal schema version %d is newer than this software's %d; using it as it is",
            found,
            len(migrations),
        )
        return found
    for version in range(found, len(migrations)):
        # executescript() commits anything pending first; the script is its own transaction.
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{migrations[version]}\nPRAGMA user_version = {version + 1};\n"
                "COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if found:
            log.info("journal schema migrated to version %d", version + 1)
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _quick_check(conn: sqlite3.Connection) -> None:
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise _Corrupt("quick_check: " + "; ".join(problems))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Checkpointer:
    """Copies the WAL into the database file every CHECKPOINT_EVERY_S while it grows. PASSIVE:
    it never waits for, nor blocks, the journal's readers and writers. Its connection is opened
    for each checkpoint only (the box's file descriptors stay as they were). Ends with `close()`,
    or by itself once its journal is gone without one."""

    def __init__(self, path: Path, owner: object) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._owner = weakref.ref(owner)
        self._seen: tuple[int, int] | None = None  # the WAL's (size, mtime) at the last one
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECKPOINT_EVERY_S) and self._owner() is not None:
            wal = self._wal_state()
            if wal is not None and wal != self._seen:
                self._checkpoint()
                self._seen = self._wal_state()

    def _wal_state(self) -> tuple[int, int] | None:
        try:
            found = self._wal.stat()
        except OSError:
            return None
        return found.st_size, found.st_mtime_ns

    def _checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(str(self._path), timeout=5.0, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                conn.close()
            self._failing = False
        except sqlite3.Error as exc:  # the commits' own checkpoint takes over meanwhile
            if not self._failing:
                log.warning("journal: background checkpoint failed: %s", exc)
            self._failing = True

    def close(self) -> None:
        """Stop the thread, after a checkpoint under way; idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


class Journal:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.recovered_from: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"journal: cannot create {self.path.parent}: {exc}") from exc
        try:
            self._conn: sqlite3.Connection | None = self._open()
        except _Corrupt as corrupt:
            self.recovered_from = self._move_aside()
            log.error(
                "JOURNAL CORRUPT: %s is not a usable database (%s). It was moved aside to %s "
                "(with its -wal/-shm files) and a FRESH EMPTY journal was started. Events "
                "still pending in the old file were NOT delivered: recover them by hand.",
                self.path,
                corrupt,
                self.recovered_from,
            )
            try:
                self._conn = self._open()
            except _Corrupt as again:
                raise JournalError(f"journal: a fresh {self.path} is unusable: {again}") from again
        self._checkpointer = _Checkpointer(self.path, self)

    # ---- opening, checking, migrating ------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        existing = any(_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal"))
        checked = existing and self._check_read_only()
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot open {self.path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"journal: {self.path} refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
            # The box writes at the end and reads the last few pages: 512 KiB of page cache
            # instead of SQLite's 2 MiB keeps its memory within budget at no measured cost.
            conn.execute("PRAGMA cache_size=-512")
            if existing and not checked:
                _quick_check(conn)
            _apply_migrations(conn, MIGRATIONS)
            if not existing:
                _fsync_dir(self.path.parent)  # a new file's directory entry is durable too
        except sqlite3.DatabaseError as exc:
            conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if existing and code in _CORRUPT_CODES:
                raise _Corrupt(str(exc)) from exc
            raise JournalError(f"journal: cannot open {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_read_only(self) -> bool:
        """quick_check through a read-only connection: unlike a read-write one, closing it never
        checkpoints or deletes the -wal, so a corrupt file is moved aside exactly as it was
        found. Raises _Corrupt; False when this check could not run (the read-write open then
        checks)."""
        try:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
        except (sqlite3.Error, OSError, ValueError):
            return False
        try:
            _quick_check(conn)
            return True
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES:
                raise _Corrupt(str(exc)) from exc
            log.warning("journal: read-only check of %s failed (%s)", self.path, exc)
            return False
        finally:
            conn.close()

    def _move_aside(self) -> str:
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        target = f"{self.path}.corrupt-{stamp}"
        n = 1
        while any(Path(f"{target}{suffix}").exists() for suffix in ("", *_SIDE_FILES)):
            target = f"{self.path}.corrupt-{stamp}-{n}"
            n += 1
        try:
            for suffix in ("", *_SIDE_FILES):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    os.rename(source, f"{target}{suffix}")
        except OSError as exc:
            raise JournalError(
                f"journal: {self.path} is corrupt and could not be moved aside: {exc}"
            ) from exc
        _fsync_dir(self.path.parent)
        return target

    # ---- transactions ----------------------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal: {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One committed write transaction; any database error becomes a JournalError."""
        with self._lock:
            conn = self._require()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("journal: rollback after a failed %s failed", what)
                if isinstance(exc, sqlite3.Error):
                    raise JournalError(f"journal: {what} not committed: {exc}") from exc
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise JournalError(f"journal: {what} failed: {exc}") from exc

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        self._checkpointer.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        with suppress(sqlite3.Error):
            conn.execute("PRAGMA optimize")
        conn.close()  # the last connection checkpoints the WAL into the main file

    # ---- durable requests as received ------------------------------------------------------

    def keep(self, stem: str, dialect: str, raw: bytes) -> Kept:
        """Commit the exact bytes of a durable request before anything else is done with it."""
        now = self._clock()
        with self._write("keep") as conn:
            cursor = conn.execute(
                "INSERT INTO received (stem, dialect, raw, received_at) VALUES (?, ?, ?, ?)",
                (stem, dialect, bytes(raw), now),
            )
            kept_id = int(cursor.lastrowid or 0)
        return Kept(kept_id, stem, dialect, bytes(raw), now)

    def settle(self, received_id: int, state: str, event_id: str | None = None) -> None:
        """A kept request that needs no event of its own: a resend of a journaled event
        ("duplicate") or nothing to report ("no_event")."""
        if state not in SETTLED_STATES:
            raise ValueError(f"settled state must be one of {SETTLED_STATES}, not {state!r}")
        with self._write("settle") as conn:
            conn.execute(
                "UPDATE received SET state = ?, event_id = ? WHERE id = ?",
                (state, event_id, received_id),
            )

    def settled(self, received_id: int) -> bool:
        """Whether a kept request has settled (its event, or no event needed, is committed)."""
        with self._read("settled") as conn:
            row = conn.execute("SELECT state FROM received WHERE id = ?", (received_id,)).fetchone()
        return row is not None and row[0] != "kept"

    def unsettled(self) -> list[Kept]:
        """Kept requests that never became an event (the box stopped in between)."""
        with self._read("unsettled") as conn:
            rows = conn.execute(
                "SELECT id, stem, dialect, raw, received_at FROM received INDEXED BY"
                " received_kept WHERE state = 'kept' ORDER BY id"
            ).fetchall()
        return [Kept(row[0], row[1], row[2], bytes(row[3]), row[4]) for row in rows]

    def received_raw(self, event_id: str) -> bytes | None:
        """The bytes the POS sent for an event (the first request that made it)."""
        with self._read("received_raw") as conn:
            row = conn.execute(
                "SELECT raw FROM received WHERE event_id = ? ORDER BY id LIMIT 1", (event_id,)
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    # ---- GetRewards decisions --------------------------------------------------------------

    def record_decision(
        self,
        session_id: str,
        origin: str,
        body: dict[str, Any] | str,
        decision: dict[str, Any],
        *,
        discount: Decimal = Decimal(0),
        loyalty_key: str | None = None,
    ) -> int:
        """Commit one GetRewards decision, visible at once to `offline_exposure`, without an
        fsync (synchronous=NORMAL for this one statement).

        The row is in the WAL: it survives the box process being killed, but a power cut may
        lose the last decisions. That is harmless (the POS asks again; the finalize that counts
        is durable) and it takes the fsync, most of a GetRewards' time in the box, off the POS's
        path. The other writes stay durable: their FULL commits fsync the WAL, which is written
        in order, so they also make every decision before them durable."""
        discount = Decimal(discount)
        row = (
            session_id,
            origin,
            body if isinstance(body, str) else dumps(body),
            dumps(decision),
            str(discount),
            int(discount > 0),
            loyalty_key,
            self._clock(),
        )
        with self._lock:
            conn = self._require()
            try:
                with self._unsynced(conn):
                    # Autocommit: the one statement is its own transaction.
                    cursor = conn.execute(
                        "INSERT INTO decisions (session_id, origin, body, decision, discount,"
                        " discounted, loyalty_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
            except sqlite3.Error as exc:
                raise JournalError(f"journal: record_decision not committed: {exc}") from exc
            return int(cursor.lastrowid or 0)

    @contextmanager
    def _unsynced(self, conn: sqlite3.Connection) -> Iterator[None]:
        """synchronous=NORMAL inside (the lock held), FULL again after. Should FULL not come
        back, the journal closes: no durable write may ever commit without its fsync."""
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            try:
                conn.execute("PRAGMA synchronous=FULL")
            except BaseException:
                self._conn = None
                conn.close()
                log.error("journal: cannot restore synchronous=FULL; journal closed")
                raise

    # ---- events ----------------------------------------------------------------------------

    def add_event(
        self,
        event_id: str,
        kind: str,
        body: dict[str, Any],
        *,
        answer: dict[str, Any] | None = None,
        loyalty_key: str | None = None,
        day: str | None = None,
        discount: Decimal = Decimal(0),
        origin: str = "host",
        received_id: int | None = None,
    ) -> tuple[Event, bool]:
        """Commit a new event (True) or return the one already journaled under event_id.
        `received_id` settles the kept request it came from, in the same transaction."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        discount = Decimal(discount)
        body_text = dumps(body)
        answer_text = dumps(answer) if answer is not None else None
        now = self._clock()
        with self._write("add_event") as conn:
            row = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
            if received_id is not None:
                state = "derived" if row is None else "duplicate"
                conn.execute(
                    "UPDATE received SET state = ?, event_id = ? WHERE id = ?",
                    (state, event_id, received_id),
                )
            if row is not None:
                if row[3] != body_text or row[2] != kind:
                    log.warning(
                        "event %s journaled again with a different %s; the first one is kept",
                        event_id,
                        "kind" if row[2] != kind else "body",
                    )
                return _event(row), False
            cursor = conn.execute(
                "INSERT INTO events (event_id, kind, body, answer, state, attempts,"
                " next_attempt_at, last_error, created_at, loyalty_key, day, discount,"
                " discounted, origin) VALUES (?, ?, ?, ?, 'pending', 0, ?, '', ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    kind,
                    body_text,
                    answer_text,
                    now,
                    now,
                    loyalty_key,
                    day,
                    str(discount),
                    int(discount > 0),
                    origin,
                ),
            )
            seq = int(cursor.lastrowid or 0)
        event = Event(
            seq=seq,
            event_id=event_id,
            kind=kind,
            body=json.loads(body_text),
            answer=json.loads(answer_text) if answer_text is not None else None,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            last_error="",
            created_at=now,
            delivered_at=None,
        )
        return event, True

    def set_answer(self, event_id: str, answer: dict[str, Any]) -> None:
        """Record what the POS was answered (replaces any earlier answer). KeyError if the
        event is unknown."""
        with self._write("set_answer") as conn:
            cursor = conn.execute(
                "UPDATE events SET answer = ? WHERE event_id = ?", (dumps(answer), event_id)
            )
            if cursor.rowcount == 0:
                raise KeyError(event_id)

    def get_event(self, event_id: str) -> Event | None:
        with self._read("get_event") as conn:
            row = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
        return _event(row) if row is not None else None

    def due_events(self, limit: int, now: float | None = None) -> list[Event]:
        """Pending events whose time has come, in journal order, at most `limit`.

        Head of line: the answer stops before the first pending event that is not due yet,
        so an event held back by a retry or `defer` is never overtaken by a later one and
        the outbox delivers in journal order whatever it retries."""
        when = self._clock() if now is None else now
        with self._read("due_events") as conn:
            heads = conn.execute(
                "SELECT seq, next_attempt_at FROM events INDEXED BY events_pending"
                " WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (int(limit),),
            ).fetchall()
            due = 0
            while due < len(heads) and heads[due][1] <= when:
                due += 1
            if not due:
                return []
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events INDEXED BY events_pending"
                " WHERE state = 'pending' AND seq BETWEEN ? AND ? ORDER BY seq",
                (heads[0][0], heads[due - 1][0]),
            ).fetchall()
        return [_event(row) for row in rows]

    def defer(self, event_ids: list[str], until: float) -> None:
        """Hold pending events until `until` without counting an attempt."""
        self._update_pending(
            "defer",
            "UPDATE events SET next_attempt_at = ? WHERE event_id = ? AND state = 'pending'",
            ((until, event_id) for event_id in event_ids),
        )

    def mark_delivered(
        self, event_ids: list[str], answers: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """The host stored these events. An answer is kept only where none is recorded yet:
        what the POS was already told stays the answer for its resends."""
        answers = answers or {}
        now = self._clock()
        self._update_pending(
            "mark_delivered",
            "UPDATE events SET state = 'delivered', delivered_at = ?,"
            " answer = COALESCE(answer, ?) WHERE event_id = ? AND state = 'pending'",
            (
                (now, dumps(answers[e]) if answers.get(e) is not None else None, e)
                for e in event_ids
            ),
        )

    def mark_retry(self, event_ids: list[str], error: str, next_attempt_at: float) -> None:
        """A failed attempt: count it, keep the error, try again at `next_attempt_at`."""
        self._update_pending(
            "mark_retry",
            "UPDATE events SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
            " WHERE event_id = ? AND state = 'pending'",
            ((error, next_attempt_at, event_id) for event_id in event_ids),
        )

    def mark_final(self, event_id: str, state: str, detail: str) -> None:
        """End a pending event's delivery: "conflict" (409 on replay: the host holds the key,
        delivered_at is set) or "rejected" (refused for good). The attempt is counted."""
        if state not in FINAL_STATES:
            raise ValueError(f"final state must be one of {FINAL_STATES}, not {state!r}")
        delivered_at = self._clock() if state == "conflict" else None
        self._update_pending(
            "mark_final",
            "UPDATE events SET state = ?, attempts = attempts + 1, last_error = ?,"
            " delivered_at = ? WHERE event_id = ? AND state = 'pending'",
            [(state, detail, delivered_at, event_id)],
        )

    # ---- retention and resends: events the host holds (delivered_at set) ---------------------

    def expire(self, before: float, decisions_before: float, limit: int = 500) -> Expired:
        """Delete, in one short transaction, at most `limit` of each: events the host holds
        (delivered, or a 409 conflict) journaled before `before`, with the requests they were
        made from; requests that made no event, received before `before`; the oldest decisions
        made before `decisions_before`. Pending and rejected events, and requests not settled
        yet, are never deleted."""
        limit = int(limit)
        with self._write("expire") as conn:
            events = conn.execute(
                "SELECT seq, event_id FROM events INDEXED BY events_delivered"
                " WHERE delivered_at IS NOT NULL AND created_at < ? ORDER BY created_at LIMIT ?",
                (before, limit),
            ).fetchall()
            ids = [(event_id,) for _, event_id in events]
            derived = conn.executemany("DELETE FROM received WHERE event_id = ?", ids).rowcount
            conn.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq, _ in events])
            no_event = conn.execute(
                "DELETE FROM received WHERE id IN (SELECT id FROM received INDEXED BY"
                " received_no_event WHERE state = 'no_event' AND received_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
            # The head of the table up to the first decision still needed: never a scan of the
            # rows after it (a clock set back only delays a few deletions).
            head = conn.execute(
                "SELECT id, created_at FROM decisions ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            old = [row_id for row_id, at in takewhile(lambda r: r[1] < decisions_before, head)]
            if old:
                conn.execute("DELETE FROM decisions WHERE id <= ?", (old[-1],))
        more = limit in (len(events), no_event, len(old))
        return Expired(len(events), derived + no_event, len(old), more)

    def delivered_span(self, start: float, end: float) -> tuple[int, int, int]:
        """(count, first seq, last seq) of the events the host holds that were journaled from
        `start` to `end`, both included; (0, 0, 0) when there are none."""
        with self._read("delivered_span") as conn:
            count, first, last = conn.execute(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events INDEXED BY events_delivered"
                " WHERE delivered_at IS NOT NULL AND created_at BETWEEN ? AND ?",
                (start, end),
            ).fetchone()
        return int(count), int(first or 0), int(last or 0)

    def delivered_events(
        self, start: float, end: float, after_seq: int, last_seq: int, limit: int
    ) -> list[Event]:
        """The next `limit` of those events after `after_seq`, in journal order: a rowid range
        (NOT INDEXED: never the time index, then a sort of the whole window) that `last_seq`,
        from `delivered_span`, keeps from reading on to the end of the table."""
        with self._read("delivered_events") as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events NOT INDEXED WHERE seq > ? AND seq <= ?"
                " AND delivered_at IS NOT NULL AND created_at BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                (after_seq, last_seq, start, end, int(limit)),
            ).fetchall()
        return [_event(row) for row in rows]

    def _update_pending(self, what: str, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self._write(what) as conn:
            conn.executemany(sql, rows)

    def backlog(self) -> Backlog:
        with self._read("backlog") as conn:
            depth, oldest = conn.execute(
                "SELECT COUNT(*), MIN(created_at) FROM events INDEXED BY events_pending"
                " WHERE state = 'pending'"
            ).fetchone()
            finals = dict(
                conn.execute(
                    "SELECT state, COUNT(*) FROM events INDEXED BY events_final"
                    " WHERE state IN ('conflict', 'rejected') GROUP BY state"
                ).fetchall()
            )
        return Backlog(
            depth=depth,
            oldest_pending_at=oldest,
            conflicts=finals.get("conflict", 0),
            rejected=finals.get("rejected", 0),
        )

    def pending_keys_in_order(self) -> list[str]:
        with self._read("pending_keys_in_order") as conn:
            rows = conn.execute(
                "SELECT event_id FROM events INDEXED BY events_pending"
                " WHERE state = 'pending' ORDER BY seq"
            ).fetchall()
        return [row[0] for row in rows]

    def all_events(self, after_seq: int = 0, chunk: int = 1000) -> Iterator[Event]:
        """Every event (any state) in journal order, for audits and tests. Read in chunks so
        a million-row journal neither fills memory nor holds the lock for long."""
        while True:
            with self._read("all_events") as conn:
                rows = conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, int(chunk)),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _event(row)
            after_seq = rows[-1][0]

    def recent_events(self, limit: int = 20) -> list[Event]:
        """The newest events first (the status page's recent transactions)."""
        with self._read("recent_events") as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (int(limit),)
            ).fetchall()
        return [_event(row) for row in rows]

    # ---- counters for the offline policy ---------------------------------------------------

    def discounted_transactions(self, loyalty_key: str, day: str) -> int:
        """Finalize events with a discount for this loyalty key on this local day."""
        with self._read("discounted_transactions") as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM events INDEXED BY events_discounted"
                " WHERE loyalty_key = ? AND day = ? AND kind = 'finalize' AND discounted = 1",
                (loyalty_key, day),
            ).fetchone()
        return int(count)

    def offline_exposure(self, since: float) -> tuple[int, Decimal]:
        """Transactions discounted offline since `since`: (count, sum of discounts).

        A POS may send GetRewards several times for one transaction: each transaction (session)
        counts once, with the discount of its latest discounted decision.
        """
        with self._read("offline_exposure") as conn:
            rows = conn.execute(
                "SELECT session_id, discount FROM decisions INDEXED BY decisions_offline"
                " WHERE created_at >= ? AND origin = 'offline' AND discounted = 1 ORDER BY id",
                (since,),
            ).fetchall()
        latest = {session_id: Decimal(discount) for session_id, discount in rows}
        return len(latest), sum(latest.values(), Decimal(0))

    def granted_rewards(self, session_id: str) -> list[dict[str, Any]] | None:
        """The rewards the latest decision of a session gave the POS (GetRewardStatus), or
        None when the journal knows no decision for it."""
        with self._read("granted_rewards") as conn:
            row = conn.execute(
                "SELECT decision FROM decisions WHERE session_id = ? ORDER BY id DESC LIMIT 1",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        granted = json.loads(row[0]).get("granted")
        return granted if isinstance(granted, list) else []

    def period_counts(self, business_date: str, since: float) -> dict[str, Any]:
        """The box's own counts for one POS business date (EndPeriod), over the events
        journaled since `since`: sale events (finalize, cancel, reverse), finalized sales and
        their discount total. Training sales are not counted."""
        with self._read("period_counts") as conn:
            rows = conn.execute(
                "SELECT kind, discount FROM events WHERE created_at >= ?"
                " AND kind IN ('finalize', 'cancel', 'reverse')"
                " AND json_extract(body, '$.pos.business_date') = ?"
                " AND COALESCE(json_extract(body, '$.pos.training'), 0) = 0",
                (since, business_date),
            ).fetchall()
        finalized = [Decimal(discount) for kind, discount in rows if kind == "finalize"]
        return {
            "transactions": len(rows),
            "finalized": len(finalized),
            "discount_total": str(sum(finalized, Decimal(0)).quantize(Decimal("0.01"))),
        }

    # ---- durable facts ---------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        with self._read("get_state") as conn:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row is not None else None

    def set_state(self, key: str, value: str) -> None:
        with self._write("set_state") as conn:
            conn.execute(
                "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (key, value, self._clock()),
            )

    def stats(self) -> dict[str, Any]:
        """Counts, size on disk (WAL included) and the first event's time, for the status page
        and the heartbeat; every look-up is O(log n), whatever the journal holds."""
        with self._read("stats") as conn:
            counts = dict(conn.execute("SELECT name, n FROM counts").fetchall())
            (pending,) = conn.execute(
                "SELECT COUNT(*) FROM events INDEXED BY events_pending WHERE state = 'pending'"
            ).fetchone()
            (unreadable,) = conn.execute(
                "SELECT COUNT(*) FROM events INDEXED BY events_unreadable WHERE kind = 'unreadable'"
            ).fetchone()
            first = conn.execute("SELECT created_at FROM events ORDER BY seq LIMIT 1").fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return {
            "events": int(counts.get("events", 0)),
            "pending": int(pending),
            "decisions": int(counts.get("decisions", 0)),
            "unreadable": int(unreadable),
            "size_bytes": int(pages * page_size + _size(Path(f"{self.path}-wal"))),
            "oldest_event_at": format_rfc3339(first[0]) if first is not None else None,
        }
