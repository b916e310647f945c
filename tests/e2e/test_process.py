"""The `connectbox` command as a process: start-up errors, health, SIGTERM, the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from simulators import pos as sim
from tests.ports import free_port

CLI = [sys.executable, "-m", "app"]


def _config(tmp_path, host_url: str, pos_port: int, status_port: int, extra: str = "") -> str:
    path = tmp_path / "connectbox.toml"
    path.write_text(
        f"""
[pos]
listen = "127.0.0.1:{pos_port}"
[host]
url = "{host_url}"
device_id = "D-DEMO"
site_id = "S-1001"
token = "demo-token"
{extra}
[status]
listen = "127.0.0.1:{status_port}"
[storage]
data_dir = "{tmp_path / "data"}"
[network]
mdns = false
"""
    )
    return str(path)


def test_bad_config_stops_start_up_naming_the_key(tmp_path):
    path = _config(tmp_path, "http://127.0.0.1:1", 1, 2, extra="deadline_ms = -5")
    result = subprocess.run(
        CLI + ["run", "--config", path], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "[host] deadline_ms: must be a whole number" in result.stderr


def test_config_from_environment_and_missing_file(tmp_path):
    env = {**os.environ, "CONNECTBOX_CONFIG": str(tmp_path / "absent.toml")}
    result = subprocess.run(CLI + ["run"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert f"no configuration file at {tmp_path / 'absent.toml'}" in result.stderr


def test_run_serves_health_and_stops_cleanly_on_sigterm(tmp_path, reference_host):
    pos_port, status_port = free_port(), free_port()
    path = _config(tmp_path, reference_host.url, pos_port, status_port)
    process = subprocess.Popen(CLI + ["run", "--config", path], stderr=subprocess.PIPE, text=True)
    try:
        health = None
        for _ in range(100):
            try:
                health = requests.get(f"http://127.0.0.1:{status_port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200
        with sim.PosClient("127.0.0.1", pos_port) as pos:
            assert pos.send(sim.online_status("01-1^1^")).prompt_for_loyalty is True
        status = requests.get(f"http://127.0.0.1:{status_port}/api/status", timeout=2).json()
        assert status["pos"]["running"] is True and status["counters"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stderr.read()
    assert "stopped" in log and "Traceback" not in log


def test_demo_plays_a_discounted_sale_end_to_end():
    ports = [str(free_port()) for _ in range(3)]
    result = subprocess.run(
        CLI
        + [
            "demo",
            "--once",
            "--pos-port",
            ports[0],
            "--status-port",
            ports[1],
            "--host-port",
            ports[2],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Discount on line 1: -$1.00" in result.stdout
    assert "eps" in result.stdout and "passport" in result.stdout
    assert "failed" not in result.stdout
