#!/usr/bin/env python3
"""POS answers while peers misbehave: connect bursts, a status-page flood, slow-byte clients.

Starts the reference host and the box as separate processes (as bench/pos_overhead.py does) and
keeps one POS sending GetRewards on its connection throughout. Prints:
- how long the box takes to accept a burst of --burst connects (held, or refused over the cap);
- POS round trip p50/p99 at idle, during the connect bursts, during a status flood (--clients
  HTTP clients on `/` and `/api/status`), and during --slow slow-byte clients;
- the box's resident memory before and after, and its peak.

    .venv/bin/python bench/pos_floods.py [--burst 1000] [--max-connections 64] [--answers 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from pos_overhead import rss_mb, start_host_and_box  # noqa: E402
from status_page import peak_rss_mb  # noqa: E402

from app.pos.framing import encode_passport  # noqa: E402
from tests import floods  # noqa: E402

SLOW_FRAME = encode_passport(b"<GetLoyaltyOnlineStatusRequest><RequestHeader/>" + b" " * 200)


def start(max_connections: int) -> tuple[subprocess.Popen, subprocess.Popen, int, int]:
    """The reference host and the box as processes; returns them, the POS and status ports."""
    return start_host_and_box(f"max_connections = {max_connections}")


def pos_status(status_port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{status_port}/api/status", timeout=10).json()["pos"]


def accepted(status_port: int) -> int:
    """Connections the box has taken off its listen queue: open ones plus refused ones."""
    pos = pos_status(status_port)
    return len(pos["connections"]) + pos["refused_over_cap"]


def wait_until(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def line(label: str, rtts: list[float]) -> str:
    p50, p99 = floods.percentile_ms(rtts, 50), floods.percentile_ms(rtts, 99)
    worst = max(rtts) * 1000 if rtts else float("nan")
    return f"  {label:<28} p50 {p50:6.2f} ms  p99 {p99:7.2f} ms  max {worst:7.2f} ms ({len(rtts)})"


def bursts(probe: floods.PosProbe, pos_port: int, status_port: int, size: int, rounds: int):
    """Connect bursts one after the other; returns accept times (s) and the POS answer times."""
    mark, times = probe.mark(), []
    for _ in range(rounds):
        before = accepted(status_port)
        started = time.monotonic()
        with floods.ConnectBurst(pos_port, size):  # from a process of its own
            if not wait_until(lambda b=before: accepted(status_port) >= b + size):
                raise SystemExit(f"bench: the box did not accept {size} connects within 60 s")
            times.append(time.monotonic() - started)
        wait_until(lambda: len(pos_status(status_port)["connections"]) <= 1)
    return times, probe.rtts[mark:]


def slow_clients(pos_port: int, count: int, stop: threading.Event) -> list[threading.Thread]:
    """`count` clients trickling a frame one byte per 0.5 s, reconnecting whenever cut."""

    def trickle() -> None:
        while not stop.is_set():
            floods.slow_bytes(pos_port, SLOW_FRAME, 0.5)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000, help="connects per burst")
    parser.add_argument("--rounds", type=int, default=3, help="connect bursts")
    parser.add_argument("--max-connections", type=int, default=64, help="[pos] max_connections")
    parser.add_argument("--clients", type=int, default=32, help="status-flood HTTP clients")
    parser.add_argument("--slow", type=int, default=40, help="slow-byte clients")
    parser.add_argument("--answers", type=int, default=300, help="POS answers per phase")
    args = parser.parse_args()

    host, box, pos_port, status_port = start(args.max_connections)
    try:
        rss_before = rss_mb(box.pid)
        with floods.PosProbe(pos_port) as probe:
            probe.wait_answers(50)  # warm-up
            mark = probe.mark()
            probe.wait_answers(args.answers)
            idle = probe.rtts[mark:]

            times, during_burst = bursts(probe, pos_port, status_port, args.burst, args.rounds)

            with floods.StatusFlood(status_port, args.clients) as flood:
                mark = probe.mark()
                probe.wait_answers(args.answers)
                during_flood = probe.rtts[mark:]

            stop = threading.Event()
            slow = slow_clients(pos_port, args.slow, stop)
            wait_until(lambda: len(pos_status(status_port)["connections"]) > args.slow // 2)
            mark = probe.mark()
            # Long enough for every slow client to be cut once at the frame deadline.
            wait_until(lambda: pos_status(status_port)["cut_slow_frame"] >= args.slow)
            probe.wait_answers(args.answers)
            during_slow = probe.rtts[mark:]
            stop.set()
            if probe.errors:
                raise SystemExit(f"bench: the POS probe failed: {probe.errors}")
        pos = pos_status(status_port)
        rss_after, rss_peak = rss_mb(box.pid), peak_rss_mb(box.pid)

        print(
            f"connect burst: {args.burst} connects accepted in "
            + ", ".join(f"{t:.2f}" for t in times)
            + f" s (max_connections {args.max_connections}; refused so far "
            f"{pos['refused_over_cap']})"
        )
        print("POS GetRewards round trip (one persistent connection):")
        print(line("idle", idle))
        print(line(f"during {args.rounds} connect bursts", during_burst))
        print(line(f"during status flood ({args.clients})", during_flood))
        print(line(f"during {args.slow} slow-byte clients", during_slow))
        print(
            f"status flood: {flood.served} pages served, {flood.failed} failed; "
            f"slow-byte connections cut at the frame deadline: {pos['cut_slow_frame']}"
        )
        print(
            f"box resident memory: {rss_before:.1f} MiB before, {rss_after:.1f} MiB after, "
            f"peak {rss_peak:.1f} MiB; machine: {os.cpu_count()} cores"
        )
        for thread in slow:
            thread.join(5)
    finally:
        for process in (box, host):
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
