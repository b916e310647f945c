"""kill -9 in the middle of a command and of a token rotation: the agent runs in a child
process against the real reference host (in this process), is SIGKILLed, and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.agent import INTERRUPTED
from provisioning.api import HostClient, HostError

ROOT = Path(__file__).resolve().parents[2]


def spawn(host, box, marker: Path, kill_at: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.provisioning.agent_child", host.url]
    command += [str(box.data_dir), str(marker)]
    if kill_at:
        command += ["--kill-at", kill_at]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, env=env)


def wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def result_of(host, device_id: str, command_id: str):
    return next(
        c["result"] for c in host.store.commands(device_id) if c["command_id"] == command_id
    )


def stop(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGTERM)
    assert child.wait(15) == 0


def more_heartbeats(host, device_id: str, count: int = 3) -> None:
    """Until the agent has sent `count` more heartbeats: each one could have run the command
    again or posted its result again, so the checks after this one mean something."""
    seen = len(host.store.heartbeats(device_id))
    wait_for(
        lambda: len(host.store.heartbeats(device_id)) >= seen + count,
        what=f"{count} more heartbeats",
    )


def result_posts(host, command_id: str) -> list:
    return [c for c in host.recorder.snapshot() if c.path.endswith(f"/{command_id}/result")]


def markers(marker: Path) -> list[str]:
    if not marker.exists():
        return []
    return [line.split()[0] for line in marker.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_while_a_command_runs(host, box, tmp_path):
    marker = tmp_path / "marker"
    command_id = host.store.queue_command(box.creds.device_id, "update", {"sleep": 30})
    first = spawn(host, box, marker)
    try:
        wait_for(lambda: markers(marker) == ["start"], what="the update to start")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert result_of(host, box.creds.device_id, command_id) is None

    second = spawn(host, box, marker)
    try:
        wait_for(lambda: result_of(host, box.creds.device_id, command_id) is not None)
        more_heartbeats(host, box.creds.device_id)  # nothing runs or is posted again
    finally:
        stop(second)
    assert result_of(host, box.creds.device_id, command_id) == {"ok": False, "detail": INTERRUPTED}
    assert markers(marker) == ["start"]  # ran once, never again
    assert [c.status for c in result_posts(host, command_id)] == [200]  # posted exactly once
    assert len(host.store.heartbeats(box.creds.device_id)) >= 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "ran", "expected"),
    [
        ("command_started", [], {"ok": False, "detail": INTERRUPTED}),
        ("command_done", ["start", "end"], {"ok": True, "detail": "updated"}),
    ],
)
def test_sigkill_around_a_command(host, box, tmp_path, kill_at, ran, expected):
    """Killed after "started" was stored but before the handler ran (not run again: the agent
    cannot know it did not run), and after "done" was stored but before the result was posted
    (the stored result is posted after the restart; the command is not run again)."""
    marker = tmp_path / "marker"
    command_id = host.store.queue_command(box.creds.device_id, "update", {"sleep": 0})
    first = spawn(host, box, marker, kill_at)
    assert first.wait(15) == -signal.SIGKILL
    assert result_of(host, box.creds.device_id, command_id) is None

    second = spawn(host, box, marker)
    try:
        wait_for(lambda: result_of(host, box.creds.device_id, command_id) is not None)
        more_heartbeats(host, box.creds.device_id)
    finally:
        stop(second)
    assert result_of(host, box.creds.device_id, command_id) == expected
    assert markers(marker) == ran
    assert [c.status for c in result_posts(host, command_id)] == [200]


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at",
    ["command_started", "token_received", "token_pending_saved", "token_confirmed", "token_saved"],
)
def test_sigkill_during_token_rotation(host, box, tmp_path, kill_at):
    device_id, old = box.creds.device_id, box.creds.token
    command_id = host.store.queue_command(device_id, "rotate_token")
    first = spawn(host, box, tmp_path / "marker", kill_at)
    assert first.wait(15) == -signal.SIGKILL
    assert result_of(host, device_id, command_id) is None
    killed_at = len(host.recorder.snapshot())

    second = spawn(host, box, tmp_path / "marker")
    try:
        wait_for(lambda: result_of(host, device_id, command_id) is not None)
        more_heartbeats(host, device_id)  # with whatever token the box kept
    finally:
        stop(second)

    creds = box.store.load()
    assert creds.pending_token is None and creds.token != old
    assert host.store.get_device(device_id).token == creds.token  # the box has a working token
    assert result_of(host, device_id, command_id) == {"ok": True, "detail": "token rotated"}
    history = host.store.token_history(device_id)
    assert [h["event"] for h in history] == ["enrolled", "issued", "activated"]  # applied once
    assert history[1]["token"] == history[2]["token"] == creds.token
    calls = host.recorder.snapshot()
    assert all(c.status != 401 for c in calls)  # never a call with a retired token
    after = calls[killed_at:]
    last_old = max(
        (i for i, c in enumerate(after) if c.authorization == f"Bearer {old}"), default=-1
    )
    first_new = min(i for i, c in enumerate(after) if c.authorization == f"Bearer {creds.token}")
    assert last_old < first_new  # once the new token is in use, the old one never again
    assert after[-1].authorization == f"Bearer {creds.token}"
    with pytest.raises(HostError) as caught:
        HostClient(host.url, old, device_id).config()
    assert caught.value.unauthorized
