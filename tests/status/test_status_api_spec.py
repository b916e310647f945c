"""docs/status-api.yaml is valid OpenAPI 3 and the box's real answers match it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
import requests
import yaml
from markupsafe import escape

from tests.openapi import json_schema
from tests.status.conftest import sale, wait_for

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "docs" / "status-api.yaml").read_text(encoding="utf-8"))


def validate(instance: Any, path: str, status: int = 200) -> None:
    response = SPEC["paths"][path]["get"]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    root = {**json_schema(schema), "components": json_schema(SPEC["components"])}
    jsonschema.Draft202012Validator(root).validate(instance)


def test_the_document_is_valid_openapi():
    openapi_spec_validator.validate(SPEC)
    assert set(SPEC["paths"]) == {"/healthz", "/api/status", "/metrics"}


def test_a_real_status_answer_matches(status_site):
    site = status_site()
    sale(site.box)
    base = f"http://127.0.0.1:{site.box.status_port}"  # the box's own listener
    reply = requests.get(base + "/api/status", timeout=5)
    assert reply.status_code == 200
    body = reply.json()
    validate(body, "/api/status")
    assert body["counters"]["request.GetRewards"] == 1  # (the POS may still be hanging up)
    site.box.network.check_now()  # the layered check's result in the answer too
    body = requests.get(base + "/api/status", timeout=5).json()
    validate(body, "/api/status")
    assert body["network"]["check"]["layers"]

    # with a POS connected, and while the host is down and events wait in the outbox
    from simulators import pos as sim

    with sim.PosClient("127.0.0.1", site.box.pos_server.port) as pos:
        pos.send(sim.online_status(sim.SHARED_COUNTER.next()))
        validate(requests.get(base + "/api/status", timeout=5).json(), "/api/status")
        requests.post(
            site.box.config.host.url + "/_sim/fault", json={"mode": "error500"}, timeout=5
        )
        sale(site.box, pos=pos)
        assert wait_for(lambda: site.box.outbox.snapshot()["depth"] == 1)
        body = requests.get(base + "/api/status", timeout=5).json()
    validate(body, "/api/status")
    assert "HTTP 500" in body["host"]["last_error"] and body["outbox"]["depth"] == 1


def test_the_verdict_is_the_pages(status_site):
    site = status_site()
    site.extra["readers"] = [{"name": "msr", "register_id": "2", "state": "gone", "reads": 0}]
    body = requests.get(site.url + "/api/status", timeout=5).json()
    validate(body, "/api/status")
    page = requests.get(site.url + "/", timeout=5).text
    verdict = body["verdict"]
    assert verdict["level"] == "problem" and verdict["key"] == "reader_gone"
    assert verdict["headline"] == "Card reader msr (register 2) is not connected"
    for words in (verdict["headline"], verdict["action"]):
        assert str(escape(words)) in page  # as Jinja writes it


def test_sections_still_to_come_are_allowed(status_site):
    site = status_site()
    site.extra.update(
        network={
            "facts": {"primary": {"address": "192.0.2.10"}},
            "check": {"ok": True, "layers": [{"layer": "dns", "ok": True}]},
            "mdns": {"announced": True},
        },
        recent_transactions=[{"at": 1.0, "register_id": "1", "loyalty_id": "******0123"}],
        enrollment={"state": "enrolled"},
        readers=[{"name": "msr", "register_id": "1", "state": "gone", "reads": 0}],
    )
    body = requests.get(site.url + "/api/status", timeout=5).json()
    validate(body, "/api/status")
    assert body["network"]["facts"]["primary"]["address"] == "192.0.2.10"


def test_a_status_that_breaks_the_contract_is_caught():
    with pytest.raises(jsonschema.ValidationError):
        validate({"version": "0.1.0"}, "/api/status")


def test_healthz_and_metrics_match(status_site):
    site = status_site()
    reply = requests.get(site.url + "/healthz", timeout=5)
    validate(reply.json(), "/healthz")
    site.box.pos_server.stop()
    reply = requests.get(site.url + "/healthz", timeout=5)
    assert reply.status_code == 503
    validate(reply.json(), "/healthz", 503)
    metrics = requests.get(site.url + "/metrics", timeout=5)
    documented = SPEC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics.headers["Content-Type"].split(";")[0] in documented
