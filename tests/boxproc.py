"""The box as a process (`connectbox run`) on loopback ports, for tests that need a real PID:
SIGKILL, SIGTERM, RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64

CLI = [sys.executable, "-m", "app"]


def write_config(
    tmp_path: Path, host_url: str, pos_port: int, status_port: int, extra: str = ""
) -> Path:
    """A config for a box on 127.0.0.1 with mDNS off; `extra` lines go into [host]."""
    path = tmp_path / "connectbox.toml"
    path.write_text(
        f'[pos]\nlisten = "127.0.0.1:{pos_port}"\n'
        f'[host]\nurl = "{host_url}"\ndevice_id = "D-DEMO"\nsite_id = "S-1001"\n'
        f'token = "demo-token"\n{extra}\n'
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        "[network]\nmdns = false\n"
        # The reference host signs its policy with its public TEST key.
        f'[policy]\ntrusted_keys = {{ "{TEST_KEY_ID}" = "{TEST_PUBLIC_KEY_B64}" }}\n'
    )
    return path


def start_box(config: Path, status_port: int, **popen) -> subprocess.Popen:
    """Start `connectbox run` and wait for /healthz; output is discarded unless `popen` says."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    # As the image runs it (image/overlay/.../connectbox.service): two malloc arenas.
    popen.setdefault("env", {**os.environ, "MALLOC_ARENA_MAX": "2"})
    box = subprocess.Popen([*CLI, "run", "--config", str(config)], **popen)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{status_port}/healthz", timeout=1).ok:
                return box
        except requests.ConnectionError:
            time.sleep(0.05)
    if box.poll() is not None:  # say so: it crashed, rather than "slow"
        raise AssertionError(f"the box exited with {box.returncode} before it came up")
    box.kill()
    raise AssertionError("the box did not come up within 30 s")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")
