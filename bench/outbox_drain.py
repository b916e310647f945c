#!/usr/bin/env python3
"""Drain a week of a busy site's backlog (35,000 finalize events) into the local reference host.

Fills a fresh journal with pending events shaped like real finalizes, starts the reference host
as its own process, then times the outbox until the backlog is empty, and checks the host holds
every event once. Target (issue 3): 35,000 events drained in under 60 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from journal import finalize_body  # noqa: E402
from pos_overhead import free_port  # noqa: E402

from app.journal import Journal  # noqa: E402
from app.outbox import Outbox  # noqa: E402
from provisioning.link import HostLink  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=35_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="connectbox-drain-"))
    journal = Journal(workdir / "journal.db")
    started = time.perf_counter()
    for n in range(args.events):
        journal.add_event(f"bench-{n:08d}", "finalize", finalize_body(n), origin="offline")
    fill_s = time.perf_counter() - started
    print(
        f"filled {args.events} pending events in {fill_s:.1f} s "
        f"({args.events / fill_s:.0f} committed events/s)"
    )

    port = free_port()
    host = subprocess.Popen(
        [sys.executable, "-m", "app", "host-sim", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(url + "/_sim/events", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        link = HostLink(url, timeout_s=30)
        link.use("D-DEMO", "demo-token")
        outbox = Outbox(journal, link)
        started = time.perf_counter()
        while outbox.deliver_due():
            pass
        drain_s = time.perf_counter() - started
        backlog = journal.backlog()
        stored = len(requests.get(url + "/_sim/events", timeout=60).json()["events"])
        print(
            f"drained {args.events} events in {drain_s:.1f} s = {args.events / drain_s:.0f} "
            f"events/s through /v1/transactions/batch (500 per call); "
            f"left pending {backlog.depth}; host stored {stored}"
        )
    finally:
        host.terminate()
        host.wait(timeout=10)
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
