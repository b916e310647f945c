"""The durable journal, on real SQLite files: idempotency, order, delivery states, counters,
migrations, corrupt files and durability across a hard kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from app.journal import MIGRATIONS, Backlog, Journal, JournalError, _apply_migrations

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000.0  # 2026-11-18, a fixed "now" for the fake clock


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(n: int = 0, **extra: object) -> dict:
    return {
        "event": "finalize",
        "session_id": f"S{n}",
        "basket": {"lines": [{"line_number": 1, "amount": "18.98"}], "total": "18.98"},
        "rewards_applied": [{"reward_id": "SD-1", "target_line": 1, "amount": "1.00"}],
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.db"


@pytest.fixture
def journal(path: Path, clock: Clock):
    j = Journal(path, clock=clock)
    yield j
    j.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


# ---- events -----------------------------------------------------------------------------------


def test_fresh_journal_is_wal_at_the_latest_schema(journal: Journal, path: Path):
    assert journal.recovered_from is None
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert user_version(path) == len(MIGRATIONS)
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_add_event_is_idempotent_by_event_id(journal: Journal, clock: Clock):
    first, created = journal.add_event("ev-1", "finalize", body(1), answer={"receipt_lines": ["A"]})
    assert created and first.seq >= 1 and first.state == "pending" and first.attempts == 0
    assert first.created_at == first.next_attempt_at == T0 and first.delivered_at is None
    clock.now += 10
    again, created = journal.add_event("ev-1", "finalize", body(1, other="changed"))
    assert not created
    assert again == first  # the first one is kept, body, answer and times included
    assert journal.get_event("ev-1") == first
    assert journal.pending_keys_in_order() == ["ev-1"]
    assert journal.stats()["events"] == 1


def test_add_event_checks_kind_and_keeps_decimals_as_strings(journal: Journal):
    with pytest.raises(ValueError):
        journal.add_event("ev-x", "refund", body())
    event, _ = journal.add_event("ev-d", "finalize", {"amount": Decimal("1.50")})
    assert event.body == {"amount": "1.50"}
    assert journal.get_event("ev-d").body == {"amount": "1.50"}
    assert journal.get_event("nope") is None


def test_due_events_in_journal_order_with_limit_and_time(journal: Journal, clock: Clock):
    for n in range(5):
        journal.add_event(f"ev-{n}", "finalize", body(n))
        clock.now += 1
    due = journal.due_events(10)
    assert [e.event_id for e in due] == [f"ev-{n}" for n in range(5)]
    assert [e.seq for e in due] == sorted(e.seq for e in due)
    assert [e.event_id for e in journal.due_events(2)] == ["ev-0", "ev-1"]
    # Only what is due by `now`: ev-0..ev-2 were created at T0..T0+2.
    assert [e.event_id for e in journal.due_events(10, now=T0 + 2)] == ["ev-0", "ev-1", "ev-2"]

    # Head of line: an event held back holds back every later one, so nothing overtakes it.
    journal.defer(["ev-3"], until=clock.now + 100)
    assert [e.event_id for e in journal.due_events(10)] == ["ev-0", "ev-1", "ev-2"]
    journal.defer(["ev-0"], until=clock.now + 50)
    assert journal.due_events(10) == []
    deferred = journal.get_event("ev-0")
    assert deferred.next_attempt_at == clock.now + 50 and deferred.attempts == 0
    clock.now += 50
    assert [e.event_id for e in journal.due_events(10)] == ["ev-0", "ev-1", "ev-2"]
    clock.now += 50
    assert [e.event_id for e in journal.due_events(10)] == [f"ev-{n}" for n in range(5)]
    assert journal.pending_keys_in_order() == [f"ev-{n}" for n in range(5)]
    # Events that left the queue do not hold it: delivered/ended ones are skipped.
    journal.mark_delivered(["ev-1"])
    journal.mark_final("ev-2", "rejected", "422")
    assert [e.event_id for e in journal.due_events(10)] == ["ev-0", "ev-3", "ev-4"]


def test_retry_counts_attempts_and_holds_until_next_attempt(journal: Journal, clock: Clock):
    journal.add_event("ev-1", "finalize", body(1))
    journal.add_event("ev-2", "cancel", body(2))
    journal.mark_retry(["ev-1", "ev-2"], "connection refused", clock.now + 30)
    assert journal.due_events(10) == []
    event = journal.get_event("ev-1")
    assert event.attempts == 1 and event.last_error == "connection refused"
    assert event.next_attempt_at == clock.now + 30 and event.state == "pending"
    clock.now += 30
    journal.mark_retry(["ev-1"], "HTTP 503", clock.now + 60)
    event = journal.get_event("ev-1")
    assert (event.attempts, event.last_error) == (2, "HTTP 503")
    assert journal.get_event("ev-2").attempts == 1
    assert journal.due_events(10) == []  # ev-2 is due but waits behind ev-1
    clock.now += 60
    assert [e.event_id for e in journal.due_events(10)] == ["ev-1", "ev-2"]


def test_delivered_conflict_and_rejected_leave_the_queue(journal: Journal, clock: Clock):
    for n in range(5):
        journal.add_event(f"ev-{n}", "finalize", body(n))
        clock.now += 1
    assert journal.backlog() == Backlog(depth=5, oldest_pending_at=T0, conflicts=0, rejected=0)

    clock.now += 5
    journal.mark_delivered(["ev-0", "ev-1"], {"ev-0": {"receipt_lines": ["THANK YOU"]}})
    journal.mark_final("ev-2", "conflict", "409 idempotency key reused with a different body")
    journal.mark_final("ev-3", "rejected", "422 unknown site")
    with pytest.raises(ValueError):
        journal.mark_final("ev-4", "delivered", "no")

    delivered = journal.get_event("ev-0")
    assert delivered.state == "delivered" and delivered.delivered_at == clock.now
    assert delivered.answer == {"receipt_lines": ["THANK YOU"]}
    assert journal.get_event("ev-1").answer is None
    conflict = journal.get_event("ev-2")
    assert conflict.state == "conflict" and conflict.attempts == 1
    assert conflict.last_error.startswith("409") and conflict.delivered_at == clock.now
    rejected = journal.get_event("ev-3")
    assert rejected.state == "rejected" and rejected.last_error == "422 unknown site"
    assert rejected.delivered_at is None

    assert journal.backlog() == Backlog(depth=1, oldest_pending_at=T0 + 4, conflicts=1, rejected=1)
    assert journal.pending_keys_in_order() == ["ev-4"]
    assert [e.event_id for e in journal.due_events(10)] == ["ev-4"]
    # Ended events are not touched again by late retries or deliveries.
    journal.mark_retry(["ev-2", "ev-0"], "late", clock.now + 5)
    journal.mark_delivered(["ev-3"])
    assert journal.get_event("ev-2").attempts == 1 and journal.get_event("ev-0").last_error == ""
    assert journal.get_event("ev-3").state == "rejected"
    journal.mark_delivered(["ev-4"])
    assert journal.backlog() == Backlog(depth=0, oldest_pending_at=None, conflicts=1, rejected=1)
    # Delivered events stay: they are the audit trail.
    everything = list(journal.all_events(chunk=2))
    assert [e.event_id for e in everything] == [f"ev-{n}" for n in range(5)]
    assert [e.state for e in everything] == [
        "delivered", "delivered", "conflict", "rejected", "delivered",
    ]  # fmt: skip
    stats = journal.stats()
    assert stats["events"] == 5 and stats["pending"] == 0 and stats["size_bytes"] > 0


def test_answers_are_kept_for_resends(journal: Journal, path: Path, clock: Clock):
    journal.add_event("ev-1", "finalize", body(1))
    journal.set_answer("ev-1", {"receipt_lines": ["POS WAS TOLD THIS"]})
    # A late host answer does not replace what the POS was told...
    journal.mark_delivered(["ev-1"], {"ev-1": {"receipt_lines": ["LATE HOST LINES"]}})
    assert journal.get_event("ev-1").answer == {"receipt_lines": ["POS WAS TOLD THIS"]}
    # ...but fills in an answer where none was recorded.
    journal.add_event("ev-2", "cancel", body(2))
    journal.mark_delivered(["ev-2"], {"ev-2": {"receipt_lines": ["HOST"]}})
    assert journal.get_event("ev-2").answer == {"receipt_lines": ["HOST"]}
    # set_answer is explicit and replaces; the answer given with add_event is kept.
    journal.add_event("ev-3", "reverse", body(3), answer={"receipt_lines": []})
    journal.set_answer("ev-2", {"receipt_lines": ["NEW"]})
    with pytest.raises(KeyError):
        journal.set_answer("unknown", {"receipt_lines": []})
    journal.close()

    reopened = Journal(path, clock=clock)
    try:
        assert reopened.get_event("ev-1").answer == {"receipt_lines": ["POS WAS TOLD THIS"]}
        assert reopened.get_event("ev-2").answer == {"receipt_lines": ["NEW"]}
        assert reopened.get_event("ev-3").answer == {"receipt_lines": []}
        again, created = reopened.add_event("ev-1", "finalize", body(1))
        assert not created and again.answer == {"receipt_lines": ["POS WAS TOLD THIS"]}
    finally:
        reopened.close()


# ---- decisions, counters, state ---------------------------------------------------------------


def test_decisions_and_offline_counters_survive_a_restart(path: Path, clock: Clock):
    journal = Journal(path, clock=clock)
    key, other = "5125550123", "2142840123"
    day = "2026-11-18"
    journal.add_event("f1", "finalize", body(1), loyalty_key=key, day=day, discount=Decimal("1"))
    journal.add_event(
        "f2",
        "finalize",
        body(2),
        loyalty_key=key,
        day=day,
        discount=Decimal("0.50"),
        origin="offline",
    )
    journal.add_event("f3", "finalize", body(3), loyalty_key=key, day=day)  # no discount
    journal.add_event("c1", "cancel", body(4), loyalty_key=key, day=day, discount=Decimal("1"))
    journal.add_event("f4", "finalize", body(5), loyalty_key=key, day="2026-11-19", discount=1)
    journal.add_event("f5", "finalize", body(6), loyalty_key=other, day=day, discount=1)
    assert journal.discounted_transactions(key, day) == 2
    assert journal.discounted_transactions(other, day) == 1
    assert journal.discounted_transactions("nobody", day) == 0

    first = journal.record_decision(
        "S1",
        "offline",
        {"basket": {}},
        {"origin": "offline", "rule": "scan-data"},
        discount=Decimal("1.00"),
        loyalty_key=key,
    )
    clock.now += 100
    journal.record_decision("S2", "offline", {}, {"origin": "offline"}, discount=Decimal("0.50"))
    journal.record_decision("S3", "offline", {}, {"origin": "offline"})  # no discount
    journal.record_decision("S4", "host", {}, {"origin": "host"}, discount=Decimal("9.99"))
    assert first >= 1
    assert journal.offline_exposure(T0) == (2, Decimal("1.50"))
    assert journal.offline_exposure(T0 + 1) == (1, Decimal("0.50"))
    assert journal.offline_exposure(T0 + 101) == (0, Decimal(0))
    # A repeated GetRewards of the same transaction counts once, at its latest discount.
    journal.record_decision("S2", "offline", {}, {"origin": "offline"}, discount=Decimal("0.75"))
    assert journal.offline_exposure(T0) == (2, Decimal("1.75"))

    assert journal.get_state("host_last_ok_at") is None
    journal.set_state("host_last_ok_at", "1795000000.5")
    journal.set_state("host_last_ok_at", "1795000100.5")
    assert journal.stats()["decisions"] == 5
    journal.close()
    with pytest.raises(JournalError):
        journal.get_state("host_last_ok_at")

    reopened = Journal(path, clock=clock)
    try:
        assert reopened.recovered_from is None
        assert reopened.discounted_transactions(key, day) == 2
        assert reopened.offline_exposure(T0) == (2, Decimal("1.75"))
        assert reopened.get_state("host_last_ok_at") == "1795000100.5"
        stats = reopened.stats()
        assert (stats["events"], stats["pending"], stats["decisions"]) == (6, 6, 5)
    finally:
        reopened.close()


# ---- errors -----------------------------------------------------------------------------------


def test_a_full_disk_raises_journal_error_and_commits_nothing(journal: Journal):
    journal.add_event("before", "finalize", body())
    (pages,) = journal._conn.execute("PRAGMA page_count").fetchone()
    journal._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the "disk" is nearly full
    with pytest.raises(JournalError, match="full"):
        for n in range(50):
            journal.add_event(f"big-{n}", "finalize", body(n, pad="x" * 4000))
    failed = f"big-{n}"
    assert journal.get_event(failed) is None
    journal._conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    journal.add_event(failed, "finalize", body(n))
    assert journal.get_event(failed) is not None and journal.get_event("before") is not None


def test_a_closed_journal_raises(journal: Journal):
    journal.close()
    journal.close()  # twice is fine
    assert journal.closed
    with pytest.raises(JournalError, match="closed"):
        journal.add_event("ev", "finalize", body())
    with pytest.raises(JournalError):
        journal.backlog()


def test_threads_share_one_journal(journal: Journal):
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for n in range(100):
                journal.add_event(f"t{t}-{n}", "finalize", body(n))
                journal.add_event(f"t{t}-{n}", "finalize", body(n))  # resend
                journal.record_decision(f"S{t}-{n}", "host", {}, {})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    due = journal.due_events(1000)  # the outbox thread reads meanwhile
    for thread in threads:
        thread.join()
    assert not errors
    keys = journal.pending_keys_in_order()
    assert len(keys) == len(set(keys)) == 400
    assert [e.event_id for e in due] == keys[: len(due)]
    events = [journal.get_event(k) for k in keys]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    for t in range(4):  # each thread's events in its own order
        mine = [k for k in keys if k.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{n}" for n in range(100)]
    assert journal.stats()["decisions"] == 400


# ---- migrations -------------------------------------------------------------------------------


def test_migrates_a_v1_file_and_keeps_its_data(path: Path, clock: Clock):
    assert len(MIGRATIONS) >= 2
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    _apply_migrations(conn, MIGRATIONS[:1])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute(
        "INSERT INTO events (event_id, kind, body, next_attempt_at, created_at, loyalty_key,"
        " day, discount, discounted) VALUES ('old-1', 'finalize', '{\"event\":\"finalize\"}',"
        " ?, ?, 'K', '2026-11-18', '1.00', 1)",
        (T0, T0),
    )
    conn.execute(
        "INSERT INTO decisions (session_id, origin, body, decision, discount, discounted,"
        " created_at) VALUES ('S1', 'offline', '{}', '{}', '2.00', 1, ?)",
        (T0,),
    )
    conn.close()

    journal = Journal(path, clock=clock)
    try:
        assert journal.recovered_from is None
        assert user_version(path) == len(MIGRATIONS)
        old = journal.get_event("old-1")
        assert old.body == {"event": "finalize"} and old.state == "pending"
        assert journal.pending_keys_in_order() == ["old-1"]
        assert journal.discounted_transactions("K", "2026-11-18") == 1
        assert journal.offline_exposure(T0) == (1, Decimal("2.00"))
        journal.set_state("k", "v")  # the v2 table
        journal.add_event("new-1", "finalize", body())
        assert journal.pending_keys_in_order() == ["old-1", "new-1"]
        stats = journal.stats()  # v4 counts the rows it found, and those added since
        assert (stats["events"], stats["decisions"]) == (2, 1)
    finally:
        journal.close()
    reopened = Journal(path, clock=clock)  # already current: nothing to do
    try:
        assert reopened.get_state("k") == "v" and user_version(path) == len(MIGRATIONS)
    finally:
        reopened.close()


def test_a_newer_schema_is_used_as_it_is(
    path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
):
    """After a software rollback the older version keeps working on the migrated file."""
    Journal(path, clock=clock).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    journal = Journal(path, clock=clock)
    try:
        assert journal.recovered_from is None
        journal.add_event("ev-1", "finalize", body())
        assert journal.pending_keys_in_order() == ["ev-1"]
    finally:
        journal.close()
    assert user_version(path) == len(MIGRATIONS) + 1
    assert any("newer" in r.getMessage() for r in caplog.records)


def test_a_failed_migration_changes_nothing(path: Path):
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    _apply_migrations(conn, MIGRATIONS[:1])
    with pytest.raises(sqlite3.OperationalError):
        _apply_migrations(
            conn, [*MIGRATIONS[:1], "CREATE TABLE t2 (a); INSERT INTO nope VALUES (1);"]
        )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't2'").fetchone() is None
    conn.close()


# ---- corrupt files ----------------------------------------------------------------------------


def _filled_journal(path: Path, clock: Clock) -> None:
    journal = Journal(path, clock=clock)
    for n in range(300):
        journal.add_event(f"ev-{n}", "finalize", body(n, pad="p" * 1000))
    journal.close()


def _garbage_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(os.urandom(4096))


def _garbage_pages(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the header stays valid, the b-tree pages do not
        f.seek(size // 3)
        f.write(b"\xde\xad\xbe\xef" * (size // 12))


def _truncated(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _truncated_to_a_few_bytes(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(37)


@pytest.mark.parametrize(
    "damage", [_garbage_header, _garbage_pages, _truncated, _truncated_to_a_few_bytes]
)
def test_a_corrupt_file_is_moved_aside_and_a_fresh_journal_works(
    damage, path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
):
    _filled_journal(path, clock)
    damage(path)
    damaged = path.read_bytes()
    # Leftovers of a crash next to it must travel with it.
    Path(f"{path}-wal").write_bytes(b"left-over wal")
    Path(f"{path}-shm").write_bytes(b"left-over shm")

    journal = Journal(path, clock=clock)
    try:
        moved = journal.recovered_from
        assert moved == f"{path}.corrupt-20261118T110640Z"
        assert Path(moved).read_bytes() == damaged  # moved, never deleted or rewritten
        assert Path(f"{moved}-wal").read_bytes() == b"left-over wal"
        assert Path(f"{moved}-shm").exists()  # an index SQLite may rebuild; the WAL is data
        assert any(r.levelname == "ERROR" and "CORRUPT" in r.getMessage() for r in caplog.records)
        assert journal.stats()["events"] == 0
        journal.add_event("after", "finalize", body())
        assert journal.pending_keys_in_order() == ["after"]
    finally:
        journal.close()
    again = Journal(path, clock=clock)
    try:
        assert again.recovered_from is None and again.pending_keys_in_order() == ["after"]
    finally:
        again.close()


def test_a_second_corruption_in_the_same_second_gets_its_own_name(path: Path, clock: Clock):
    moved = []
    for _ in range(2):
        _filled_journal(path, clock)
        _garbage_header(path)
        journal = Journal(path, clock=clock)
        moved.append(journal.recovered_from)
        journal.close()
    assert moved[0] != moved[1] and all(Path(m).exists() for m in moved)


def test_a_file_that_cannot_be_opened_is_an_error_not_corruption(tmp_path: Path):
    target = tmp_path / "journal.db"
    target.mkdir()  # a directory where the file should be
    with pytest.raises(JournalError):
        Journal(target)
    assert target.is_dir() and not list(tmp_path.glob("*.corrupt-*"))


# ---- durability -------------------------------------------------------------------------------

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from app.journal import Journal

journal = Journal(sys.argv[2])
pad = "x" * 1400
n = 0
while True:
    event_id = f"kill-{n}"
    journal.add_event(event_id, "finalize", {"event": "finalize", "n": n, "pad": pad})
    print(event_id, flush=True)
    n += 1
"""


def _kill_mid_stream(path: Path, at_least: int = 300) -> list[str]:
    """Run a child that journals events and prints each id once add_event returned; SIGKILL
    it mid-stream (no close, no checkpoint). Returns every id it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(acknowledged) < at_least and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        acknowledged += [line.strip() for line in child.stdout.read().splitlines() if line]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        stderr = child.stderr.read()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(acknowledged) >= at_least, stderr
    assert Path(f"{path}-wal").exists()  # it really died with an open journal
    return acknowledged


def test_every_event_acknowledged_before_a_hard_kill_is_there(path: Path):
    acknowledged = _kill_mid_stream(path)
    journal = Journal(path)
    try:
        assert journal.recovered_from is None
        missing = [k for k in acknowledged if journal.get_event(k) is None]
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
        keys = journal.pending_keys_in_order()
        assert keys[: len(acknowledged)] == acknowledged  # journal order is the ack order
        assert len(keys) - len(acknowledged) <= 1  # at most the one being printed at the kill
    finally:
        journal.close()


def test_a_corrupt_file_left_by_a_crash_keeps_its_wal_untouched(path: Path, clock: Clock):
    # Enough events for an automatic checkpoint: old pages in the main file, new ones in the WAL.
    _kill_mid_stream(path, at_least=3000)
    wal = Path(f"{path}-wal").read_bytes()
    assert wal and path.stat().st_size > 1_000_000
    _garbage_pages(path)  # pages the WAL does not supersede
    journal = Journal(path, clock=clock)
    try:
        moved = journal.recovered_from
        assert moved is not None
        assert Path(f"{moved}-wal").read_bytes() == wal  # not checkpointed, not deleted
        assert journal.pending_keys_in_order() == []
    finally:
        journal.close()
