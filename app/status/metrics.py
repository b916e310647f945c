"""`/metrics`: the status dict in the Prometheus text exposition format (version 0.0.4).

Everything comes from one `StatusSource.status()` snapshot (source.py): the service counters (POS
requests by type, their outcomes, offline decisions, journaled events), the host link, the outbox,
the journal, the policy and, when present, card readers and the layered network check.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from app.status.verdict import network_layers, parse_time, reader_name, section

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "connectbox_"

# Service counter names -> (metric, fixed labels, label that takes the rest of the name).
# Matched in order: exact names first, then prefixes (ending in ".").
COUNTER_RULES: tuple[tuple[str, str, dict[str, str], str | None], ...] = (
    ("rewards.granted", "rewards_granted_total", {}, None),
    ("rewards.", "pos_request_outcomes_total", {"type": "GetRewards"}, "outcome"),
    ("finalize.resent", "pos_request_outcomes_total", {"type": "FinalizeRewards"}, None),
    ("journal_errors", "pos_request_outcomes_total", {"type": "any"}, None),
    ("handler_errors", "pos_request_outcomes_total", {"type": "any"}, None),
    ("requests.refused", "pos_request_outcomes_total", {"type": "any"}, None),
    ("request.", "pos_requests_total", {}, "type"),
    ("offline.", "offline_decisions_total", {}, "rule"),
    ("events.journaled.", "events_journaled_total", {}, "event"),
    ("events.delivered_inline", "events_delivered_inline_total", {}, None),
    ("", "service_counter_total", {}, "name"),  # anything new, so nothing is left out
)
FIXED_OUTCOMES = {
    "finalize.resent": "resent",
    "journal_errors": "journal_error",
    "handler_errors": "handler_error",
    "requests.refused": "refused",
}

HELP = {
    "up": ("gauge", "1 while the status listener answers"),
    "info": ("gauge", "Software version and identity of the box"),
    "uptime_seconds": ("gauge", "Seconds since the service started"),
    "pos_running": ("gauge", "1 while the POS port is served"),
    "pos_connections": ("gauge", "POS connections open now"),
    "pos_open_sessions": ("gauge", "Loyalty transactions in progress"),
    "pos_closed_bad_input_total": ("counter", "POS connections closed for unreadable input"),
    "pos_cut_slow_frame_total": ("counter", "POS connections cut: a frame missed its deadline"),
    "pos_refused_over_cap_total": ("counter", "POS connections refused over max_connections"),
    "pos_tls_refused_total": ("counter", "POS connections closed in the TLS handshake"),
    "pos_overhead_ms": ("gauge", "Box overhead per POS request (not waiting for the host)"),
    "pos_requests_total": ("counter", "POS requests received, by message type"),
    "pos_request_outcomes_total": (
        "counter",
        "POS requests that did not get the normal answer path, by type and outcome",
    ),
    "rewards_granted_total": ("counter", "Rewards granted to the POS"),
    "offline_decisions_total": ("counter", "GetRewards decided offline, by policy rule"),
    "events_journaled_total": ("counter", "Transaction events journaled, by event type"),
    "events_delivered_inline_total": ("counter", "Events delivered within the POS deadline"),
    "service_counter_total": ("counter", "Other service counters, by name"),
    "host_online": ("gauge", "1 when the last call to the central host succeeded"),
    "host_unauthorized": ("gauge", "1 when the host refused the device token"),
    "host_state": ("gauge", "The host link's state (online, degraded, down, ...), as a label"),
    "host_calls_total": ("counter", "Calls to the central host, by result"),
    "host_last_success_timestamp_seconds": ("gauge", "Time of the host's last good answer"),
    "host_latency_ms": ("gauge", "Central host call latency"),
    "outbox_depth": ("gauge", "Transaction events not yet delivered to the host"),
    "outbox_oldest_pending_seconds": ("gauge", "Age of the oldest undelivered event"),
    "outbox_conflicts": ("gauge", "Events the host held with different content (409)"),
    "outbox_rejected": ("gauge", "Events the host refused for good"),
    "outbox_delivered_total": ("counter", "Events delivered by the outbox since start"),
    "outbox_paused": ("gauge", "1 while delivery is paused (token refused)"),
    "journal_events": ("gauge", "Transaction events in the journal"),
    "journal_pending": ("gauge", "Journal events pending delivery"),
    "journal_decisions": ("gauge", "GetRewards decisions in the journal"),
    "journal_unreadable": ("gauge", "Durable POS requests kept as received but not understood"),
    "journal_size_bytes": ("gauge", "Journal size on disk, WAL included"),
    "journal_recovered": ("gauge", "1 when a damaged journal was moved aside at start"),
    "policy_in_force": ("gauge", "1 while a valid signed offline policy is in force"),
    "policy_version": ("gauge", "Version of the offline policy held"),
    "policy_expires_timestamp_seconds": ("gauge", "When the offline policy expires"),
    "clock_skew_seconds": ("gauge", "Box clock minus the host's clock"),
    "reader_connected": ("gauge", "1 while the card reader is connected"),
    "reader_reads_total": ("counter", "Card reads, by reader and verdict"),
    "network_check_ok": ("gauge", "Layered host check, layers that apply: 1 passed, 0 failed"),
}


class _Families:
    """Samples grouped by metric, written with their HELP and TYPE lines."""

    def __init__(self) -> None:
        self._samples: dict[str, list[str]] = {}

    def add(self, metric: str, value: Any, labels: dict[str, Any] | None = None) -> None:
        number = _number(value)
        if number is None:
            return
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in (labels or {}).items())
        sample = f"{PREFIX}{metric}{{{text}}}" if text else f"{PREFIX}{metric}"
        self._samples.setdefault(metric, []).append(f"{sample} {number}")

    def render(self) -> str:
        out = []
        for metric, samples in self._samples.items():
            kind, text = HELP.get(metric, ("untyped", metric))
            out.append(f"# HELP {PREFIX}{metric} {text}")
            out.append(f"# TYPE {PREFIX}{metric} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _number(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _quantile(key: str) -> str | None:
    """ "p50" -> "0.5", "p99.9" -> "0.999"."""
    try:
        return str(Decimal(key.removeprefix("p")) / 100) if key.startswith("p") else None
    except InvalidOperation:
        return None


def _quantiles(families: _Families, metric: str, values: Any) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            quantile = _quantile(str(key))
            if quantile is not None:
                families.add(metric, value, {"quantile": quantile})


def counter_metric(name: str) -> tuple[str, dict[str, str]]:
    """The metric and labels of one service counter."""
    for pattern, metric, fixed, label in COUNTER_RULES:
        prefix = pattern.endswith(".") or pattern == ""
        if (prefix and name.startswith(pattern)) or name == pattern:
            labels = dict(fixed)
            if name in FIXED_OUTCOMES:
                labels["outcome"] = FIXED_OUTCOMES[name]
            if label is not None:
                labels[label] = name[len(pattern) :] if prefix else name
            return metric, labels
    raise AssertionError("the last rule matches every name")


def render(status: dict[str, Any]) -> str:
    m = _Families()
    m.add("up", 1)
    info = {k: status.get(k) or "" for k in ("version", "device_id", "site_id")}
    m.add("info", 1, info)
    m.add("uptime_seconds", status.get("uptime_s"))

    pos = section(status, "pos")
    if pos:
        m.add("pos_running", pos.get("running"))
        connections = pos.get("connections")
        m.add("pos_connections", len(connections) if isinstance(connections, list) else None)
        m.add("pos_open_sessions", pos.get("open_sessions"))
        m.add("pos_closed_bad_input_total", pos.get("closed_bad_input"))
        m.add("pos_cut_slow_frame_total", pos.get("cut_slow_frame"))
        m.add("pos_refused_over_cap_total", pos.get("refused_over_cap"))
        m.add("pos_tls_refused_total", pos.get("tls_refused"))
        _quantiles(m, "pos_overhead_ms", pos.get("overhead_ms"))

    for name, value in sorted(section(status, "counters").items()):
        metric, labels = counter_metric(str(name))
        m.add(metric, value, labels)

    host = section(status, "host")
    if host:
        m.add("host_online", host.get("online"))
        if host.get("state"):
            m.add("host_state", 1, {"state": str(host.get("state"))})
        m.add("host_unauthorized", host.get("unauthorized"))
        for result in ("ok", "timeout", "error"):
            m.add("host_calls_total", host.get(result), {"result": result})
        m.add("host_last_success_timestamp_seconds", host.get("last_ok"))
        _quantiles(m, "host_latency_ms", host.get("latency_ms"))

    outbox = section(status, "outbox")
    if outbox:
        m.add("outbox_depth", outbox.get("depth"))
        m.add("outbox_oldest_pending_seconds", outbox.get("oldest_pending_s"))
        m.add("outbox_conflicts", outbox.get("conflicts"))
        m.add("outbox_rejected", outbox.get("rejected"))
        m.add("outbox_delivered_total", outbox.get("delivered_since_start"))
        m.add("outbox_paused", outbox.get("paused") is not None)

    journal = section(status, "journal")
    if journal:
        for key in ("events", "pending", "decisions", "unreadable", "size_bytes"):
            m.add(f"journal_{key}", journal.get(key))
        m.add("journal_recovered", bool(journal.get("recovered_from")))

    policy = section(status, "policy")
    if policy:
        m.add("policy_in_force", policy.get("in_force"))
        m.add("policy_version", policy.get("policy_version"))
        m.add("policy_expires_timestamp_seconds", parse_time(policy.get("expires_at")))
        m.add("clock_skew_seconds", policy.get("clock_skew_s"))

    readers = status.get("readers")
    for reader in readers if isinstance(readers, list) else []:
        if not isinstance(reader, dict):
            continue
        labels = {"reader": reader_name(reader), "register": reader.get("register_id") or ""}
        m.add("reader_connected", str(reader.get("state")) == "connected", labels)
        by_verdict = reader.get("reads_by_verdict")
        reads = reader.get("reads")
        if isinstance(reads, dict):
            by_verdict = reads
        if isinstance(by_verdict, dict):
            for verdict_name, count in sorted(by_verdict.items()):
                m.add("reader_reads_total", count, {**labels, "verdict": verdict_name})
        else:
            m.add("reader_reads_total", reads, {**labels, "verdict": "all"})

    for layer in network_layers(status.get("network")):
        if layer.ok is not None and not layer.skipped:
            m.add("network_check_ok", layer.ok, {"layer": layer.name})
    return m.render()
