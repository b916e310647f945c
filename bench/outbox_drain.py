#!/usr/bin/env python3
"""Drain a week of a busy site's backlog (35,000 finalize events) into the local reference host.

Fills a fresh journal with pending events shaped like real finalizes, starts the reference host
as its own process, then times the outbox until the backlog is empty, and checks the host holds
every event once. Target (issue 3): 35,000 events drained in under 60 s.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.host.connectivity import HostConnectivity  # noqa: E402
from app.journal import Journal  # noqa: E402
from app.outbox import Outbox  # noqa: E402
from provisioning.api import HostClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finalize_body(n: int) -> dict:
    return {
        "device_id": "D-DEMO",
        "site_id": "S-1001",
        "session_id": f"CB{n:010d}",
        "pos": {
            "dialect": "passport",
            "vendor": "Gilbarco",
            "model_version": "12.23.03.02",
            "interface_version": "1.2",
            "store_location_id": "S-1001",
            "register_id": "1",
            "pos_transaction_id": str(n),
            "pos_sequence_id": f"01-{n}^1^",
            "outside_sale": False,
            "offline": False,
        },
        "loyalty_id": {"value": "2142840123", "entry_method": "manual", "source": "pos"},
        "customer": {"age_verified": None},
        "basket": {
            "lines": [
                {
                    "line_number": 1,
                    "kind": "item",
                    "status": "normal",
                    "code_format": "upcA",
                    "code": "028200003843",
                    "description": "MARLBORO GOLD BOX",
                    "department": "TOBACCO",
                    "quantity": "2",
                    "unit_price": "9.49",
                    "regular_price": "9.49",
                    "amount": "18.98",
                }
            ],
            "total": "18.98",
        },
        "occurred_at": "2026-11-16T14:00:00-06:00",
        "event": "finalize",
        "tenders": [{"code": "cash", "amount": "17.98"}],
        "rewards_applied": [{"reward_id": "scan-data-1", "target_line": 1, "amount": "1.00"}],
        "decision": {"origin": "offline", "policy_version": 7, "rule": "granted"},
        "points_redeemed": "0",
        "final_total": "17.98",
    }


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
        outbox = Outbox(
            journal, HostClient(url, "demo-token", "D-DEMO", timeout_s=30), HostConnectivity()
        )
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
