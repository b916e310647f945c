"""Status page under load: GetRewards at a paced rate while the page and the API are fetched.

Starts the reference host and a box as separate processes (as bench/pos_overhead.py does), then
drives GetRewards at `--rate`/s from `--registers` POS connections: first alone for
`--baseline-seconds`, then for `--seconds` while one thread fetches `/` and `/api/status` in
turn, as fast as it can (or every `--page-interval` s). Prints p50/p99 of the POS round trip in
both phases, the box overhead, both status pages, and the box process's resident memory (target:
under 80 MB).

    .venv/bin/python bench/status_page.py [--rate 200] [--seconds 15] [--page-interval 0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pos_overhead import drive, percentile, rss_mb, start_host_and_box  # noqa: E402

RSS_TARGET_MB = 80.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fetch_pages(base: str, interval: float, stop: threading.Event) -> dict[str, list[float]]:
    """Fetch `/` and `/api/status` in turn until `stop`; latencies (s) by path."""
    times: dict[str, list[float]] = {"/": [], "/api/status": []}
    session = requests.Session()
    paths = list(times)
    n = 0
    while not stop.is_set():
        path = paths[n % 2]
        n += 1
        started = time.monotonic()
        reply = session.get(base + path, timeout=10)
        elapsed = time.monotonic() - started
        if reply.status_code != 200:
            raise SystemExit(f"bench: {path} answered {reply.status_code}")
        times[path].append(elapsed)
        if interval:
            stop.wait(max(0.0, interval - elapsed))
    return times


def line(label: str, values: list[float]) -> str:
    return (
        f"  {label:<22} p50 {percentile(values, 50):7.2f} ms   p99 {percentile(values, 99):7.2f} ms"
        f"   ({len(values)} requests)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="paced GetRewards/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the run")
    parser.add_argument("--registers", type=int, default=4)
    parser.add_argument(
        "--baseline-seconds", type=float, default=10.0, help="POS alone first (0: skip)"
    )
    parser.add_argument(
        "--page-interval", type=float, default=0.0, help="s between page fetches (0: flat out)"
    )
    args = parser.parse_args()

    host, box, pos_port, status_port = start_host_and_box()
    base = f"http://127.0.0.1:{status_port}"
    try:
        drive(pos_port, args.registers, 200, None)  # warm-up: connections, caches
        for path in ("/", "/api/status", "/metrics"):
            requests.get(base + path, timeout=5)

        baseline: list[float] = []
        if args.baseline_seconds:
            baseline, _ = drive(
                pos_port, args.registers, int(args.rate * args.baseline_seconds), args.rate
            )

        stop = threading.Event()
        pages: dict[str, list[float]] = {}

        def fetcher() -> None:
            pages.update(fetch_pages(base, args.page_interval, stop))

        thread = threading.Thread(target=fetcher)
        thread.start()
        total = int(args.rate * args.seconds)
        rtts, elapsed = drive(pos_port, args.registers, total, args.rate)
        stop.set()
        thread.join()
        status = requests.get(base + "/api/status", timeout=5).json()
        overhead = status["pos"]["overhead_ms"]

        pace = f"every {args.page_interval * 1000:.0f} ms" if args.page_interval else "flat out"
        print(
            f"{len(rtts)} GetRewards in {elapsed:.1f} s = {len(rtts) / elapsed:.0f}/s from "
            f"{args.registers} registers (target {args.rate:.0f}/s); status pages fetched {pace}"
        )
        if baseline:
            print(line("POS round trip alone", baseline))
        print(line("POS round trip", rtts))
        print(
            f"  {'box overhead':<22} p50 {overhead['p50']:7.2f} ms   p99 {overhead['p99']:7.2f} ms"
            "   (inside the box, both phases)"
        )
        print(line("GET /", pages["/"]))
        print(line("GET /api/status", pages["/api/status"]))
        rss, peak = rss_mb(box.pid), peak_rss_mb(box.pid)
        verdict = "under" if peak < RSS_TARGET_MB else "OVER"
        print(
            f"box resident memory: {rss:.1f} MiB now, peak {peak:.1f} MiB ({verdict} the "
            f"{RSS_TARGET_MB:.0f} MB target); machine: {os.cpu_count()} cores"
        )
    finally:
        for process in (box, host):
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
