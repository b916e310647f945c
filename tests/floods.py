"""Hostile peers for the bounded-peers tests and bench/pos_floods.py, all on loopback.

- `connect_burst`: many TCP connects at once from one thread (non-blocking sockets);
- `PosProbe`: a POS on one persistent connection sending GetRewards, timing each answer;
- `slow_bytes`: a client that sends a frame one byte at a time;
- `StatusFlood`: HTTP clients hammering `/` and `/api/status` from a process of their own (so
  their work does not share the box's GIL when the box runs in the test process). Run as
  `python -m tests.floods status PORT CLIENTS`.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from simulators import pos as sim

ROOT = Path(__file__).resolve().parents[1]
PHONE = "2142840123"
TOBACCO = "028200003843"


def connect_burst(port: int, count: int, timeout_s: float = 30.0) -> list[socket.socket]:
    """Start `count` connects at once; return the sockets once every handshake completed."""
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        sockets.append(sock)
    waiting, deadline = count, time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            selector.unregister(key.fileobj)
            waiting -= 1
    selector.close()
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


class PosProbe:
    """GetRewards after GetRewards on one connection until stopped; the answer times in s."""

    def __init__(self, port: int, register: str = "9") -> None:
        self.port = port
        self.register = register
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self.answered = threading.Event()  # set at the first answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pos-probe", daemon=True)

    def __enter__(self) -> PosProbe:
        self._thread.start()
        if not self.answered.wait(15):
            raise AssertionError(f"the POS probe got no answer: {self.errors}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def mark(self) -> int:
        """Where the answers from now on start in `rtts`."""
        return len(self.rtts)

    def wait_answers(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until `count` more answers came in (or the probe failed)."""
        goal, deadline = len(self.rtts) + count, time.monotonic() + timeout_s
        while len(self.rtts) < goal and not self.errors and time.monotonic() < deadline:
            self._stop.wait(0.05)

    def _run(self) -> None:
        counter = sim.SequenceCounter()
        try:
            with sim.PosClient("127.0.0.1", self.port, timeout=10) as pos:
                while not self._stop.is_set():
                    txn = sim.transaction(
                        self.register,
                        counter.new_transaction(),
                        [sim.item_line(1, TOBACCO, 2, "9.49")],
                        business_date="2026-11-23",
                    )
                    pos.send(sim.get_rewards(counter.next(), txn, PHONE))
                    self.rtts.append(pos.last_rtt_s)
                    self.answered.set()
        except (sim.PosClientError, OSError) as exc:
            self.errors.append(str(exc))


def percentile_ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * p / 100)] * 1000 if ordered else float("nan")


def slow_bytes(port: int, data: bytes, every_s: float) -> float | None:
    """Send `data` one byte per `every_s`; seconds from the first byte until the box hung up
    (None if it never did and all bytes went out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        first = time.monotonic()
        for index in range(len(data)):
            try:
                sock.sendall(data[index : index + 1])
                sock.settimeout(every_s)  # the pace of the bytes, and a watch for the hang-up
                if sock.recv(65536) == b"":
                    return time.monotonic() - first
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - first
    return None


class _Child:
    """A flood in a child process: started by `__enter__` (returns once it is under way),
    stopped by `__exit__` (SIGTERM), which reads its last line into `result`."""

    def __init__(self, *args: object) -> None:
        self.args = [str(a) for a in args]
        self.process: subprocess.Popen[str] | None = None
        self.started = ""  # the child's first line
        self.result = ""  # its last line

    def __enter__(self) -> _Child:
        command = [sys.executable, "-m", "tests.floods", *self.args]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.started = self.process.stdout.readline().strip()  # blocks until under way
        if not self.started:
            self.process.kill()
            raise AssertionError(f"flood {self.args} did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        self.result = out.strip().rsplit("\n", 1)[-1]


class StatusFlood(_Child):
    """`clients` HTTP clients fetching `/` and `/api/status` in turn, in a child process."""

    def __init__(self, port: int, clients: int = 32) -> None:
        super().__init__("status", port, clients)

    @property
    def served(self) -> int:
        return int(self.result.split()[1]) if self.result.startswith("served") else 0

    @property
    def failed(self) -> int:
        return int(self.result.split()[3]) if self.result.startswith("served") else 0


class ConnectBurst(_Child):
    """`count` connects at once from a child process, held open until `__exit__`."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__("burst", port, count)


def _fetch(port: int, path: str) -> bool:
    request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(64)
        while sock.recv(65536):
            pass
    return b" 200 " in head.split(b"\r\n", 1)[0]


def _flood(port: int, clients: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = {"served": 0, "failed": 0}
    started = threading.Event()

    def client(number: int) -> None:
        paths = ("/", "/api/status")
        while not stop.is_set():
            try:
                ok = _fetch(port, paths[number % 2])
            except OSError:
                ok = False
            counts["served" if ok else "failed"] += 1
            started.set()
            number += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    started.wait(30)
    print("flooding", flush=True)
    stop.wait(600)
    stop.set()
    for thread in threads:
        thread.join(30)
    print(f"served {counts['served']} failed {counts['failed']}", flush=True)


def _burst(port: int, count: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    sockets = connect_burst(port, count)
    print(f"connected {count} in {time.monotonic() - started:.3f} s", flush=True)
    stop.wait(600)
    close_all(sockets)
    print("closed", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["status", "burst"])
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int, help="HTTP clients, or connects")
    args = parser.parse_args()
    if args.kind == "status":
        _flood(args.port, args.count)
    else:
        _burst(args.port, args.count)
