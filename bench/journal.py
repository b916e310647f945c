#!/usr/bin/env python3
"""The durable journal: committed writes per second and read costs as the file grows.

Runs on a real file (a temporary directory unless --dir) and prints:
1. committed add_event calls per second on a fresh journal, 1 thread and 4 threads, with
   ~1.5 KB finalize bodies (every call is one fsync'd commit: WAL, synchronous=FULL);
2. the cost of one committed add_event (p50/p99 over 2,000 calls) when the journal already
   holds 0, 100,000 and 1,000,000 events (prefilled with direct SQL on the same schema, then
   measured through the public API), and the time to reopen it (includes PRAGMA quick_check);
3. due_events(500), backlog() and the other reads at the largest size, with a 50,000-event
   backlog due (draining after an outage) and deferred (host still down).
Target: at least 1,000 committed events/s, and a flat insert cost as the journal grows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.journal import Journal  # noqa: E402
from tests.host_samples import (  # noqa: E402
    EXAMPLE_TIME,
    fuel_line,
    item_line,
    pos_section,
    rewards_body,
    transaction_event,
)

DAY = 86_400.0
PREFILL_DAYS = 60  # the prefilled history spreads over this many days before now


def finalize_body(n: int) -> dict:
    """A finalize event body shaped like the host API's, about 1.5 KB as compact JSON."""
    lines = [
        item_line(1),
        item_line(
            2,
            code="049000000443",
            description="COCA COLA 20OZ",
            department="BEVERAGE",
            quantity="1",
            unit_price="2.29",
            amount="2.29",
        ),
        fuel_line(3),
    ]
    pos = pos_section(
        register_id=str(1 + n % 4),
        pos_transaction_id=str(8000 + n),
        pos_sequence_id=str(40000 + n),
    )
    return transaction_event(
        rewards_body(
            f"512555{n % 10_000:04d}",
            lines=lines,
            total="55.86",
            device_id="D-1",
            session_id=f"CB{n:012d}",
            pos=pos,
            occurred_at=EXAMPLE_TIME,
        ),
        final_total="54.86",
        receipt_note="TOBACCO LOYALTY DISCOUNT - THANK YOU FOR SHOPPING WITH US",
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * p / 100)]


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, max) seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def add(journal: Journal, n: int) -> None:
    journal.add_event(
        uuid.uuid4().hex,
        "finalize",
        finalize_body(n),
        loyalty_key=f"512555{n % 10_000:04d}",
        day="2026-11-23",
        discount=Decimal("1.00"),
    )


# ---- 1. throughput -----------------------------------------------------------------------------


def throughput(workdir: Path, calls: int) -> None:
    print(f"1. committed add_event on a fresh journal ({calls} calls per run)")
    journal = Journal(workdir / "throughput.db")
    try:
        for n in range(50):  # warm-up
            add(journal, n)
        started = time.perf_counter()
        for n in range(calls):
            add(journal, n)
        elapsed = time.perf_counter() - started
        print(f"   1 thread : {calls / elapsed:8.0f} events/s  ({ms(elapsed / calls)} each)")

        per_thread = calls // 4
        threads = [
            threading.Thread(target=lambda: [add(journal, n) for n in range(per_thread)])
            for _ in range(4)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        total = per_thread * 4
        print(f"   4 threads: {total / elapsed:8.0f} events/s  (one shared connection and lock)")
    finally:
        journal.close()


# ---- 2. insert cost as the journal grows ------------------------------------------------------


def prefill(path: Path, upto: int, pending_tail: int, now: float, chunk: int = 50_000) -> float:
    """Grow the journal to `upto` events (and as many decisions) with direct SQL on the same
    schema: big transactions, no fsync. The last `pending_tail` events stay pending, the rest
    delivered. Returns the seconds it took."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
        # The backlog of an earlier, smaller stage was drained meanwhile.
        conn.execute(
            "UPDATE events SET state = 'delivered', delivered_at = created_at + 1"
            " WHERE state = 'pending'"
        )
        (have,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        (decisions,) = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()
        first_pending = upto - pending_tail
        body = json.dumps(finalize_body(0), separators=(",", ":"))
        decision = json.dumps({"origin": "host", "policy_version": None, "rule": None})
        answer = json.dumps({"receipt_lines": ["You saved $1.00 today"]})
        span = PREFILL_DAYS * DAY

        def created(i: int) -> float:
            return now - span + span * i / upto

        for start in range(have, upto, chunk):
            stop = min(start + chunk, upto)
            events = []
            for i in range(start, stop):
                at = created(i)
                pending = i >= first_pending
                day = time.strftime("%Y-%m-%d", time.localtime(at))
                events.append(
                    (
                        uuid.uuid4().hex,
                        body,
                        None if pending else answer,
                        "pending" if pending else "delivered",
                        at,
                        at,
                        None if pending else at + 1,
                        f"512555{i % 10_000:04d}",
                        day,
                        "1.00" if i % 2 else "0",
                        i % 2,
                    )
                )
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO events (event_id, kind, body, answer, state, attempts,"
                " next_attempt_at, last_error, created_at, delivered_at, loyalty_key, day,"
                " discount, discounted, origin) VALUES (?, 'finalize', ?, ?, ?, 1, ?, '', ?, ?,"
                " ?, ?, ?, ?, 'host')",
                events,
            )
            conn.execute("COMMIT")
        for start in range(decisions, upto, chunk):
            # One GetRewards decision per transaction; one in ten offline, half discounted.
            rows = [
                (
                    f"CB{i:012d}",
                    "offline" if i % 10 == 1 else "host",
                    body,
                    decision,
                    "1.00" if i % 2 else "0",
                    i % 2,
                    f"512555{i % 10_000:04d}",
                    created(i),
                )
                for i in range(start, min(start + chunk, upto))
            ]
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO decisions (session_id, origin, body, decision, discount, discounted,"
                " loyalty_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    # The load ran without fsync: flush it now so the measured commits do not pay for it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def insert_cost(path: Path, sizes: list[int], pending_tail: int) -> None:
    print("2. one committed add_event as the journal grows (2,000 calls each)")
    now = time.time()
    for size in sizes:
        if size:
            loaded = prefill(path, size, min(pending_tail, size), now)
            print(f"   prefilled to {size:>9,} events + decisions in {loaded:5.1f} s", end="")
            started = time.perf_counter()
            journal = Journal(path)
            opened = time.perf_counter() - started
            print(f"; reopen with quick_check {opened:5.2f} s")
        else:
            journal = Journal(path)
        try:
            costs = []
            for n in range(2000):
                started = time.perf_counter()
                add(journal, n)
                costs.append(time.perf_counter() - started)
            stats = journal.stats()
        finally:
            journal.close()
        print(
            f"   at {size:>9,} events: p50 {ms(percentile(costs, 50))}  "
            f"p99 {ms(percentile(costs, 99))}  max {ms(max(costs))}  "
            f"(file {stats['size_bytes'] / 2**20:,.0f} MiB)"
        )


# ---- 3. reads at the largest size --------------------------------------------------------------


def reads(path: Path) -> None:
    journal = Journal(path)
    try:
        stats = journal.stats()
        backlog = journal.backlog()
        print(
            f"3. reads at {stats['events']:,} events / {stats['decisions']:,} decisions, "
            f"{backlog.depth:,} pending (median/max of 20 calls)"
        )
        due = journal.due_events(500)
        med, top = timed(lambda: journal.due_events(500), 20)
        print(f"   due_events(500), backlog due    : {ms(med)} / {ms(top)}  ({len(due)} returned)")
        med, top = timed(journal.backlog, 20)
        print(f"   backlog()                       : {ms(med)} / {ms(top)}")
        started = time.perf_counter()
        keys = journal.pending_keys_in_order()
        listed = time.perf_counter() - started
        started = time.perf_counter()
        journal.defer(keys, time.time() + 3600)
        deferred = time.perf_counter() - started
        print(f"   pending_keys_in_order()         : {ms(listed)}  ({len(keys):,} keys)")
        print(f"   defer() of the whole backlog    : {ms(deferred)}  (one transaction)")
        med, top = timed(lambda: journal.due_events(500), 20)
        print(f"   due_events(500), all deferred   : {ms(med)} / {ms(top)}  (0 returned)")
        med, top = timed(journal.stats, 20)
        print(f"   stats()                         : {ms(med)} / {ms(top)}")
        med, top = timed(lambda: journal.discounted_transactions("5125550042", "2026-11-23"), 20)
        print(f"   discounted_transactions()       : {ms(med)} / {ms(top)}")
        since = time.time() - DAY
        count, total = journal.offline_exposure(since)
        med, top = timed(lambda: journal.offline_exposure(since), 20)
        print(
            f"   offline_exposure(last 24 h)     : {ms(med)} / {ms(top)}  "
            f"({count:,} decisions, {total})"
        )
    finally:
        journal.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=1_000_000, help="largest prefill")
    parser.add_argument("--pending", type=int, default=50_000, help="backlog in the prefill")
    parser.add_argument("--calls", type=int, default=4000, help="add_event calls for part 1")
    parser.add_argument("--dir", type=Path, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    started = time.perf_counter()
    print(f"journal bench in {workdir} ({os.cpu_count()} cores, SQLite {sqlite3.sqlite_version})")
    print(f"event body: {len(json.dumps(finalize_body(0), separators=(',', ':')))} bytes of JSON")
    try:
        throughput(workdir, args.calls)
        sizes = sorted({0, *(s for s in (100_000, 1_000_000) if s < args.max_rows), args.max_rows})
        path = workdir / "grow.db"
        insert_cost(path, sizes, args.pending)
        reads(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
