"""Config sync against the real reference host: ETag/304, refused configs, applied configs."""

from __future__ import annotations

import copy
import stat
import time

import pytest

from app.host.reference.server import DEFAULT_CONFIG, start_in_thread
from provisioning.agent import Agent
from provisioning.config_sync import CONFIG_FILE, ConfigSync
from tests.provisioning.conftest import enroll, record


@pytest.fixture
def host_config():
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["config_version"] = 1
    return config


@pytest.fixture
def config_host(host_config):
    running = start_in_thread("127.0.0.1", 0, config=host_config)  # the host reads it live
    running.recorder = record(running)
    yield running
    running.stop()


def validate(config: dict) -> str | None:
    heartbeat = config.get("heartbeat_s")
    if not isinstance(heartbeat, int) or heartbeat <= 0:
        return f"heartbeat_s must be a positive integer, not {heartbeat!r}"
    return None


class Applied(list):
    def __call__(self, config: dict) -> None:
        self.append(config)


def test_sync_304_refused_accepted_and_restart(config_host, host_config, tmp_path):
    box = enroll(config_host, tmp_path / "box")
    applied = Applied()
    sync = ConfigSync(box.client, box.data_dir, validate, applied)
    sync.start(sync=False)
    assert applied == [] and sync.snapshot()["state"] == "none"

    ok, detail = sync.sync_now()
    assert ok and detail == "config 1 applied"
    assert len(applied) == 1 and applied[0]["heartbeat_s"] == 60
    assert applied[0]["site"]["site_id"] == "S-1001" and "policy" in applied[0]
    stored = box.data_dir / CONFIG_FILE
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600

    # Nothing changed: If-None-Match, 304, nothing applied.
    ok, detail = sync.sync_now()
    assert ok and detail == "config 1 unchanged" and len(applied) == 1
    last = [c for c in config_host.recorder.snapshot() if c.path.endswith("/config")][-1]
    assert last.status == 304 and last.if_none_match == sync.etag

    # A config the box refuses: the last good one stays, the refusal is reported.
    host_config.update(config_version=2, heartbeat_s=0)
    ok, detail = sync.sync_now()
    assert not ok
    assert (
        detail
        == "config 2 refused: heartbeat_s must be a positive integer, not 0; keeping config 1"
    )
    assert len(applied) == 1 and sync.last_good["config_version"] == 1
    snap = sync.snapshot()
    assert snap["state"] == "refused" and snap["config_version"] == 1
    assert snap["refused"]["config_version"] == 2 and "heartbeat_s" in snap["refused"]["reason"]
    agent = Agent(box.client, box.data_dir, lambda: {}, {}, config_sync=sync)
    agent.heartbeat_now()
    beat = config_host.store.heartbeats(box.creds.device_id)[-1]
    assert beat["config_version"] == 1
    assert beat["components"]["config"]["state"] == "refused"
    assert beat["components"]["config"]["refused"]["config_version"] == 2
    # Still refused on the next sync (it is judged again, not skipped by its ETag).
    assert sync.sync_now()[0] is False and len(applied) == 1

    # The provider fixes it: accepted, stored, applied, refusal cleared.
    host_config.update(config_version=3, heartbeat_s=30)
    ok, detail = sync.sync_now()
    assert ok and detail == "config 3 applied"
    assert applied[-1]["heartbeat_s"] == 30 and sync.snapshot()["state"] == "ok"
    assert sync.snapshot()["refused"] is None

    # After a restart the last good config is applied before the host is asked anything.
    calls_before = len(config_host.recorder.snapshot())
    again = Applied()
    restarted = ConfigSync(box.client, box.data_dir, validate, again)
    restarted.start(sync=False)
    assert again == [applied[-1]]
    assert len(config_host.recorder.snapshot()) == calls_before
    assert restarted.sync_now() == (True, "config 3 unchanged")


def test_host_unreachable_keeps_last_good(config_host, tmp_path):
    box = enroll(config_host, tmp_path / "box")
    applied = Applied()
    sync = ConfigSync(box.client, box.data_dir, validate, applied)
    assert sync.sync_now()[0]
    config_host.recorder.fail(lambda m, p: p.endswith("/config"))
    ok, detail = sync.sync_now()
    assert not ok and "cannot fetch the config" in detail
    snap = sync.snapshot()
    assert snap["state"] == "error" and snap["config_version"] == 1 and len(applied) == 1


def test_validator_crash_refuses_and_apply_failure_is_reported(config_host, tmp_path):
    box = enroll(config_host, tmp_path / "box")

    def crash(config: dict) -> str | None:
        raise KeyError("policy")

    sync = ConfigSync(box.client, box.data_dir, crash, Applied())
    ok, detail = sync.sync_now()
    assert not ok and "validation failed" in detail and sync.last_good is None

    def broken_apply(config: dict) -> None:
        raise RuntimeError("port in use")

    sync = ConfigSync(box.client, box.data_dir, validate, broken_apply)
    ok, detail = sync.sync_now()
    assert not ok and "port in use" in detail
    assert sync.last_good is not None  # stored: it was valid


def test_paused_when_token_revoked(config_host, tmp_path):
    box = enroll(config_host, tmp_path / "box")
    sync = ConfigSync(box.client, box.data_dir, validate, Applied(), paused=lambda: True)
    calls = len(config_host.recorder.snapshot())
    assert sync.sync_now()[0] is False
    assert len(config_host.recorder.snapshot()) == calls


def test_background_thread_and_heartbeat_interval_from_config(config_host, host_config, tmp_path):
    host_config["heartbeat_s"] = 15
    box = enroll(config_host, tmp_path / "box")
    agent = Agent(box.client, box.data_dir, lambda: {}, {}, heartbeat_s=60)
    sync = ConfigSync(
        box.client, box.data_dir, validate, lambda c: agent.set_interval(c["heartbeat_s"])
    )
    sync.start()
    try:
        deadline = time.monotonic() + 5
        while sync.last_good is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.snapshot()["interval_s"] == 15
    finally:
        sync.stop()
