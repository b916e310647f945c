"""The Box managed by the provider: enrollment with a claim code, heartbeats and commands."""

from __future__ import annotations

import logging
import stat
import time

from app.box import Box
from simulators import pos as sim
from simulators.demo import demo_config
from tests.waiting import wait_for

PHONE = "2142840123"


def _fresh_box(tmp_path, host_url: str, claim: str) -> Box:
    config = demo_config(host_url, 0, 0, tmp_path / "data")
    config.host.token = config.host.device_id = config.host.site_id = ""
    config.provisioning.claim_code = claim
    config.provisioning.serial = "SN-TEST-0001"
    box = Box(config)
    box.start()
    return box


def _tobacco_sale(box: Box):
    counter = sim.SequenceCounter()
    txn = sim.transaction(
        "1", counter.new_transaction(), [sim.item_line(1, "028200003843", 2, "9.49")]
    )
    with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
        return pos.send(sim.get_rewards(counter.next(), txn, PHONE))


def test_fresh_box_enrolls_then_relays_and_is_managed(tmp_path, reference_host):
    box = _fresh_box(tmp_path, reference_host.url, "DEMO-0001")
    try:
        assert wait_for(box.management.enrolled.is_set), box.status()["enrollment"]
        device_id = box.host_client.device_id
        assert device_id and box.status()["enrollment"]["state"] == "enrolled"
        credentials = tmp_path / "data" / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert wait_for(lambda: box.policies.current() is not None)

        answer = _tobacco_sale(box)
        assert [r.reward_id for r in answer.add_rewards] == ["scan-data-1"]
        [sent] = reference_host.store.rewards_requests()
        assert (sent["device_id"], sent["site_id"]) == (device_id, "S-1001")

        # The provider queues commands; the next heartbeat runs them, results come back once.
        reference_host.store.queue_command(device_id, "sync_config", {})
        reference_host.store.queue_command(device_id, "rediscover", {})
        box.management.agent.heartbeat_now()
        assert wait_for(lambda: all(c["result"] for c in reference_host.store.commands(device_id)))
        results = {c["type"]: c["result"] for c in reference_host.store.commands(device_id)}
        assert results["sync_config"]["ok"] is True
        assert "rediscovered" in results["rediscover"]["detail"]
        [beat, *_] = reference_host.store.heartbeats(device_id)
        assert beat["status"] in ("online", "degraded") and "outbox_depth" in beat
    finally:
        box.stop()


def test_wrong_claim_code_is_shown_and_nothing_uses_a_token(tmp_path, reference_host):
    box = _fresh_box(tmp_path, reference_host.url, "WRONG-9999")
    try:
        assert wait_for(lambda: box.status()["enrollment"]["state"] == "claim_rejected")
        answer = _tobacco_sale(box)  # the POS is still answered, without a discount
        assert answer.add_rewards == []
        counter = sim.SequenceCounter()
        txn = sim.transaction("1", counter.new_transaction(), [sim.item_line(1, "0282", 1, "5")])
        with sim.PosClient("127.0.0.1", box.pos_server.port) as pos:
            pos.send(sim.finalize(counter.next(), txn, PHONE))  # acknowledged, kept
        assert reference_host.store.rewards_requests() == []
        assert reference_host.store.heartbeats() == []
        assert reference_host.store.events() == []  # the finalize waits in the journal
        assert box.journal.backlog().depth == 1
        assert not box.management.enrolled.is_set()
        host = box.status()["host"]  # the page names the claim code, not a refused token
        assert host["state"] == "not_enrolled" and not host["unauthorized"]
        assert "claim code" in host["reason"]
    finally:
        box.stop()


def test_enroll_command_from_a_shell(tmp_path, reference_host):
    import subprocess
    import sys

    config = tmp_path / "connectbox.toml"
    config.write_text(
        f'[host]\nurl = "{reference_host.url}"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        '[provisioning]\nserial = "SN-SHELL-1"\n'
    )
    cli = [sys.executable, "-m", "app", "enroll", "--config", str(config)]
    wrong = subprocess.run(
        cli + ["--claim", "NOPE-0000"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 1 and "claim code" in (wrong.stdout + wrong.stderr).lower()
    right = subprocess.run(
        cli + ["--claim", "DEMO-0001"], capture_output=True, text=True, timeout=60
    )
    assert right.returncode == 0, right.stdout + right.stderr
    assert (tmp_path / "data" / "credentials.json").exists()


def test_revoked_token_stops_host_calls_but_sales_are_journaled(tmp_path, reference_host):
    box = _fresh_box(tmp_path, reference_host.url, "DEMO-0001")
    try:
        assert wait_for(box.management.enrolled.is_set)
        device_id = box.host_client.device_id
        reference_host.store.revoke_token(device_id)
        _tobacco_sale(box)  # the first call after the revocation meets the 401
        assert wait_for(lambda: box.status()["host"]["unauthorized"])
        before = len(reference_host.store.rewards_requests())
        for _ in range(3):
            assert _tobacco_sale(box).loyalty_id_text == "ACCEPTED OFFLINE"
        assert len(reference_host.store.rewards_requests()) == before  # not asked again
        assert box.policies.refresh() is False and "refused" in box.policies.last_error
        assert box.journal.stats()["decisions"] >= 4  # every sale still journaled
        from app.status.verdict import verdict

        assert verdict(box.status()).key == "token_revoked"
    finally:
        box.stop()


def test_enrolls_when_the_host_appears_and_never_calls_it_with_a_token_before(tmp_path):
    import socket

    from simulators.host.runner import start_in_thread

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = _fresh_box(tmp_path, f"http://127.0.0.1:{port}", "DEMO-0001")
    host = None
    try:
        assert wait_for(lambda: box.status()["enrollment"]["state"] == "host_unreachable")
        _tobacco_sale(box)  # sales go on meanwhile: journaled, no host call
        time.sleep(1.5)
        host = start_in_thread("127.0.0.1", port)  # the host appears
        assert wait_for(box.management.enrolled.is_set, timeout=20)
        assert host.store.rewards_requests() == []  # the sale before enrollment never went out
        _tobacco_sale(box)
        [sent] = host.store.rewards_requests()
        assert sent["device_id"] == box.host_client.device_id
    finally:
        box.stop()
        if host is not None:
            host.stop()


def test_the_providers_config_takes_effect_without_a_restart_and_after_one(tmp_path):
    from simulators.host.rules import DEFAULT_CONFIG
    from simulators.host.runner import start_in_thread

    config = {
        **DEFAULT_CONFIG,
        "heartbeat_s": 7,
        "pos": {"dialect": "auto", "listen_port": 9000, "deadline_ms": 900},
        "readers": [{"match": {"vendor_id": "0acd"}, "register_id": "2"}],
    }
    host = start_in_thread("127.0.0.1", 0, config=config)
    try:
        for _ in range(2):  # the second box starts from the saved config (the host says 304)
            box_config = demo_config(host.url, 0, 0, tmp_path / "data")
            box = Box(box_config)
            box.start()
            try:
                assert wait_for(lambda b=box: b.service.deadline_s == 0.9)
                assert box.management.agent.snapshot()["interval_s"] == 7
                [binding] = box.readers.bindings
                assert (binding.register_id, binding.match) == ("2", {"vendor_id": "0acd"})
            finally:
                box.stop()
    finally:
        host.stop()


def test_the_providers_bad_values_are_refused_and_the_ones_in_force_stay(tmp_path, caplog):
    from simulators.host.rules import DEFAULT_CONFIG
    from simulators.host.runner import start_in_thread

    config = {
        **DEFAULT_CONFIG,
        "heartbeat_s": 7,
        "pos": {"dialect": "auto", "listen_port": 9000, "deadline_ms": 900},
        "readers": [{"match": {"vendor_id": "0acd"}, "register_id": "2"}],
    }
    host = start_in_thread("127.0.0.1", 0, config=config)  # serves `config` as it is then
    box = Box(demo_config(host.url, 0, 0, tmp_path / "data"))
    box.start()
    try:
        assert wait_for(lambda: box.service.deadline_s == 0.9)
        before = box.readers.bindings
        config.update(
            heartbeat_s=100_000,
            pos={"deadline_ms": 50},
            readers=[{"match": {"vendor_id": "0acd"}}],
            retention_days=1,
        )
        with caplog.at_level(logging.INFO, logger="connectbox.config"):
            ok, detail = box.policies.sync_now()
        assert ok, detail  # the policy is still taken, and the box keeps serving
        assert box.service.deadline_s == 0.9
        assert box.management.agent.snapshot()["interval_s"] == 7
        assert box.readers.bindings == before
        logged = [r.getMessage() for r in caplog.records if r.name == "connectbox.config"]
        assert logged == [
            "config error: [provider] heartbeat_s: must be a whole number from 5 to 86400"
            " (got 100000); the value in force stays",
            "config error: [provider] retention_days: must be a whole number from 2 to 3650"
            " (got 1); the value in force stays",
            "config error: [provider] pos.deadline_ms: must be a whole number from 100 to 10000"
            " (got 50); the value in force stays",
            "config error: [provider readers.0] register_id: missing (required)"
            "; the value in force stays",
        ]
        _tobacco_sale(box)  # still serving
    finally:
        box.stop()
        host.stop()


def test_technician_reenrolls_after_a_revoked_token(tmp_path, reference_host):
    box = _fresh_box(tmp_path, reference_host.url, "DEMO-0001")
    try:
        assert wait_for(box.management.enrolled.is_set)
        old_device = box.host_client.device_id
        reference_host.store.revoke_token(old_device)
        _tobacco_sale(box)
        assert wait_for(lambda: box.status()["host"]["unauthorized"])
        reference_host.store.add_claim_code("SITE-0002", "S-1001")
        box.config.provisioning.claim_code = "SITE-0002"  # the support desk issued a new code
        ok, detail = box.management.reenroll()
        assert ok, detail
        assert not box.status()["host"]["unauthorized"]
        _tobacco_sale(box)
        assert reference_host.store.rewards_requests()[-1]["device_id"] == box.host_client.device_id
    finally:
        box.stop()


def test_update_command_restarts_into_the_new_release_which_reports_it(tmp_path, reference_host):
    """The box that gets `update` switches and restarts; the next process checks its health and
    posts the result once (here the 'next process' is a new Box on the same disk)."""
    import functools
    import http.server
    import os
    import threading

    from provisioning.releases import make_release, sign_artefact
    from simulators.host.keys import TEST_KEY_ID, test_private_key

    root = tmp_path / "software"
    (root / "releases" / "1.0.0" / "bin").mkdir(parents=True)
    (root / "releases" / "1.0.0" / "bin" / "connectbox").write_text("#!/bin/sh\n")
    os.symlink("releases/1.0.0", root / "current")
    source = tmp_path / "src"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "connectbox").write_text("#!/bin/sh\necho 1.1.0\n")
    (source / "bin" / "connectbox").chmod(0o755)
    published = tmp_path / "published"
    published.mkdir()
    artefact = make_release(source, "1.1.0", published)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(published))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def box_on_disk() -> Box:
        config = demo_config(reference_host.url, 0, 0, tmp_path / "data")
        config.provisioning.software_root = root
        box = Box(config)
        box.start()
        assert wait_for(box.management.enrolled.is_set)
        return box

    try:
        first = box_on_disk()
        url = f"http://127.0.0.1:{server.server_address[1]}/{artefact.name}"
        args = {
            "version": "1.1.0",
            "url": url,
            "key_id": TEST_KEY_ID,
            **sign_artefact(artefact, test_private_key()),
        }
        command_id = reference_host.store.queue_command("D-DEMO", "update", args)
        first.management.agent.heartbeat_now()
        assert first.restart_requested  # it switched and restarts into 1.1.0
        assert os.readlink(root / "current").endswith("1.1.0")
        [command] = [
            c for c in reference_host.store.commands("D-DEMO") if c["command_id"] == command_id
        ]
        assert command["result"] is None  # not reported by the process that is going away
        first.stop()

        second = box_on_disk()  # the restarted service
        try:
            assert wait_for(
                lambda: any(
                    c["result"]
                    for c in reference_host.store.commands("D-DEMO")
                    if c["command_id"] == command_id
                ),
                timeout=30,
            )
            [command] = [
                c for c in reference_host.store.commands("D-DEMO") if c["command_id"] == command_id
            ]
            assert command["result"]["ok"] is True, command["result"]
            assert "1.1.0" in command["result"]["detail"]
        finally:
            second.stop()
    finally:
        server.shutdown()


def test_in_the_image_an_update_goes_to_the_update_unit_and_is_reported_once(
    tmp_path, reference_host
):
    """The image's service cannot write its software root: it hands `update` to the update
    unit's socket (a stand-in here), reports the result the unit leaves, then acknowledges it."""
    import json

    from tests.unix_helper import Helper

    root = tmp_path / "software"
    (root / "results").mkdir(parents=True)
    unit = Helper(tmp_path / "update.sock")
    config = demo_config(reference_host.url, 0, 0, tmp_path / "data")
    config.provisioning.software_root = root
    config.provisioning.update_socket = tmp_path / "update.sock"
    box = Box(config)
    box.start()
    try:
        assert wait_for(box.management.enrolled.is_set)
        args = {"version": "1.1.0", "url": "https://x/r.tar.gz", "sha256": "ab", "signature": "c"}
        command_id = reference_host.store.queue_command("D-DEMO", "update", args)
        box.management.agent.heartbeat_now()
        assert wait_for(lambda: unit.requests)
        assert json.loads(unit.requests[0]) == {
            "action": "apply",
            "command_id": command_id,
            "args": args,
        }

        def result():
            [command] = [
                c for c in reference_host.store.commands("D-DEMO") if c["command_id"] == command_id
            ]
            return command["result"]

        assert result() is None  # deferred: the unit is at work
        done = {"command_id": command_id, "state": "done", "ok": True, "detail": "1.0 -> 1.1.0"}
        (root / "results" / f"{command_id}.json").write_text(json.dumps(done))
        assert wait_for(lambda: result() is not None, timeout=30)
        assert result() == {"ok": True, "detail": "1.0 -> 1.1.0"}
        assert wait_for(lambda: len(unit.requests) >= 2, timeout=30)
        assert json.loads(unit.requests[1]) == {"action": "acknowledge", "command_id": command_id}
    finally:
        box.stop()
        unit.close()
