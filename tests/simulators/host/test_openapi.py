"""docs/host-api.yaml against host-api.md and against the reference host's real answers."""

from __future__ import annotations

import base64
import gzip
import json
import re
from datetime import UTC, datetime
from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
import requests

from app.programs.ids import card_rule
from tests import host_samples
from tests.conftest import SHARED
from tests.host_samples import CAMEL, item_line, pos_section, rewards_body
from tests.openapi import (
    HOST_API,
    host_request_schema,
    host_response_schema,
    validate_host,
    validate_host_named,
)

SPEC = HOST_API
validate, validate_named = validate_host, validate_host_named
request_schema, response_schema = host_request_schema, host_response_schema
DEMO = "D-DEMO"
AUTH = {"Authorization": "Bearer demo-token"}


def check(reply: requests.Response, path: str, method: str, status: int) -> Any:
    """The reply has the expected status and matches the schema documented for it."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    validate(body, response_schema(path, method, status))
    return body


# The document itself.


def test_spec_is_valid_openapi_3():
    assert SPEC["openapi"].startswith("3.0")
    openapi_spec_validator.validate(SPEC)


def test_every_endpoint_of_the_contract_is_documented():
    documented = {(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops}
    assert documented == {
        ("POST", "/v1/enroll"),
        ("GET", "/v1/devices/{device_id}/config"),
        ("POST", "/v1/rewards"),
        ("POST", "/v1/customers/identify"),
        ("POST", "/v1/transactions"),
        ("POST", "/v1/transactions/batch"),
        ("POST", "/v1/devices/{device_id}/heartbeat"),
        ("POST", "/v1/devices/{device_id}/commands/{command_id}/result"),
        ("POST", "/v1/devices/{device_id}/logs"),
        ("POST", "/v1/devices/{device_id}/token"),
    }
    assert SPEC["paths"]["/v1/enroll"]["post"]["security"] == []
    assert SPEC["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


MONEY_FIELDS = {
    "amount",
    "total",
    "final_total",
    "quantity",
    "unit_price",
    "regular_price",
    "points_redeemed",
    "max_discount_per_transaction",
    "max_offline_discount_total",
}


def _properties(node: Any):
    if isinstance(node, dict):
        yield from (node.get("properties") or {}).items()
        for value in node.values():
            yield from _properties(value)
    elif isinstance(node, list):
        for item in node:
            yield from _properties(item)


def test_money_and_quantities_are_decimal_strings():
    for name in ("Decimal", "Money"):
        schema = SPEC["components"]["schemas"][name]
        assert schema["type"] == "string" and schema["pattern"]
    decimal = re.compile(SPEC["components"]["schemas"]["Decimal"]["pattern"])
    assert decimal.match("10.000") and decimal.match("9") and not decimal.match("1e3")
    for name, schema in _properties(SPEC["components"]["schemas"]):
        if name in MONEY_FIELDS:
            assert schema.get("$ref", "").endswith(("/Decimal", "/Money")), name
    schemas = SPEC["components"]["schemas"]
    assert schemas["Reward"]["properties"]["value"]["$ref"].endswith("/Decimal")
    assert schemas["Program"]["properties"]["discount"]["properties"]["value"]["$ref"].endswith(
        "/Decimal"
    )


def _json_blocks(text: str) -> list[Any]:
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    return [json.loads(block) for block in blocks]


def test_examples_of_host_api_md_match_the_schemas():
    source = SHARED / "host-api.md"
    blocks = _json_blocks(source.read_text(encoding="utf-8"))
    config = next(b for b in blocks if "config_version" in b)
    policy = next(b for b in blocks if "policy_version" in b)
    request = next(b for b in blocks if "basket" in b)
    answer = next(b for b in blocks if "loyalty_id_valid" in b)
    event_extra = next(b for b in blocks if "event" in b)
    validate_named(config, "Config")
    validate_named(policy, "PolicyDocument")
    validate(request, request_schema("/v1/rewards", "post"))
    validate(answer, response_schema("/v1/rewards", "post", 200))
    validate({**request, **event_extra}, request_schema("/v1/transactions", "post"))
    identified = next(b for b in blocks if "balance" in b)
    validate(identified, response_schema("/v1/customers/identify", "post", 200))


def test_schemas_reject_floats_for_money():
    line = {"line_number": 1, "kind": "item", "status": "normal", "amount": 18.98}
    with pytest.raises(jsonschema.ValidationError):
        validate_named(line, "BasketLine")
    with pytest.raises(jsonschema.ValidationError):
        validate_named({"code": "cash", "amount": "60"}, "Tender")  # money has two decimals


# The reference host's real answers.


def rewards_request(phone: str | None = "5124671234") -> dict[str, Any]:
    camel = item_line(
        1, code=CAMEL, description="CAMEL", quantity="1", unit_price="8.99", amount="8.99"
    )
    body = rewards_body(
        phone,
        session_id="LS-9",
        pos=pos_section(pos_transaction_id=None),
        entry_method="scanned",
        source="reader",
        age_verified=True,
        lines=[camel],
    )
    validate(body, request_schema("/v1/rewards", "post"))  # the test speaks the contract too
    return body


def transaction_event(event: str = "finalize") -> dict[str, Any]:
    body = host_samples.transaction_event(
        rewards_request(),
        event=event,
        tenders=[{"code": "credit", "amount": "8.49"}],
        rewards_applied=[{"reward_id": "scan-data-1", "target_line": 1, "amount": "0.50"}],
        decision={"origin": "offline", "policy_version": 7, "rule": "granted"},
        final_total="8.49",
    )
    validate(body, request_schema("/v1/transactions", "post"))
    return body


def test_rewards_answers_match(http, host):
    path = "/v1/rewards"
    answer = check(
        http.post(host.url + path, json=rewards_request(), headers=AUTH), path, "post", 200
    )
    assert answer["rewards"][0]["value"] == "0.50"
    check(
        http.post(host.url + path, json=rewards_request("5125550123"), headers=AUTH),
        path,
        "post",
        200,
    )
    check(http.post(host.url + path, json=rewards_request(None), headers=AUTH), path, "post", 200)
    check(http.post(host.url + path, json=rewards_request()), path, "post", 401)
    check(http.post(host.url + path, json={"device_id": DEMO}, headers=AUTH), path, "post", 422)


def test_identify_answers_match(http, host):
    path = "/v1/customers/identify"
    body = {
        "device_id": DEMO,
        "site_id": "S-1001",
        "session_id": "LS-9",
        "pos": pos_section(pos_transaction_id=None),
        "loyalty_id": {"value": "5124671234", "entry_method": "manual"},
        "purpose": "begin_customer",
    }
    validate(body, request_schema(path, "post"))  # what the box sends
    answer = check(http.post(host.url + path, json=body, headers=AUTH), path, "post", 200)
    assert answer["balance"] == {"points": "0", "value": "0.00"}
    bad = {**body, "purpose": "gossip"}
    check(http.post(host.url + path, json=bad, headers=AUTH), path, "post", 422)
    check(http.post(host.url + path, json=body), path, "post", 401)


def test_transaction_answers_match(http, host):
    path = "/v1/transactions"
    headers = {**AUTH, "Idempotency-Key": "evt-1"}
    event = transaction_event()
    check(http.post(host.url + path, json=event, headers=headers), path, "post", 200)
    check(http.post(host.url + path, json=event, headers=headers), path, "post", 200)
    changed = {**event, "final_total": "8.99"}
    check(http.post(host.url + path, json=changed, headers=headers), path, "post", 409)
    check(
        http.post(
            host.url + path, json={"tenders": []}, headers={**AUTH, "Idempotency-Key": "evt-2"}
        ),
        path,
        "post",
        422,
    )
    check(http.post(host.url + path, json=event, headers=AUTH), path, "post", 400)


def test_batch_answer_matches(http, host):
    path = "/v1/transactions/batch"
    batch = {
        "events": [
            {"idempotency_key": "b-1", "event": transaction_event()},
            {"idempotency_key": "b-2", "event": transaction_event("cancel")},
            {"idempotency_key": "b-1", "event": transaction_event("reverse")},
        ]
    }
    validate(batch, request_schema(path, "post"))
    answer = check(http.post(host.url + path, json=batch, headers=AUTH), path, "post", 200)
    assert [r["status"] for r in answer["results"]] == [200, 200, 409]
    resend = {"events": batch["events"][:1], "resend": True}  # the resend_events command's
    validate(resend, request_schema(path, "post"))
    answer = check(http.post(host.url + path, json=resend, headers=AUTH), path, "post", 200)
    assert answer["results"][0]["status"] == 200
    assert [b["resend"] for b in host.store.batches()] == [False, True]
    with pytest.raises(jsonschema.ValidationError):
        validate({**resend, "resend": "yes"}, request_schema(path, "post"))
    bad = {"events": [{"idempotency_key": "b-3", "event": {"event": "teleport"}}]}
    answer = check(http.post(host.url + path, json=bad, headers=AUTH), path, "post", 200)
    assert answer["results"][0]["status"] == 422


def test_config_and_policy_match(http, host):
    path = "/v1/devices/{device_id}/config"
    url = host.url + path.format(device_id=DEMO)
    config = check(http.get(url, headers=AUTH), path, "get", 200)
    policy = json.loads(base64.b64decode(config["policy"]["document"]))
    validate_named(policy, "PolicyDocument")
    check(http.get(url), path, "get", 401)
    host.store.add_device("D-OTHER", "other-token", "S-2")
    check(http.get(url, headers={"Authorization": "Bearer other-token"}), path, "get", 403)


def test_program_card_rules_match_the_schema():
    """The card rules the box reads (app/programs/ids.py) are the ones the schema describes."""
    good = {"min_length": 8, "ranges": [{"from": "60000000", "to": "60999999"}]}
    program = {"program_id": "centegra", "kind": "points", "card": good}
    validate_named(program, "Program")
    assert card_rule(program) is not None
    for bad in ({"min_length": 0}, {"ranges": [{"from": "6000000A", "to": "60999999"}]}):
        program = {"program_id": "centegra", "kind": "points", "card": bad}
        with pytest.raises(jsonschema.ValidationError):
            validate_named(program, "Program")
        with pytest.raises(ValueError):
            card_rule(program)


def test_enroll_answers_match(http, host):
    path = "/v1/enroll"
    body = {
        "claim_code": "DEMO-0001",
        "serial": "CB-42",
        "model": "cb1",
        "software_version": "0.1.0",
    }
    validate(body, request_schema(path, "post"))
    check(
        http.post(host.url + path, json=body, headers={"Idempotency-Key": "en-1"}),
        path,
        "post",
        200,
    )
    check(
        http.post(host.url + path, json=body, headers={"Idempotency-Key": "en-2"}),
        path,
        "post",
        403,
    )
    check(http.post(host.url + path, json={"serial": "x"}), path, "post", 422)


def test_device_management_answers_match(http, host):
    base = host.url + f"/v1/devices/{DEMO}"
    beat = {
        "status": "degraded",
        "components": {"host": "unreachable"},
        "outbox_depth": 3,
        "oldest_pending_s": 42.5,
        "software_version": "0.1.0",
        "config_version": None,
        "policy_version": None,
        "journal_size_bytes": 421_000_000,
        "journal_events": 180_000,
        "journal_oldest_event_at": "2026-08-25T14:00:00-05:00",
        "clock": datetime.now(UTC).isoformat(),
    }
    heartbeat_path = "/v1/devices/{device_id}/heartbeat"
    validate(beat, request_schema(heartbeat_path, "post"))
    command_id = host.store.queue_command(DEMO, "sync_config")
    answer = check(
        http.post(base + "/heartbeat", json=beat, headers=AUTH), heartbeat_path, "post", 200
    )
    assert answer["commands"][0]["command_id"] == command_id
    check(
        http.post(base + "/heartbeat", json={"status": "?"}, headers=AUTH),
        heartbeat_path,
        "post",
        422,
    )

    result_path = "/v1/devices/{device_id}/commands/{command_id}/result"
    result = {"ok": True, "detail": "config 13 applied"}
    validate(result, request_schema(result_path, "post"))
    url = base + f"/commands/{command_id}/result"
    check(
        http.post(url, json=result, headers={**AUTH, "Idempotency-Key": "res-1"}),
        result_path,
        "post",
        200,
    )
    check(
        http.post(url, json=result, headers={**AUTH, "Idempotency-Key": "res-2"}),
        result_path,
        "post",
        409,
    )
    check(
        http.post(base + "/commands/c-none/result", json=result, headers=AUTH),
        result_path,
        "post",
        404,
    )

    logs_path = "/v1/devices/{device_id}/logs"
    gz = {**AUTH, "Content-Type": "application/gzip", "Idempotency-Key": "log-1"}
    check(
        http.post(base + "/logs", data=gzip.compress(b"x" * 1000), headers=gz),
        logs_path,
        "post",
        200,
    )
    too_big = b"\x1f\x8b" + bytes(5 * 1024 * 1024)
    check(
        http.post(base + "/logs", data=too_big, headers={**gz, "Idempotency-Key": "log-2"}),
        logs_path,
        "post",
        413,
    )

    token_path = "/v1/devices/{device_id}/token"
    check(
        http.post(base + "/token", headers={**AUTH, "Idempotency-Key": "tok-1"}),
        token_path,
        "post",
        200,
    )
