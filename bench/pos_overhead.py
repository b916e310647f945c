#!/usr/bin/env python3
"""GetRewards through the box against the local reference host: box overhead and throughput.

Starts the reference host and the box as separate processes (as in production: the box does
not share a GIL with the host), then drives GetRewards over real TCP from several simulated
registers, first paced at --rate requests/s, then as fast as they go. Prints:
- box overhead p50/p99: time per request inside the box that is not waiting for the host
  (measured by the box itself, from /api/status);
- POS round trip p50/p99 as the POS sees it (includes the host's own time);
- achieved requests/s, the box's CPU time per request (user + system, all its threads: less
  disturbed by a busy machine than the latencies) and the box's resident memory;
- the load average before the runs: the latencies mean little on a loaded machine.
Targets (issue 11): p99 overhead at most 3 ms at 200 requests/s, at least 500/s flat out, at
most 60 MB resident, on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simulators import pos as sim  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * p / 100)] * 1000 if ordered else float("nan")


def drive(port: int, registers: int, total: int, rate: float | None) -> tuple[list[float], float]:
    """Send `total` GetRewards from `registers` connections; paced to `rate`/s when given."""
    rtts: list[float] = []
    lock = threading.Lock()
    per_register = total // registers
    interval = registers / rate if rate else 0.0
    started = time.monotonic()

    def register(number: int) -> None:
        counter = sim.SequenceCounter()
        with sim.PosClient("127.0.0.1", port) as pos:
            next_at = time.monotonic() + number * interval / registers
            for _ in range(per_register):
                if interval:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += interval
                txn = sim.transaction(
                    str(number + 1),
                    counter.new_transaction(),
                    [sim.item_line(1, "028200003843", 2, "9.49")],
                )
                pos.send(sim.get_rewards(counter.next(), txn, "2142840123"))
                with lock:
                    rtts.append(pos.last_rtt_s)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(registers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rtts, time.monotonic() - started


def start_host_and_box(pos_extra: str = "") -> tuple[subprocess.Popen, subprocess.Popen, int, int]:
    """The reference host and the box as their own processes, on loopback, up and answering;
    `pos_extra` lines go into the box's [pos]. Returns (host, box, POS port, status port)."""
    host_port, pos_port, status_port = free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="connectbox-bench-"))
    config = workdir / "connectbox.toml"
    config.write_text(
        f'[pos]\nlisten = "127.0.0.1:{pos_port}"\n{pos_extra}\n'
        f'[host]\nurl = "http://127.0.0.1:{host_port}"\ndevice_id = "D-DEMO"\n'
        f'site_id = "S-1001"\ntoken = "demo-token"\n'
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n'
        f'[storage]\ndata_dir = "{workdir / "data"}"\n[log]\nlevel = "WARNING"\n'
        "[network]\nmdns = false\n"
    )
    cli = [sys.executable, "-m", "app"]
    root = Path(__file__).resolve().parents[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": root}
    host = subprocess.Popen(cli + ["host-sim", "--listen", f"127.0.0.1:{host_port}"], **quiet)
    # As the image runs it (image/overlay/.../connectbox.service): two malloc arenas.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    box = subprocess.Popen(cli + ["run", "--config", str(config)], env=env, **quiet)
    wait_http(f"http://127.0.0.1:{host_port}/_sim/events")
    wait_http(f"http://127.0.0.1:{status_port}/healthz")
    return host, box, pos_port, status_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="paced requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced run")
    parser.add_argument("--registers", type=int, default=4)
    args = parser.parse_args()

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average before: {load}; machine: {os.cpu_count()} cores")
    host, box, pos_port, status_port = start_host_and_box()
    try:
        rss_start = rss_mb(box.pid)
        drive(pos_port, args.registers, 200, None)  # warm-up: connections, caches

        total = int(args.rate * args.seconds)
        cpu_before = cpu_s(box.pid)
        rtts, elapsed = drive(pos_port, args.registers, total, args.rate)
        paced_cpu_ms = (cpu_s(box.pid) - cpu_before) / len(rtts) * 1000
        status = requests.get(f"http://127.0.0.1:{status_port}/api/status", timeout=5).json()
        overhead = status["pos"]["overhead_ms"]
        print(
            f"paced run: {len(rtts)} GetRewards in {elapsed:.1f} s = {len(rtts) / elapsed:.0f}/s "
            f"from {args.registers} registers (target {args.rate:.0f}/s)"
        )
        print(
            f"  box overhead   p50 {overhead['p50']:.2f} ms   p99 {overhead['p99']:.2f} ms "
            f"(last {min(10_000, len(rtts) + 200)} requests, measured inside the box)"
        )
        print(
            f"  POS round trip p50 {percentile(rtts, 50):.2f} ms   "
            f"p99 {percentile(rtts, 99):.2f} ms (includes the host's own time)"
        )
        print(f"  box CPU {paced_cpu_ms:.2f} ms per request")

        cpu_before = cpu_s(box.pid)
        rtts, elapsed = drive(pos_port, args.registers, 2000, None)
        flat_cpu_ms = (cpu_s(box.pid) - cpu_before) / len(rtts) * 1000
        print(
            f"flat out: {len(rtts)} GetRewards in {elapsed:.1f} s = {len(rtts) / elapsed:.0f}/s; "
            f"POS round trip p50 {percentile(rtts, 50):.2f} ms p99 {percentile(rtts, 99):.2f} ms; "
            f"box CPU {flat_cpu_ms:.2f} ms per request"
        )
        print(
            f"box resident memory: {rss_mb(box.pid):.1f} MiB ({rss_start:.1f} MiB at start); "
            f"load average now: {' '.join(f'{value:.2f}' for value in os.getloadavg())}"
        )
    finally:
        for process in (box, host):
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
