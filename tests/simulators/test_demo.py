"""`scripts/demo` as a new user runs it: it points at the status page, says what the two POS
dialects are, and leaves no temporary folder behind (after --once, and when stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.ports import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The demo's command line on free ports, with its temporary folders made in `tmp_path`."""
    ports = [str(free_port()) for _ in range(3)]
    argv = [
        str(ROOT / "scripts" / "demo"),
        *args,
        *("--pos-port", ports[0], "--status-port", ports[1], "--host-port", ports[2]),
    ]
    return argv, {**os.environ, "TMPDIR": str(tmp_path)}


def test_demo_once_points_at_the_page_and_cleans_up(tmp_path):
    argv, env = demo(tmp_path, "--once")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    status_port = argv[argv.index("--status-port") + 1]
    assert f"Status page: http://127.0.0.1:{status_port}/ " in done.stdout
    assert "passport  Gilbarco: 28-byte POSLOYALTY header" in done.stdout
    assert "eps       Verifone Commander EPS: 4-byte length prefix" in done.stdout
    assert "=== tobacco_phone_sale (eps) ===" in done.stdout
    assert not list(tmp_path.glob("connectbox-demo-*")), "the demo left its folder behind"


def test_a_demo_stopped_with_sigterm_cleans_up(tmp_path):
    argv, env = demo(tmp_path)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as running:
        assert running.stdout is not None
        for line in running.stdout:
            if line.startswith("Box still running"):
                break
        assert list(tmp_path.glob("connectbox-demo-*")), "no data folder while it runs"
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0
    assert wait_for(lambda: not list(tmp_path.glob("connectbox-demo-*")))
