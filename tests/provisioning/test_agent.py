"""The management agent against the real reference host: heartbeats, commands exactly once,
token rotation, log upload with redaction, 401 handling."""

from __future__ import annotations

import gzip
import random

import pytest

from provisioning.agent import DEFER, INTERRUPTED, Agent, pack_logs, redact_log_text
from provisioning.api import HostClient, HostError
from tests.clock import FakeClock
from tests.provisioning.conftest import enroll, link_for
from tests.waiting import wait_for

STATUS = {
    "status": "degraded",
    "components": {"pos": {"state": "ok"}, "host": {"state": "ok"}, "readers": {"state": "none"}},
    "outbox_depth": 3,
    "oldest_pending_s": 12,
    "config_version": 4,
    "policy_version": 7,
    "journal_size_bytes": 4_194_304,
    "journal_events": 1200,
    "journal_oldest_event_at": "2026-08-25T14:00:00-05:00",
    "ignored": "not sent",
}


class Recorded:
    """Fake app handlers that record their calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def handler(self, kind: str, ok: bool = True):
        def run(args: dict) -> tuple[bool, str]:
            self.calls.append((kind, args))
            return ok, f"{kind} done"

        return run


def make_agent(box, handlers=None, **options) -> Agent:
    options.setdefault("status_provider", lambda: dict(STATUS))
    options.setdefault("software_version", "1.2.3")
    return Agent(box.link, box.data_dir, handlers=handlers or {}, **options)


def results(host, device_id):
    return {c["command_id"]: c["result"] for c in host.store.commands(device_id)}


def test_heartbeat_carries_the_status(host, box):
    agent = make_agent(box)
    assert agent.heartbeat_now() == {"commands": []}
    beat = host.store.heartbeats(box.creds.device_id)[-1]
    for key in ("status", "components", "outbox_depth", "oldest_pending_s", "journal_events"):
        assert beat[key] == STATUS[key]
    assert beat["journal_size_bytes"] == 4_194_304
    assert beat["journal_oldest_event_at"] == "2026-08-25T14:00:00-05:00"
    assert beat["config_version"] == 4 and beat["policy_version"] == 7
    assert beat["software_version"] == "1.2.3"
    assert "ignored" not in beat and beat["clock"][:4].isdigit()
    snap = agent.snapshot()
    assert snap["last_result"] == "ok" and snap["last_ok_at"] and not snap["revoked"]


def test_heartbeat_defaults_and_broken_status_provider(host, box):
    make_agent(box, status_provider=lambda: {}).heartbeat_now()
    beat = host.store.heartbeats(box.creds.device_id)[-1]
    assert beat["status"] == "online" and beat["outbox_depth"] == 0

    def broken() -> dict:
        raise RuntimeError("boom")

    make_agent(box, status_provider=broken).heartbeat_now()
    assert host.store.heartbeats(box.creds.device_id)[-1]["status"] == "degraded"


def test_each_command_type_runs_once_and_reports(host, box):
    fake = Recorded()
    handlers = {k: fake.handler(k) for k in ("restart", "rediscover", "sync_config", "update")}
    agent = make_agent(box, handlers)
    device = box.creds.device_id
    ids = {
        kind: host.store.queue_command(device, kind, {"n": i})
        for i, kind in enumerate(("restart", "rediscover", "sync_config", "update"))
    }
    answer = agent.heartbeat_now()
    assert len(answer["commands"]) == 4
    assert fake.calls == [
        ("restart", {"n": 0}),
        ("rediscover", {"n": 1}),
        ("sync_config", {"n": 2}),
        ("update", {"n": 3}),
    ]
    done = results(host, device)
    for kind, command_id in ids.items():
        assert done[command_id] == {"ok": True, "detail": f"{kind} done"}
    assert agent.heartbeat_now() == {"commands": []}
    assert len(fake.calls) == 4
    states = {c["command_id"]: c["state"] for c in agent.snapshot()["commands"]}
    assert set(states.values()) == {"reported"}


def test_unknown_command_and_failing_handler(host, box):
    def broken(args: dict) -> tuple[bool, str]:
        raise RuntimeError("disk full")

    agent = make_agent(box, {"update": broken})
    restart = host.store.queue_command(box.creds.device_id, "restart")
    update = host.store.queue_command(box.creds.device_id, "update")
    agent.heartbeat_now()
    done = results(host, box.creds.device_id)
    assert done[restart] == {"ok": False, "detail": "unknown command"}
    assert done[update]["ok"] is False and "disk full" in done[update]["detail"]


def test_resent_command_is_not_run_again_only_reported(host, box):
    fake = Recorded()
    agent = make_agent(box, {"update": fake.handler("update")})
    command_id = host.store.queue_command(box.creds.device_id, "update")
    host.recorder.fail(lambda m, p: p.endswith("/result"), "before")  # result post fails
    agent.heartbeat_now()
    assert fake.calls == [("update", {})]
    assert results(host, box.creds.device_id)[command_id] is None
    assert agent.snapshot()["commands"][-1]["state"] == "done"

    host.recorder.clear_faults()
    answer = agent.heartbeat_now()  # the host sends it again: report only
    assert fake.calls == [("update", {})]
    assert results(host, box.creds.device_id)[command_id] == {"ok": True, "detail": "update done"}
    assert [c["command_id"] for c in answer["commands"]] == []  # reported before the heartbeat
    assert agent.snapshot()["commands"][-1]["state"] == "reported"


def test_lost_result_answer_ends_with_409_as_reported(host, box):
    fake = Recorded()
    agent = make_agent(box, {"update": fake.handler("update")})
    command_id = host.store.queue_command(box.creds.device_id, "update")
    host.recorder.fail(lambda m, p: p.endswith("/result"), "after")  # stored, answer lost
    agent.heartbeat_now()
    assert results(host, box.creds.device_id)[command_id] is not None
    assert agent.snapshot()["commands"][-1]["state"] == "done"
    host.recorder.clear_faults()
    agent.heartbeat_now()
    posts = [c for c in host.recorder.snapshot() if c.path.endswith("/result")]
    assert [c.status for c in posts] == [500, 200]  # the same Idempotency-Key: the first answer
    assert agent.snapshot()["commands"][-1]["state"] == "reported"
    assert fake.calls == [("update", {})]


def test_409_means_the_host_already_has_the_result(host, box):
    fake = Recorded()
    agent = make_agent(box, {"update": fake.handler("update")})
    command_id = host.store.queue_command(box.creds.device_id, "update")
    host.recorder.fail(lambda m, p: p.endswith("/result"), "before")
    agent.heartbeat_now()
    host.recorder.clear_faults()
    host.store.record_command_result(box.creds.device_id, command_id, {"ok": True, "detail": "x"})
    agent.heartbeat_now()
    posts = [c for c in host.recorder.snapshot() if c.path.endswith("/result")]
    assert [c.status for c in posts] == [500, 409]
    assert agent.snapshot()["commands"][-1]["state"] == "reported"
    agent.heartbeat_now()
    assert len([c for c in host.recorder.snapshot() if c.path.endswith("/result")]) == 2


def test_started_command_found_after_restart_is_not_run_again(host, box):
    fake = Recorded()
    command_id = host.store.queue_command(box.creds.device_id, "update")

    def die(point: str) -> None:
        if point == "command_started":
            raise SystemExit("simulated crash")  # state "started" is on disk, handler not run

    with pytest.raises(SystemExit):
        make_agent(box, {"update": fake.handler("update")}, checkpoint=die).heartbeat_now()
    again = make_agent(box, {"update": fake.handler("update")})
    again.heartbeat_now()
    assert fake.calls == []
    assert results(host, box.creds.device_id)[command_id] == {"ok": False, "detail": INTERRUPTED}


def test_rotate_token_for_real(host, box):
    seen: list[str] = []
    agent = make_agent(box, on_token=seen.append)
    old = box.creds.token
    command_id = host.store.queue_command(box.creds.device_id, "rotate_token")
    agent.heartbeat_now()

    new = box.store.load()
    assert new.token != old and new.pending_token is None and new.rotation_id == command_id
    assert box.client.token == new.token and seen == [new.token]
    assert results(host, box.creds.device_id)[command_id] == {"ok": True, "detail": "token rotated"}
    history = host.store.token_history(box.creds.device_id)
    assert [h["event"] for h in history] == ["enrolled", "issued", "activated"]
    assert history[1]["token"] == history[2]["token"] == new.token
    assert agent.heartbeat_now() == {"commands": []}
    calls = host.recorder.snapshot()
    assert all(c.status != 401 for c in calls)
    first_new = next(i for i, c in enumerate(calls) if c.authorization == f"Bearer {new.token}")
    assert all(c.authorization != f"Bearer {old}" for c in calls[first_new:])
    with pytest.raises(HostError) as caught:  # the old token is retired at the host
        HostClient(host.url, old, box.creds.device_id).config()
    assert caught.value.unauthorized


def test_upload_logs_redacts_and_the_host_gets_gzip(host, box):
    token = box.creds.token
    text = "\n".join(
        [
            "INFO connectbox: started",
            f"DEBUG urllib3: POST /v1/rewards Authorization: Bearer {token}",
            f"WARNING agent: token {token} looked odd",
            "INFO status: technician login pin=4321 ok",
            'INFO status: {"pin": "9876", "user": "tech"}',
            "INFO status: wifi password: hunter2-long",
            "INFO status: config secret s3cr3t-value loaded",
            "INFO pos: GetRewards loyalty 5125550123 register 1",
            "INFO readers: card 6008123412345678 read on register 2",
            "INFO pos: phone (512) 555-0199 keyed",
            "INFO pos: amount 9.49 qty 2 register 12",
        ]
    )
    agent = make_agent(box, log_provider=lambda: text, secrets=lambda: ["s3cr3t-value", "9876"])
    command_id = host.store.queue_command(box.creds.device_id, "upload_logs")
    agent.heartbeat_now()
    result = results(host, box.creds.device_id)[command_id]
    assert result["ok"] is True and "uploaded 11 lines" in result["detail"]

    stored = host.store.logs(box.creds.device_id)
    assert len(stored) == 1
    uploaded = gzip.decompress(stored[0]["content"]).decode()
    for secret in (token, "4321", "9876", "hunter2", "s3cr3t", "5125550123", "6008123412345678"):
        assert secret not in uploaded
    assert "5550199" not in uploaded
    assert "Bearer [REDACTED]" in uploaded
    assert "******0123" in uploaded and "******5678" in uploaded and "******0199" in uploaded
    assert "amount 9.49 qty 2 register 12" in uploaded  # ordinary numbers stay
    post = [c for c in host.recorder.snapshot() if c.path.endswith("/logs")]
    assert [c.status for c in post] == [200]


def test_upload_logs_cuts_the_oldest_lines_to_fit(host, box):
    rng = random.Random(7)
    lines = [f"line {i} {rng.getrandbits(128):032x}" for i in range(5000)]
    agent = make_agent(box, log_provider=lambda: "\n".join(lines), max_log_bytes=20_000)
    command_id = host.store.queue_command(box.creds.device_id, "upload_logs")
    agent.heartbeat_now()
    assert "older lines cut" in results(host, box.creds.device_id)[command_id]["detail"]
    content = host.store.logs(box.creds.device_id)[0]["content"]
    assert len(content) <= 20_000
    uploaded = gzip.decompress(content).decode().splitlines()
    assert uploaded[0].startswith("[") and "older lines cut" in uploaded[0]
    assert uploaded[-1].startswith("line 4999 ")  # the newest lines are kept


def test_pack_logs_keeps_everything_when_small():
    data, kept, cut = pack_logs("a\nb\n", 1000)
    assert (kept, cut) == (2, 0) and gzip.decompress(data) == b"a\nb\n"


def test_redaction_rules():
    text = redact_log_text(
        'Authorization: bearer abc.DEF-123 pin:1234 PIN = 5678 password="two words"'
        " tok=xyz 20260101 1234 current-token-value",
        tokens=["current-token-value", None],
        secrets=["abc"],  # shorter than 4: ignored, it would cut ordinary text apart
    )
    assert text == (
        "Authorization: bearer [REDACTED] pin:[REDACTED] PIN = [REDACTED]"
        ' password="[REDACTED]" tok=xyz ****0101 1234 [REDACTED]'
    )


def test_401_pauses_heartbeats_until_resume(host, box, tmp_path):
    agent = make_agent(box)
    agent.heartbeat_now()
    host.store.revoke_token(box.creds.device_id)
    assert agent.heartbeat_now() is None
    snap = agent.snapshot()
    assert snap["revoked"] and "401" in snap["revoked_message"]
    assert "enroll" in snap["revoked_message"]
    before = len(host.recorder.snapshot())
    assert agent.heartbeat_now() is None and agent.heartbeat_now() is None
    assert len(host.recorder.snapshot()) == before  # not one call with the refused token

    again = enroll(host, tmp_path / "reenrolled", code="AGAIN-0001", serial="SN-1")
    box.link.use(again.creds.device_id, again.creds.token)  # what the box does on re-enrolling
    agent.resume()
    assert agent.heartbeat_now() == {"commands": []}
    assert not agent.snapshot()["revoked"]
    assert host.store.heartbeats(again.creds.device_id)


def test_revoked_is_the_links_word_whoever_met_the_401(host, box, tmp_path):
    agent = make_agent(box)
    host.store.revoke_token(box.creds.device_id)
    with pytest.raises(HostError):  # another part (the outbox, the relay) meets the 401
        box.client.config()
    before = len(host.recorder.snapshot())
    assert agent.heartbeat_now() is None and agent.snapshot()["revoked"]
    assert len(host.recorder.snapshot()) == before  # the agent did not try the token itself
    again = enroll(host, tmp_path / "reenrolled", code="AGAIN-0002", serial="SN-1")
    box.link.use(again.creds.device_id, again.creds.token)
    assert not agent.snapshot()["revoked"]  # no resume needed to know it
    assert agent.heartbeat_now() == {"commands": []}


def test_thread_heartbeats_and_set_interval_without_restart(host, box):
    clock = FakeClock()  # heartbeats come when the test moves the clock, however slow the box
    agent = make_agent(box, heartbeat_s=30, clock=clock)

    def beats() -> int:
        return len(host.store.heartbeats(box.creds.device_id))

    def wait_for_beats(count: int) -> None:
        assert wait_for(lambda: beats() >= count), f"{beats()} heartbeat(s), not {count}"

    agent.start()
    try:
        wait_for_beats(1)
        clock.wait_parked()  # waiting for its next heartbeat, 27-33 s (of the clock) away
        assert beats() == 1
        assert 27 <= agent.snapshot()["next_heartbeat_in_s"] <= 33
        agent.set_interval(0.1)
        for count in range(2, 7):
            clock.advance(0.2)  # past the jittered 0.09-0.11 s: exactly one heartbeat
            wait_for_beats(count)
            clock.wait_parked()
            assert beats() == count
        assert agent.snapshot()["interval_s"] == 0.1
    finally:
        agent.stop()


def test_sync_config_without_app_handler_uses_config_sync(host, box):
    class ConfigPath:
        """What the box passes as `config_sync` (its policy manager): sync_now + snapshot."""

        calls = 0

        def sync_now(self):
            self.calls += 1
            return True, "config unchanged (policy 7)"

        def snapshot(self):
            return {"state": "ok", "policy_version": 7}

    sync = ConfigPath()
    agent = make_agent(box, config_sync=sync)
    command_id = host.store.queue_command(box.creds.device_id, "sync_config")
    agent.heartbeat_now()
    result = results(host, box.creds.device_id)[command_id]
    assert (result["ok"], result["detail"]) == (True, "config unchanged (policy 7)")
    assert sync.calls == 1
    beat = host.store.heartbeats(box.creds.device_id)[-1]
    assert beat["components"]["config"]["state"] == "ok"


def test_deferred_result_comes_through_complete(host, box):
    seen_ids: list[str | None] = []
    agent = make_agent(box)

    def update(args: dict):
        seen_ids.append(agent.running_command_id)
        return DEFER  # e.g. the updater restarts the service; the outcome comes later

    agent.handlers["update"] = update
    command_id = host.store.queue_command(box.creds.device_id, "update")
    agent.heartbeat_now()
    agent.heartbeat_now()  # sent again: not run again, not reported as interrupted
    assert seen_ids == [command_id]
    assert results(host, box.creds.device_id)[command_id] is None
    assert agent.complete(command_id, True, "updated to 1.3.0") is True
    assert results(host, box.creds.device_id)[command_id] == {
        "ok": True,
        "detail": "updated to 1.3.0",
    }
    assert agent.complete(command_id, False, "again") is False  # exactly once


@pytest.mark.parametrize("verdict", [(True, "updated after the restart"), DEFER])
def test_on_interrupted_gives_the_outcome_after_a_restart(host, box, verdict):
    command_id = host.store.queue_command(box.creds.device_id, "update")

    def die(point: str) -> None:
        if point == "command_started":
            raise SystemExit("the service restarted into the new release")

    crashed = make_agent(box, {"update": lambda args: (True, "x")}, checkpoint=die)
    with pytest.raises(SystemExit):
        crashed.heartbeat_now()
    asked: list[dict] = []

    def on_interrupted(entry: dict):
        asked.append(entry)
        return verdict

    agent = make_agent(box, {"update": lambda args: (True, "x")}, on_interrupted=on_interrupted)
    agent.heartbeat_now()
    assert [e["command_id"] for e in asked] == [command_id] and asked[0]["type"] == "update"
    if verdict is DEFER:
        assert results(host, box.creds.device_id)[command_id] is None
        agent.heartbeat_now()
        agent.complete(command_id, True, "updated after the restart")
    assert results(host, box.creds.device_id)[command_id] == {
        "ok": True,
        "detail": "updated after the restart",
    }


def test_settle_token_at_start_up_uses_the_pending_token(host, box):
    command_id = host.store.queue_command(box.creds.device_id, "rotate_token")

    def die(point: str) -> None:
        if point == "token_confirmed":  # the host already retired the old token
            raise SystemExit("power cut")

    with pytest.raises(SystemExit):
        make_agent(box, checkpoint=die).heartbeat_now()
    stored = box.store.load()
    assert stored.pending_token and stored.token == box.creds.token

    link = link_for(host.url, stored.device_id, stored.token)  # what a restarted box builds
    seen: list[str] = []
    agent = Agent(link, box.data_dir, lambda: {}, {}, on_token=seen.append)
    assert agent.settle_token() is True
    assert link.client.token == stored.pending_token == seen[0]
    assert box.store.load().pending_token is None
    agent.heartbeat_now()
    assert results(host, box.creds.device_id)[command_id] == {"ok": True, "detail": "token rotated"}
