#!/usr/bin/env python3
"""Time to roll back: from switching to a bad release until the previous one answers again.

Builds two signed releases in a temporary root (1.0.0 good, 1.1.0 bad), serves them from a
local http.server on 127.0.0.1, and runs the real Updater with a small supervisor in place of
systemd (`restart()` (re)starts `<root>/current/bin/connectbox run` as a child process). A
poller hits /healthz every 5 ms and records when the previous release answers 200 again.

Two kinds of bad release:
- crash:     its process exits at once; the health check sees that and gives up immediately;
- unhealthy: it runs but /healthz answers 503; the updater waits the whole health deadline
             (`--deadline`, 90 s on the box; shorter here so the run stays short).
The figure is detection (switch -> rollback restart) + rollback (restart -> old answers); the
second part is what the mechanism costs, the first is the configured patience.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provisioning.updates import (  # noqa: E402
    HealthCheckFailed,
    Updater,
    make_release,
    sign_artefact,
)

SERVICE = """#!{python}
import http.server, os, sys
VERSION, MODE = {version!r}, {mode!r}
if MODE == "crash":
    sys.exit(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200 if MODE == "good" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["CB_PORT"])), H).serve_forever()
"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Supervisor:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.proc: subprocess.Popen | None = None
        self.restarted_at: list[float] = []

    def restart(self) -> None:
        self.stop()
        self.restarted_at.append(time.monotonic())
        self.proc = subprocess.Popen(
            [str(self.root / "current" / "bin" / "connectbox"), "run"],
            env={**os.environ, "CB_PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    def get(self) -> tuple[int, str] | None:
        try:
            reply = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5)
        except requests.RequestException:
            return None
        return reply.status_code, reply.text

    def health(self) -> tuple[bool, str]:
        if self.proc is not None and self.proc.poll() is not None:
            raise HealthCheckFailed(f"exited with status {self.proc.returncode}")
        got = self.get()
        return (got is not None and got[0] == 200), str(got)


def release(work: Path, version: str, mode: str, key: Ed25519PrivateKey, base: str) -> dict:
    src = work / "src" / f"{version}-{mode}"
    (src / "bin").mkdir(parents=True, exist_ok=True)
    script = src / "bin" / "connectbox"
    script.write_text(SERVICE.format(python=sys.executable, version=version, mode=mode))
    script.chmod(0o755)
    artefact = make_release(src, version, work / "artefacts" / mode)
    signed = sign_artefact(artefact, key, "bench")
    return {
        "version": version,
        "url": f"{base}/{mode}/{artefact.name}",
        "sha256": signed["sha256"],
        "signature": signed["signature"],
        "key_id": "bench",
    }


def one_run(mode: str, deadline_s: float, poll_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cb-rollback-") as tmp:
        work = Path(tmp)
        (work / "artefacts").mkdir()
        handler = functools.partial(Quiet, directory=str(work / "artefacts"))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        root = work / "software"
        service = Supervisor(root, free_port())
        updater = Updater(
            root,
            {"bench": base64.b64encode(public).decode()},
            service.restart,
            service.health,
            lambda: True,
            installer=lambda path: None,
            health_deadline_s=deadline_s,
            poll_s=poll_s,
            health_passes=2,
        )
        try:
            ok, detail = updater.apply(release(work, "1.0.0", "good", key, base))
            assert ok, detail
            answered: list[float] = []
            stop = threading.Event()

            def poll() -> None:  # when does 1.0.0 answer again after the switch?
                while not stop.is_set():
                    rolled_back = len(service.restarted_at) >= 3  # bootstrap, switch, rollback
                    if rolled_back and service.get() == (200, "1.0.0"):
                        answered.append(time.monotonic())
                        return
                    time.sleep(0.005)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            began = time.monotonic()
            ok, detail = updater.apply(release(work, "1.1.0", mode, key, base))
            ended = time.monotonic()
            poller.join(5)
            stop.set()
            assert not ok and "rolled back to 1.0.0" in detail, detail
            switch, rollback = service.restarted_at[1], service.restarted_at[2]
            return {
                "prepare": switch - began,
                "detect": rollback - switch,
                "restore": answered[0] - rollback,
                "total": answered[0] - switch,
                "apply": ended - began,
            }
        finally:
            service.stop()
            server.shutdown()
            server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=5.0, help="health deadline, s")
    parser.add_argument("--poll", type=float, default=0.1, help="health poll interval, s")
    opts = parser.parse_args()
    logging.getLogger("provisioning").setLevel(logging.ERROR)  # the rollbacks are expected
    print(
        f"rollback timing, {opts.runs} runs each, health deadline {opts.deadline:g} s,"
        f" health poll {opts.poll:g} s, 2 passes needed (times in seconds, median [min-max])"
    )
    for mode in ("crash", "unhealthy"):
        runs = [one_run(mode, opts.deadline, opts.poll) for _ in range(opts.runs)]
        cells = []
        for name in ("prepare", "detect", "restore", "total", "apply"):
            values = [run[name] for run in runs]
            cells.append(
                f"{name} {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
            )
        print(f"  {mode:9s}  " + "  ".join(cells))
    print(
        "  prepare = download+verify+unpack until the switch; detect = switch until the"
        " rollback restart;\n  restore = rollback restart until 1.0.0 answers 200; total ="
        " switch until 1.0.0 answers again; apply = whole apply() call\n"
    )


if __name__ == "__main__":
    main()
