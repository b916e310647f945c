"""A box's management agent in its own process, for the kill -9 tests.

    python -m tests.provisioning.agent_child URL STATE_DIR MARKER [--kill-at CHECKPOINT]

Uses the credentials in STATE_DIR (written by enrollment), heartbeats every 0.2 s, and handles
`update` by appending "start" to MARKER, sleeping `args["sleep"]` seconds, then appending "end"
(each line fsync'd). `--kill-at` SIGKILLs this process at the agent's named checkpoint (the first
time it is reached). SIGTERM stops the agent cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from provisioning.agent import Agent
from provisioning.link import HostLink
from provisioning.store import CREDENTIALS_FILE, CredentialStore


def append(marker: Path, line: str) -> None:
    with open(marker, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("marker", type=Path)
    parser.add_argument("--kill-at")
    args = parser.parse_args()

    creds = CredentialStore(args.state_dir / CREDENTIALS_FILE).load()
    assert creds is not None, "enroll first"
    link = HostLink(args.url, timeout_s=5)
    link.use(creds.device_id, creds.token)

    def update(command_args: dict) -> tuple[bool, str]:
        append(args.marker, f"start {os.getpid()}")
        time.sleep(float(command_args.get("sleep", 0)))
        append(args.marker, f"end {os.getpid()}")
        return True, "updated"

    def checkpoint(point: str) -> None:
        if point == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    agent = Agent(
        link,
        args.state_dir,
        lambda: {"status": "online"},
        {"update": update},
        heartbeat_s=0.2,
        checkpoint=checkpoint,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.start()
    stop.wait()
    agent.stop()


if __name__ == "__main__":
    main()
