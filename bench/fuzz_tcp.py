#!/usr/bin/env python3
"""Black-box fuzzing over TCP: a real `connectbox run` process against the reference host.

Both run as their own processes on 127.0.0.1 only. Worker threads open connection after
connection and send mutated input: valid framing around mutated XML (real captured and
simulated requests with hostile values, both Passport CRC forms and EPS), mutated framing
(bad signatures, CRCs, lengths, truncations, garbage), sent in random chunks; then they
half-close and read what the box answers until it hangs up. Every answer frame must be XML a
POS can read. Every --check-every inputs a fresh POS connection sends a valid GetRewards, which
must be answered correctly within --deadline seconds, and the box must still be running.

Prints inputs, rate, findings (box died, health check failed or late, unreadable answers,
tracebacks in the box's log, handler errors counted by the box, connections not closed after
EOF) and the box's RSS, threads and open files before and after. Stops by itself after
--seconds or --count inputs.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pos_overhead import wait_http  # noqa: E402

from app.pos.framing import (  # noqa: E402
    ACTION_HEARTBEAT,
    EpsFramer,
    FramingError,
    PassportFramer,
    crc32,
    encode_eps,
    encode_passport,
)
from app.pos.xmlcodec import XmlError, parse_xml  # noqa: E402
from simulators import pos as sim  # noqa: E402
from tests.boxproc import rss_mib, start_box  # noqa: E402
from tests.fuzz.corpus import (  # noqa: E402
    HOSTILE_NUMBERS,
    XML_ENCODINGS,
    request_seeds,
    text_spans,
)
from tests.ports import free_port  # noqa: E402

PHONE = "2142840123"


# ---- inputs ---------------------------------------------------------------------------------


class Mutator:
    """Mutated requests and framings from the real messages; deterministic for one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seeds = request_seeds()
        self.values = [n.encode() for n in HOSTILE_NUMBERS] + [
            b"x" * 5000,
            escape("\u00e9\U0001f600" * 300).encode(),
            b"&amp;&lt;",
            b"",
            b"\xff\xfe",
            b"<![CDATA[1e999999]]>",
        ]

    def xml(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(10)
            spans = text_spans(bytes(data))
            if op <= 4 and spans:
                a, b = rng.choice(spans)
                data[a:b] = rng.choice(self.values)
            elif op == 5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 6 and data:
                at = rng.randrange(len(data))
                del data[at : at + rng.randrange(1, 80)]
            elif op == 7 and data:
                at = rng.randrange(len(data))
                data[at:at] = data[at : at + rng.randrange(1, 300)] * rng.randrange(1, 30)
            elif op == 8:
                encoding = rng.choice(XML_ENCODINGS).encode()
                data[0:0] = b'<?xml version="1.0" encoding="' + encoding + b'"?>'
            elif op == 9 and spans:  # deep nesting where a value was
                a, b = rng.choice(spans)
                depth = rng.choice((10, 1000, 30000))
                data[a:b] = b"<a>" * depth + b"1" + b"</a>" * depth
        return bytes(data)

    def connection(self) -> tuple[str, list[bytes], bytes]:
        """(dialect of the answers, the frames/inputs, the bytes to send) for one connection."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.65:  # valid framing around mutated XML
            dialect = rng.choice(("passport", "passport", "eps"))
            flip = rng.random() < 0.5
            inputs = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                payload = self.xml() if rng.random() < 0.9 else rng.choice(self.seeds)
                if dialect == "eps":
                    inputs.append(encode_eps(payload))
                else:
                    inputs.append(encode_passport(payload, complemented=flip))
                    if rng.random() < 0.1:
                        inputs.append(encode_passport(b"", ACTION_HEARTBEAT, flip))
            return dialect, inputs, b"".join(inputs)
        if roll < 0.93:  # mutated framing around a real request
            payload = rng.choice(self.seeds)
            eps = rng.random() < 0.35
            frame = bytearray(encode_eps(payload) if eps else encode_passport(payload))
            op = rng.randrange(8)
            if op == 0:  # any header byte
                at = rng.randrange(4 if eps else 28)
                frame[at] = rng.randrange(256)
            elif op == 1 and not eps:  # a length that lies, CRCs made right again
                size = len(payload)
                length = rng.choice((0, 1, size - 1, size + 1, 2**20 + 1, 2**32 - 1))
                frame = bytearray(_passport_header(1, length, payload)) + frame[28:]
            elif op == 2 and not eps:  # an action code nobody documented
                action = rng.choice((0, 3, 255, 2**32 - 1))
                frame = bytearray(_passport_header(action, len(payload), payload)) + frame[28:]
            elif op == 3:  # truncated
                del frame[rng.randrange(len(frame)) :]
            elif op == 4:  # a payload byte
                at = rng.randrange(4 if eps else 28, len(frame))
                frame[at] = rng.randrange(256)
            elif op == 5 and eps:  # a lying EPS length
                frame[:4] = rng.choice((0, 1, len(payload) + 5, 0x00FFFFFF)).to_bytes(4, "big")
            elif op == 6:  # garbage after a good frame
                frame += rng.randbytes(rng.randrange(1, 64))
            else:  # two frames, the second cut
                frame += frame[: rng.randrange(len(frame))]
            dialect = "eps" if eps else "passport"
            return dialect, [bytes(frame)], bytes(frame)
        garbage = rng.choice(
            [
                rng.randbytes(rng.randrange(1, 2000)),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(64),
                b"\x00" * rng.randrange(1, 5000),
                b"POSLOYALTY\x00\x00" + rng.randbytes(40),
            ]
        )
        return "passport", [garbage], garbage


def _passport_header(action: int, length: int, payload: bytes) -> bytes:
    head = struct.pack("<12sIII", b"POSLOYALTY\x00\x00", action, length, crc32(payload))
    return head + struct.pack("<I", crc32(head))


# ---- the run --------------------------------------------------------------------------------


class Findings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, tuple[int, bytes, str]] = {}  # kind -> seen, input, detail

    def add(self, kind: str, data: bytes = b"", detail: str = "") -> None:
        with self.lock:
            seen, example, first = self.kinds.get(kind, (0, data, detail))
            if seen == 0:
                print(f"FINDING {kind}: {detail} {data[:160]!r}", flush=True)
            if data and len(data) < len(example):
                example = data
            self.kinds[kind] = (seen + 1, example, first)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inputs = 0
        self.connections = 0
        self.answers = 0
        self.refused = 0

    def add(self, inputs: int, answers: int) -> None:
        with self.lock:
            self.inputs += inputs
            self.connections += 1
            self.answers += answers


def fuzz_connection(port: int, mutator: Mutator, lock: threading.Lock, stats, findings) -> None:
    with lock:  # the mutator's random stream is shared: one draw at a time
        dialect, inputs, data = mutator.connection()
        cuts = sorted(mutator.rng.sample(range(len(data) + 1), min(len(data), 3)))
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        with stats.lock:
            stats.refused += 1
        return
    answers = 0
    with sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            points = [0, *cuts, len(data)]
            for a, b in zip(points, points[1:], strict=False):
                if b > a:
                    sock.sendall(data[a:b])
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the box hung up on what it had seen: fine
        framer = PassportFramer() if dialect == "passport" else EpsFramer()
        deadline = time.monotonic() + 15
        try:
            while True:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                for frame in framer.feed(chunk):
                    answers += 1
                    try:
                        parse_xml(frame.payload)
                    except XmlError as exc:
                        findings.add(f"unreadable answer ({str(exc)[:40]})", data)
        except TimeoutError:
            findings.add("connection not closed 15 s after the POS's EOF", data)
        except FramingError as exc:
            findings.add(f"badly framed answer ({exc})", data)
        except OSError:
            pass  # reset by the box: a close
    stats.add(len(inputs), answers)


def health_check(port: int, counter: sim.SequenceCounter, dialect: str, deadline: float) -> str:
    """'' when a fresh POS gets a correct GetRewards answer in time; else what went wrong."""
    txn = sim.transaction(
        "7", counter.new_transaction(), [sim.item_line(1, "028200003843", 2, "9.49")]
    )
    started = time.monotonic()
    try:
        with sim.PosClient("127.0.0.1", port, dialect=dialect, timeout=deadline + 5) as pos:
            response = pos.send(sim.get_rewards(counter.next("07"), txn, PHONE))
    except (sim.PosClientError, OSError) as exc:
        return f"health check failed: {exc}"
    took = time.monotonic() - started
    if took > deadline:
        return f"health check late: {took:.2f} s"
    if not response.add_rewards:
        return "health check: no reward for the tobacco sale"
    return ""


def proc_facts(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    return {"rss": rss_mib(pid), "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def box_counters(status_port: int) -> dict[str, float]:
    status = requests.get(f"http://127.0.0.1:{status_port}/api/status", timeout=5).json()
    counters = dict(status.get("counters", {}))
    pos = status.get("pos", {})
    for key in ("closed_bad_input", "cut_slow_frame", "refused_over_cap"):
        if key in pos:
            counters[f"pos.{key}"] = pos[key]
    return counters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="stop after this long")
    parser.add_argument("--count", type=int, default=10_000_000, help="stop after these inputs")
    parser.add_argument("--workers", type=int, default=8, help="connections at once")
    parser.add_argument("--check-every", type=int, default=500, help="inputs between checks")
    parser.add_argument("--deadline", type=float, default=2.0, help="health check answer, s")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", action="store_true", help="keep the box's data directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="connectbox-fuzz-tcp-"))
    host_port, pos_port, status_port = free_port(), free_port(), free_port()
    config = workdir / "connectbox.toml"
    config.write_text(
        f'[pos]\nlisten = "127.0.0.1:{pos_port}"\n'
        f'[host]\nurl = "http://127.0.0.1:{host_port}"\ndevice_id = "D-DEMO"\n'
        f'site_id = "S-1001"\ntoken = "demo-token"\ndeadline_ms = 1500\n'
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n'
        f'[storage]\ndata_dir = "{workdir / "data"}"\n[log]\nlevel = "WARNING"\n'
        "[network]\nmdns = false\n"
    )
    cli = [sys.executable, "-m", "app"]
    host_log = (workdir / "host.log").open("wb")
    box_log_path = workdir / "box.log"
    box_log = box_log_path.open("wb")
    host = subprocess.Popen(
        [*cli, "host-sim", "--listen", f"127.0.0.1:{host_port}"], stdout=host_log, stderr=host_log
    )
    box = None
    try:
        wait_http(f"http://127.0.0.1:{host_port}/_sim/events")
        box = start_box(config, status_port, stdout=box_log, stderr=box_log)
        counter = sim.SequenceCounter()
        for dialect in ("passport", "eps"):  # warm-up: host connection, sessions, caches
            for _ in range(20):
                health_check(pos_port, counter, dialect, 10.0)
        before = proc_facts(box.pid)
        data_before = dir_mib(workdir / "data")
        counters_before = box_counters(status_port)
        print(
            f"fuzz_tcp: box pid {box.pid} on 127.0.0.1:{pos_port}, {args.workers} workers, "
            f"up to {args.seconds:.0f} s or {args.count:,} inputs; logs in {workdir}",
            flush=True,
        )
        print(
            f"fuzz_tcp: before: RSS {before['rss']:.1f} MiB, {before['threads']:.0f} threads, "
            f"{before['fds']:.0f} open files",
            flush=True,
        )
        stats, findings = Stats(), Findings()
        checks = late = 0
        mutator, lock = Mutator(args.seed), threading.Lock()
        stop = threading.Event()
        started = time.monotonic()
        next_check = args.check_every
        next_report = started + 15
        check_times: list[float] = []
        dialects = ["passport", "eps"]

        def worker() -> None:
            while not stop.is_set():
                fuzz_connection(pos_port, mutator, lock, stats, findings)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
        for thread in threads:
            thread.start()
        while True:
            time.sleep(0.05)
            elapsed = time.monotonic() - started
            if box.poll() is not None:
                findings.add(f"the box died (exit code {box.returncode})")
                break
            if stats.inputs >= next_check:
                next_check = stats.inputs + args.check_every
                checks += 1
                t0 = time.monotonic()
                problem = health_check(pos_port, counter, dialects[checks % 2], args.deadline)
                check_times.append(time.monotonic() - t0)
                if problem:
                    late += 1
                    findings.add(problem.split(":")[0], detail=problem)
            if time.monotonic() > next_report:
                next_report = time.monotonic() + 15
                print(
                    f"fuzz_tcp: {stats.inputs:,} inputs on {stats.connections:,} connections in "
                    f"{elapsed:.0f} s = {stats.inputs / elapsed:,.0f}/s; {checks} checks; "
                    f"RSS {rss_mib(box.pid):.1f} MiB; {len(findings.kinds)} kinds of finding",
                    flush=True,
                )
            if elapsed >= args.seconds or stats.inputs >= args.count:
                break
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        elapsed = time.monotonic() - started
        alive = box.poll() is None
        if alive:
            problem = health_check(pos_port, counter, "passport", args.deadline)
            if problem:
                findings.add(f"final {problem.split(':')[0]}", detail=problem)
            time.sleep(1.0)  # connection threads wind down
            after = proc_facts(box.pid)
            counters_after = box_counters(status_port)
        box_log.flush()
        log_text = box_log_path.read_text(errors="replace")
        tracebacks = log_text.count("Traceback (most recent call last)")
        if tracebacks:
            last_lines = re.findall(r"^(\w+(?:\.\w+)*(?:Error|Exception)\b.*)$", log_text, re.M)
            common = collections.Counter(line[:120] for line in last_lines).most_common(5)
            findings.add(f"{tracebacks} tracebacks in the box's log; most common: {common}")

        print(
            f"\nfuzz_tcp: {stats.inputs:,} inputs on {stats.connections:,} connections in "
            f"{elapsed:.1f} s = {stats.inputs / elapsed:,.0f} inputs/s "
            f"({stats.answers:,} answers read, {stats.refused} connects refused)"
        )
        if check_times:
            ordered = sorted(check_times)
            print(
                f"fuzz_tcp: {checks} health checks (GetRewards on a fresh connection): "
                f"{late} failed or late; answer p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
                f"max {ordered[-1] * 1000:.0f} ms (limit {args.deadline:g} s)"
            )
        print(f"fuzz_tcp: box alive at the end: {alive}")
        if alive:
            print(
                f"fuzz_tcp: RSS {before['rss']:.1f} -> {after['rss']:.1f} MiB, threads "
                f"{before['threads']:.0f} -> {after['threads']:.0f}, open files "
                f"{before['fds']:.0f} -> {after['fds']:.0f}"
            )
            print(
                f"fuzz_tcp: data directory (journal) {data_before:.1f} -> "
                f"{dir_mib(workdir / 'data'):.1f} MiB"
            )
            grown = {
                key: value - counters_before.get(key, 0)
                for key, value in sorted(counters_after.items())
                if isinstance(value, int | float) and value != counters_before.get(key, 0)
            }
            print(f"fuzz_tcp: box counters during the run: {grown}")
            errors = {k: v for k, v in grown.items() if "error" in k}
            if errors:
                findings.add(f"the box counted handler errors: {errors}")
        print(f"fuzz_tcp: findings: {len(findings.kinds)} kinds")
        for kind, (seen, example, detail) in sorted(findings.kinds.items()):
            print(f"  {kind} (seen {seen:,} times) {detail}")
            if example:
                print(f"    smallest input ({len(example)} bytes): {example[:300]!r}")
        return 1 if findings.kinds else 0
    finally:
        for process in (box, host):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        host_log.close()
        box_log.close()
        if not args.keep:  # the journal of unreadable requests runs to hundreds of MiB
            shutil.rmtree(workdir / "data", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
