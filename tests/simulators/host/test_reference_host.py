"""The reference host over real HTTP on 127.0.0.1, as a box would talk to it."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest
import requests

from app.programs.policy import verify_policy
from simulators.host import keys
from simulators.host.runner import start_in_thread
from tests.host_samples import PHONE as VALID_PHONE
from tests.host_samples import rewards_body, transaction_event

DEMO = "D-DEMO"


def call(http, host, method, path, token="demo-token", key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    kwargs.setdefault("timeout", 5)
    return http.request(method, host.url + path, headers=headers, **kwargs)


def finalize_body(phone: str | None = VALID_PHONE, discount: str | None = "1.00") -> dict:
    applied = [{"reward_id": "scan-data-1", "target_line": 1, "amount": discount}]
    return transaction_event(rewards_body(phone), rewards_applied=applied if discount else [])


def assert_error(reply, status, code=None):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code


# Authentication and headers.


def test_every_call_but_enroll_needs_a_token(http, host):
    for method, path in [
        ("POST", "/v1/rewards"),
        ("POST", "/v1/transactions"),
        ("POST", "/v1/transactions/batch"),
        ("GET", f"/v1/devices/{DEMO}/config"),
        ("POST", f"/v1/devices/{DEMO}/heartbeat"),
        ("POST", f"/v1/devices/{DEMO}/commands/c-1/result"),
        ("POST", f"/v1/devices/{DEMO}/logs"),
        ("POST", f"/v1/devices/{DEMO}/token"),
    ]:
        assert_error(call(http, host, method, path, token=None, json={}), 401, "unauthorized")
        assert_error(call(http, host, method, path, token="wrong", json={}), 401)


def test_token_of_another_device_is_forbidden(http, host):
    host.store.add_device("D-OTHER", "other-token", "S-2002")
    assert_error(call(http, host, "GET", f"/v1/devices/{DEMO}/config", "other-token"), 403)


def test_date_header_on_every_answer(http, host):
    for reply in (
        call(http, host, "GET", f"/v1/devices/{DEMO}/config"),
        call(http, host, "GET", f"/v1/devices/{DEMO}/config", token=None),
        call(http, host, "GET", "/v1/nowhere"),
    ):
        sent = parsedate_to_datetime(reply.headers["Date"])
        assert abs((sent - datetime.now(UTC)).total_seconds()) < 60


def test_unknown_path_answers_the_error_shape(http, host):
    assert_error(call(http, host, "GET", "/v1/nowhere"), 404)


# Rewards.


def test_tobacco_sale_with_a_valid_phone_gets_the_discount(http, host):
    body = rewards_body()
    reply = call(http, host, "POST", "/v1/rewards", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["loyalty_id_valid"] is True
    tobacco = [r for r in answer["rewards"] if r["reward_id"].startswith("scan-data")]
    assert tobacco == [
        {
            "reward_id": "scan-data-1",
            "target_line": 1,
            "method": "amount_off",
            "value": "1.00",
            "limit_quantity": 2,
            "receipt_short": "LOYALTY",
            "receipt_long": "TOBACCO LOYALTY DISCOUNT",
        }
    ]
    fuel = [r for r in answer["rewards"] if r["reward_id"].startswith("fuel")]
    assert [(r["method"], r["value"], r["limit_quantity"]) for r in fuel] == [
        ("per_unit_off", "0.10", 20)
    ]
    # $1.00 on the tobacco, 10 gallons at 10 cents.
    assert answer["receipt_lines"] == ["You saved $2.00 today"]
    assert answer["prompt_for_loyalty"] is True
    assert isinstance(answer["display_text"], str) and answer["display_text"]
    seen = http.get(host.url + "/_sim/rewards-requests", timeout=5).json()["requests"]
    assert seen == [body]


@pytest.mark.parametrize("phone", ["5125550123", "12345", "0124671234"])
def test_invalid_phone_gets_no_discount(http, host, phone):
    answer = call(http, host, "POST", "/v1/rewards", json=rewards_body(phone)).json()
    assert answer["loyalty_id_valid"] is False
    assert answer["rewards"] == [] and answer["receipt_lines"] == []


def test_no_loyalty_id_gets_a_prompt_and_no_discount(http, host):
    body = rewards_body(None)
    for loyalty in (None, {"value": None}):
        body["loyalty_id"] = loyalty
        answer = call(http, host, "POST", "/v1/rewards", json=body).json()
        assert answer["loyalty_id_valid"] is False and answer["rewards"] == []
        assert answer["prompt_for_loyalty"] is True
    del body["loyalty_id"]
    assert call(http, host, "POST", "/v1/rewards", json=body).json()["rewards"] == []


def test_daily_limit_counts_discounted_finalizes(http, host):
    for _ in range(5):
        reply = call(
            http,
            host,
            "POST",
            "/v1/transactions",
            key=str(uuid.uuid4()),
            json=finalize_body("(512) 467-1234"),
        )
        assert reply.status_code == 200
    # A sale without a discount does not count.
    call(
        http, host, "POST", "/v1/transactions", key="no-discount", json=finalize_body(discount=None)
    )
    limited = call(http, host, "POST", "/v1/rewards", json=rewards_body()).json()["rewards"]
    assert [r["reward_id"] for r in limited] == ["fuel-2"]  # the daily limit is Scan Data's
    other = call(http, host, "POST", "/v1/rewards", json=rewards_body("2125550200")).json()
    assert any(r["reward_id"].startswith("scan-data") for r in other["rewards"])


def test_rewards_body_is_validated(http, host):
    body = rewards_body()
    del body["basket"]
    assert_error(call(http, host, "POST", "/v1/rewards", json=body), 422)
    body = rewards_body()
    body["occurred_at"] = "yesterday"
    assert_error(call(http, host, "POST", "/v1/rewards", json=body), 422)
    assert_error(call(http, host, "POST", "/v1/rewards", data="not json"), 400)


# Transactions.


def test_transaction_is_stored_once_per_idempotency_key(http, host):
    body = finalize_body()
    first = call(http, host, "POST", "/v1/transactions", key="ev-1", json=body)
    assert first.status_code == 200
    assert first.json() == {"accepted": True, "receipt_lines": ["Loyalty savings $1.00"]}
    # Same key, same body (key order does not matter): the same answer, stored once.
    reordered = dict(reversed(list(body.items())))
    again = call(http, host, "POST", "/v1/transactions", key="ev-1", json=reordered)
    assert again.status_code == 200 and again.json() == first.json()
    # Same key, another body: 409.
    changed = {**body, "final_total": "53.57"}
    assert_error(call(http, host, "POST", "/v1/transactions", key="ev-1", json=changed), 409)
    events = http.get(host.url + "/_sim/events", timeout=5).json()["events"]
    assert [(e["idempotency_key"], e["event"], e["deliveries"]) for e in events] == [
        ("ev-1", "finalize", 3)
    ]
    assert events[0]["body"] == body


def test_transaction_validation(http, host):
    body = finalize_body()
    assert_error(call(http, host, "POST", "/v1/transactions", json=body), 400)  # no key
    del body["event"]
    assert_error(call(http, host, "POST", "/v1/transactions", key="k1", json=body), 422)
    body["event"] = "refund"
    assert_error(call(http, host, "POST", "/v1/transactions", key="k2", json=body), 422)
    body = finalize_body()
    body["rewards_applied"][0]["amount"] = 1.0  # a float, not a decimal string
    assert_error(call(http, host, "POST", "/v1/transactions", key="k3", json=body), 422)
    assert http.get(host.url + "/_sim/events", timeout=5).json()["events"] == []


@pytest.mark.parametrize("event", ["cancel", "reverse"])
def test_cancel_and_reverse_have_no_receipt_lines(http, host, event):
    body = {**finalize_body(), "event": event}
    reply = call(http, host, "POST", "/v1/transactions", key=f"ev-{event}", json=body)
    assert reply.json() == {"accepted": True, "receipt_lines": []}


def test_batch_judges_each_event_as_if_alone(http, host):
    first, second = finalize_body(), finalize_body(discount=None)
    call(http, host, "POST", "/v1/transactions", key="ev-1", json=first)
    invalid = {**second, "event": "teleport"}
    batch = {
        "events": [
            {"idempotency_key": "ev-1", "event": first},  # replay, same body
            {"idempotency_key": "ev-2", "event": second},  # new
            {"idempotency_key": "ev-1", "event": second},  # same key, other body
            {"idempotency_key": "ev-3", "event": invalid},
            {"event": second},  # no key
        ]
    }
    reply = call(http, host, "POST", "/v1/transactions/batch", json=batch)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [(r["idempotency_key"], r["status"]) for r in results] == [
        ("ev-1", 200),
        ("ev-2", 200),
        ("ev-1", 409),
        ("ev-3", 422),
        (None, 422),
    ]
    assert results[0]["receipt_lines"] == ["Loyalty savings $1.00"]
    assert results[1]["receipt_lines"] == []
    # The whole batch again: nothing new is stored.
    again = call(http, host, "POST", "/v1/transactions/batch", json=batch).json()["results"]
    assert [r["status"] for r in again] == [200, 200, 409, 422, 422]
    keys_seen = [e["idempotency_key"] for e in http.get(host.url + "/_sim/events").json()["events"]]
    assert keys_seen == ["ev-1", "ev-2"]


def test_batch_limits(http, host):
    event = finalize_body()
    too_many = {"events": [{"idempotency_key": f"k{i}", "event": event} for i in range(501)]}
    assert_error(call(http, host, "POST", "/v1/transactions/batch", json=too_many), 422)
    assert_error(call(http, host, "POST", "/v1/transactions/batch", json={"events": {}}), 422)
    full = {"events": [{"idempotency_key": f"k{i}", "event": event} for i in range(500)]}
    results = call(http, host, "POST", "/v1/transactions/batch", json=full).json()["results"]
    assert len(results) == 500 and {r["status"] for r in results} == {200}


# Config and the signed policy.


def test_config_has_etag_and_answers_304(http, host):
    path = f"/v1/devices/{DEMO}/config"
    reply = call(http, host, "GET", path)
    assert reply.status_code == 200
    etag = reply.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    config = reply.json()
    assert config["site"]["site_id"] == "S-1001"
    assert call(http, host, "GET", path).headers["ETag"] == etag  # stable
    cached = call(http, host, "GET", path, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["ETag"] == etag
    stale = call(http, host, "GET", path, headers={"If-None-Match": '"old"'})
    assert stale.status_code == 200


def test_signed_policy_verifies_with_the_test_key(http, host):
    config = call(http, host, "GET", f"/v1/devices/{DEMO}/config").json()
    assert config["policy"]["key_id"] == keys.TEST_KEY_ID
    now = datetime.now(UTC)
    doc = verify_policy(config["policy"], {"test-k1": keys.TEST_PUBLIC_KEY_B64}, "S-1001", now)
    expires = datetime.fromisoformat(doc["expires_at"])
    assert 13 <= (expires - now).days <= 14
    program = doc["programs"][0]
    assert program["program_id"] == "scan-data"
    assert program["valid_from"] <= now.date().isoformat() <= program["valid_to"]
    with pytest.raises(Exception, match="site"):
        verify_policy(config["policy"], {"test-k1": keys.TEST_PUBLIC_KEY_B64}, "S-9", now)


def test_policy_file_override(tmp_path):
    policy = {
        "policy_version": 3,
        "programs": [
            {
                "program_id": "p",
                "kind": "scan_data",
                "loyalty_id": "us_phone",
                "eligible": {"upcs": [], "departments": ["TOBACCO"]},
                "discount": {"method": "amount_off", "value": "0.25", "per": "unit"},
            }
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    with start_in_thread(policy_path=str(path)) as other:
        session = requests.Session()
        session.trust_env = False
        headers = {"Authorization": "Bearer demo-token"}
        answer = session.post(
            other.url + "/v1/rewards", json=rewards_body(), headers=headers, timeout=5
        ).json()
        assert [(r["reward_id"], r["value"]) for r in answer["rewards"]] == [("p-1", "0.50")]
        config = session.get(
            other.url + f"/v1/devices/{DEMO}/config", headers=headers, timeout=5
        ).json()
        doc = verify_policy(
            config["policy"], {"test-k1": keys.TEST_PUBLIC_KEY_B64}, "S-1001", datetime.now(UTC)
        )
        assert doc["policy_version"] == 3


# Enrollment.


def test_enroll_with_a_claim_code(http, host):
    body = {
        "claim_code": "DEMO-0001",
        "serial": "CB-0001",
        "model": "cb1",
        "software_version": "0.1.0",
    }
    reply = call(http, host, "POST", "/v1/enroll", token=None, key="enroll-1", json=body)
    assert reply.status_code == 200, reply.text
    enrolled = reply.json()
    assert enrolled["site_id"] == "S-1001" and enrolled["device_id"].startswith("D-")
    assert enrolled["config"]["policy"]["key_id"] == "test-k1"
    # The new token works for the new device.
    mine = call(
        http,
        host,
        "GET",
        f"/v1/devices/{enrolled['device_id']}/config",
        token=enrolled["device_token"],
    )
    assert mine.status_code == 200
    # A lost answer replayed with the same key gets the same enrollment...
    replay = call(http, host, "POST", "/v1/enroll", token=None, key="enroll-1", json=body)
    assert replay.status_code == 200 and replay.json() == enrolled
    # ...but the code itself is used up.
    again = call(http, host, "POST", "/v1/enroll", token=None, key="enroll-2", json=body)
    assert_error(again, 403)
    unknown = call(http, host, "POST", "/v1/enroll", token=None, json={"claim_code": "NOPE"})
    assert_error(unknown, 403)
    assert_error(call(http, host, "POST", "/v1/enroll", token=None, json={}), 422)


# Heartbeat, commands, logs, token.


def heartbeat(http, host, token="demo-token"):
    body = {
        "status": "online",
        "components": {},
        "outbox_depth": 0,
        "oldest_pending_s": 0,
        "software_version": "0.1.0",
        "config_version": 1,
        "policy_version": 7,
        "clock": datetime.now(UTC).isoformat(),
    }
    return call(http, host, "POST", f"/v1/devices/{DEMO}/heartbeat", token=token, json=body)


def test_heartbeat_returns_queued_commands_until_their_result(http, host):
    assert heartbeat(http, host).json() == {"commands": []}
    command_id = host.store.queue_command(DEMO, "upload_logs", {"since": "1h"})
    commands = heartbeat(http, host).json()["commands"]
    assert commands == [{"command_id": command_id, "type": "upload_logs", "args": {"since": "1h"}}]
    assert heartbeat(http, host).json()["commands"] == commands  # until the result arrives
    path = f"/v1/devices/{DEMO}/commands/{command_id}/result"
    result = {"ok": True, "detail": "uploaded 12 KiB"}
    assert call(http, host, "POST", path, key="r-1", json=result).status_code == 200
    assert heartbeat(http, host).json() == {"commands": []}
    # Exactly once: a second result is refused, a replay of the same post is not.
    assert_error(call(http, host, "POST", path, key="r-2", json=result), 409)
    assert_error(call(http, host, "POST", path, json={"ok": False}), 409)
    assert call(http, host, "POST", path, key="r-1", json=result).status_code == 200
    assert host.store.commands()[0]["result"] == result
    assert_error(
        call(http, host, "POST", f"/v1/devices/{DEMO}/commands/c-x/result", json=result), 404
    )


def test_heartbeat_is_validated_and_recorded(http, host):
    assert_error(
        call(http, host, "POST", f"/v1/devices/{DEMO}/heartbeat", json={"status": "sleepy"}), 422
    )
    assert heartbeat(http, host).status_code == 200
    beats = http.get(host.url + "/_sim/heartbeats", timeout=5).json()["heartbeats"]
    assert [b["status"] for b in beats] == ["online"]


def test_sim_can_queue_commands(http, host):
    reply = http.post(host.url + "/_sim/commands", json={"device_id": DEMO, "type": "restart"})
    assert [c["type"] for c in heartbeat(http, host).json()["commands"]] == ["restart"]
    assert reply.json()["command_id"]


def test_logs_upload_and_size_limit(http, host):
    path = f"/v1/devices/{DEMO}/logs"
    gz = {"Content-Type": "application/gzip"}
    small = gzip.compress(b"journal line\n" * 100)
    reply = call(http, host, "POST", path, key="log-1", data=small, headers=dict(gz))
    assert reply.status_code == 200 and reply.json()["accepted"] is True
    assert host.store.logs()[0]["content"] == small
    huge = gzip.compress(b"")[:10] + bytes(5 * 1024 * 1024)
    assert_error(call(http, host, "POST", path, key="log-2", data=huge, headers=dict(gz)), 413)
    plain = call(
        http, host, "POST", path, key="log-3", data=b"text", headers={"Content-Type": "text/plain"}
    )
    assert_error(plain, 415)
    assert_error(
        call(http, host, "POST", path, key="log-4", data=b"not gzip", headers=dict(gz)), 422
    )
    assert len(host.store.logs()) == 1


def test_token_rotation(http, host):
    reply = call(http, host, "POST", f"/v1/devices/{DEMO}/token", key="rot-1")
    assert reply.status_code == 200
    new = reply.json()["device_token"]
    assert new and new != "demo-token"
    # The old token keeps working until the new one has been used...
    assert heartbeat(http, host, "demo-token").status_code == 200
    assert heartbeat(http, host, new).status_code == 200
    # ...then it stops.
    assert_error(heartbeat(http, host, "demo-token"), 401)
    assert heartbeat(http, host, new).status_code == 200


# Test-only fault knobs.


def test_fault_error500(http, host):
    assert http.post(host.url + "/_sim/fault", json={"mode": "error500"}).status_code == 200
    assert_error(call(http, host, "POST", "/v1/rewards", json=rewards_body()), 500)
    assert_error(call(http, host, "POST", "/v1/transactions", key="e1", json=finalize_body()), 500)
    batch = {"events": [{"idempotency_key": "e1", "event": finalize_body()}]}
    assert_error(call(http, host, "POST", "/v1/transactions/batch", json=batch), 500)
    # The host saw the rewards request but stored no event.
    assert len(http.get(host.url + "/_sim/rewards-requests").json()["requests"]) == 1
    assert http.get(host.url + "/_sim/events").json()["events"] == []
    http.post(host.url + "/_sim/fault", json={"mode": "ok"})
    assert call(http, host, "POST", "/v1/rewards", json=rewards_body()).status_code == 200


def test_fault_hang(http, host):
    http.post(host.url + "/_sim/fault", json={"mode": "hang", "seconds": 1})
    with pytest.raises(requests.Timeout):
        call(http, host, "POST", "/v1/rewards", json=rewards_body(), timeout=0.3)
    started = time.monotonic()
    reply = call(http, host, "POST", "/v1/transactions", key="h1", json=finalize_body())
    assert reply.status_code == 200 and time.monotonic() - started >= 0.9
    # Other calls are not held: answered (10 s allowed) while a held one would take 60 s.
    http.post(host.url + "/_sim/fault", json={"mode": "hang", "seconds": 60})
    assert call(http, host, "GET", f"/v1/devices/{DEMO}/config", timeout=10).status_code == 200
    http.post(host.url + "/_sim/fault", json={"mode": "ok"})


def test_fault_knob_is_validated(http, host):
    assert_error(http.post(host.url + "/_sim/fault", json={"mode": "explode"}), 422)
    assert_error(http.post(host.url + "/_sim/fault", json={"mode": "hang", "seconds": -1}), 422)


def test_reset_forgets_everything(http, host):
    call(http, host, "POST", "/v1/transactions", key="r1", json=finalize_body())
    call(http, host, "POST", f"/v1/devices/{DEMO}/token", key="rot")
    http.post(host.url + "/_sim/fault", json={"mode": "error500"})
    assert http.post(host.url + "/_sim/reset").json() == {"reset": True}
    assert http.get(host.url + "/_sim/events").json()["events"] == []
    assert call(http, host, "POST", "/v1/rewards", json=rewards_body()).status_code == 200


def test_stop_releases_a_hanging_request():
    other = start_in_thread()
    other.set_fault("hang", 30)
    arrived = threading.Event()
    app = other.app.wsgi_app

    def noting_arrival(environ, start_response):
        arrived.set()
        return app(environ, start_response)

    other.app.wsgi_app = noting_arrival  # type: ignore[method-assign]
    session = requests.Session()
    session.trust_env = False
    outcome = {}

    def hang():
        try:
            outcome["status"] = session.post(
                other.url + "/v1/rewards",
                json=rewards_body(),
                headers={"Authorization": "Bearer demo-token"},
                timeout=20,
            ).status_code
        except requests.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=hang)
    thread.start()
    assert arrived.wait(10)  # the host holds the request now
    other.stop()
    thread.join(30)
    # Answered: stop() released the held request and let its answer out before closing. Left
    # hanging, the client would have timed out (20 s) or been cut off after the stop gave up.
    assert "status" in outcome, outcome


def test_store_survives_a_restart_in_a_file(tmp_path):
    from simulators.host.store import HostStore

    path = str(tmp_path / "host.db")
    with start_in_thread(store=HostStore(path)) as first:
        session = requests.Session()
        session.trust_env = False
        session.post(
            first.url + "/v1/transactions",
            json=finalize_body(),
            timeout=5,
            headers={"Authorization": "Bearer demo-token", "Idempotency-Key": "p1"},
        )
        first.store.close()
    store = HostStore(path)
    assert [e["idempotency_key"] for e in store.events()] == ["p1"]
    store.close()
