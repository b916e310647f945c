"""`/metrics` in the Prometheus text format: every line parses, the figures are the box's own."""

from __future__ import annotations

import re

import requests

from app.status.metrics import CONTENT_TYPE, counter_metric, render
from tests.status.conftest import sale, wait_for

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\["\\n])*"'
LABELS = rf"\{{(?:{NAME}={LABEL_VALUE}(?:,{NAME}={LABEL_VALUE})*)?\}}"
VALUE = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|NaN|[+-]Inf)"
SAMPLE = re.compile(rf"^({NAME})({LABELS})? ({VALUE})$")
COMMENT = re.compile(rf"^# (?:HELP ({NAME}) .*|TYPE ({NAME}) (counter|gauge|untyped|summary))$")


def parse(text: str) -> dict[str, float]:
    """'name{labels}' -> value; fails on any line that is neither a sample nor a comment, and on a
    family whose samples are not together under its one TYPE line."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: list[str] = []
    for line in text.splitlines():
        comment = COMMENT.match(line)
        if comment:
            if comment.group(2):
                assert comment.group(2) not in typed, f"TYPE twice: {line}"
                typed.append(comment.group(2))
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert typed and name == typed[-1], f"{name} outside its family"
        samples[name + (labels or "")] = float(value)
    return samples


def test_metrics_of_a_real_box_parse_and_count_what_happened(status_site):
    site = status_site()
    sale(site.box)
    assert wait_for(lambda: site.box.outbox.snapshot()["depth"] == 0)
    reply = requests.get(site.url + "/metrics", timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == CONTENT_TYPE
    samples = parse(reply.text)
    assert samples['connectbox_pos_requests_total{type="GetRewards"}'] == 1
    assert samples['connectbox_pos_requests_total{type="FinalizeRewards"}'] == 1
    assert samples['connectbox_events_journaled_total{event="finalize"}'] == 1
    assert samples["connectbox_rewards_granted_total"] == 1
    assert samples['connectbox_host_calls_total{result="ok"}'] >= 2
    assert samples["connectbox_host_online"] == 1
    assert samples["connectbox_outbox_depth"] == 0
    assert samples["connectbox_outbox_oldest_pending_seconds"] == 0
    assert samples["connectbox_journal_events"] == 1
    assert samples["connectbox_journal_size_bytes"] > 0
    assert samples["connectbox_policy_in_force"] == 1
    assert samples["connectbox_pos_running"] == 1
    assert 'connectbox_pos_overhead_ms{quantile="0.99"}' in samples
    # the box's own status server serves the same
    own = requests.get(f"http://127.0.0.1:{site.box.status_port}/metrics", timeout=5)
    assert parse(own.text)['connectbox_pos_requests_total{type="GetRewards"}'] == 1


def test_counter_names_map_to_type_and_outcome():
    assert counter_metric("request.GetRewards") == ("pos_requests_total", {"type": "GetRewards"})
    assert counter_metric("rewards.timeout") == (
        "pos_request_outcomes_total",
        {"type": "GetRewards", "outcome": "timeout"},
    )
    assert counter_metric("finalize.resent") == (
        "pos_request_outcomes_total",
        {"type": "FinalizeRewards", "outcome": "resent"},
    )
    assert counter_metric("journal_errors") == (
        "pos_request_outcomes_total",
        {"type": "any", "outcome": "journal_error"},
    )
    assert counter_metric("offline.scan_data") == ("offline_decisions_total", {"rule": "scan_data"})
    assert counter_metric("brand.new") == ("service_counter_total", {"name": "brand.new"})


def test_readers_host_latency_network_checks_and_escaping():
    status = {
        "counters": {"rewards.host_error": 2, "rewards.granted": 5},
        "host": {"online": False, "ok": 1, "timeout": 0, "error": 2, "latency_ms": {"p50": 40.0}},
        "readers": [
            {"name": 'Mag"Tek\\ \nA', "register_id": "1", "state": "connected", "reads": 4},
            {
                "name": "scanner",
                "register_id": "2",
                "state": "gone",
                "reads_by_verdict": {"id": 3, "reject": 1},
            },
        ],
        "network": {"check": [{"layer": "dns", "ok": False}, {"layer": "link", "ok": True}]},
        "outbox": {"depth": 3, "oldest_pending_s": 7200, "paused": "401"},
    }
    samples = parse(render(status))
    assert (
        samples['connectbox_pos_request_outcomes_total{type="GetRewards",outcome="host_error"}']
        == 2
    )
    assert samples['connectbox_host_latency_ms{quantile="0.5"}'] == 40.0
    escaped = 'reader="Mag\\"Tek\\\\ \\nA",register="1"'
    assert samples[f'connectbox_reader_reads_total{{{escaped},verdict="all"}}'] == 4
    assert samples[f"connectbox_reader_connected{{{escaped}}}"] == 1
    scanner = 'reader="scanner",register="2"'
    assert samples[f'connectbox_reader_reads_total{{{scanner},verdict="id"}}'] == 3
    assert samples[f'connectbox_reader_reads_total{{{scanner},verdict="reject"}}'] == 1
    assert samples[f"connectbox_reader_connected{{{scanner}}}"] == 0
    assert samples['connectbox_network_check_ok{layer="dns"}'] == 0
    assert samples["connectbox_outbox_paused"] == 1
    assert samples["connectbox_outbox_oldest_pending_seconds"] == 7200


def test_an_empty_status_still_renders():
    samples = parse(render({}))
    assert samples["connectbox_up"] == 1
