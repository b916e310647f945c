"""The status page's content: the status dict turned into the verdict and plain sections.

Every section is built on its own and defensively: a section the box does not report yet (or
reports in a shape this page does not know) says "not available yet" and the rest of the page
still shows. The templates only lay out what is built here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from app.status.verdict import (
    Context,
    Layer,
    Verdict,
    duration,
    network_layers,
    parse_time,
    reader_gone,
    reader_name,
    section,
    verdict,
)
from provisioning.api import is_loopback_host

log = logging.getLogger("connectbox.status")

NOT_AVAILABLE = "not available yet"
DASH = "\u2013"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    empty: str = ""
    title: str = ""


@dataclass
class Section:
    id: str
    title: str
    tone: str = ""  # ok | warn | bad | "" (neutral)
    badge: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""
    missing: bool = False
    wide: bool = False  # a full-width card (wide tables)


@dataclass
class Setup:
    address: str
    address_source: str
    port: str
    warning: str = ""  # in yellow: it matters at a site
    note: str = ""  # plain: worth knowing, nothing to fix here


@dataclass
class Page:
    verdict: Verdict
    identity: str
    updated: str
    setup: Setup | None
    sections: list[Section]

    @property
    def layout(self) -> list[list[Section]]:
        """Wide sections alone, the others grouped as they come (laid out in columns)."""
        groups: list[list[Section]] = []
        for item in self.sections:
            if item.wide or not groups or groups[-1][0].wide:
                groups.append([item])
            else:
                groups[-1].append(item)
        return groups


# ---- formatting ---------------------------------------------------------------------------


def when(value: Any, now: float) -> str:
    """'14:03:12 (2 min ago)'; a date when not today; a dash when unknown."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    local = time.localtime(moment)
    same_day = time.localtime(now)[:3] == local[:3]
    stamp = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)
    age = now - moment
    if age < -5:
        return f"{stamp} (in {duration(-age)})"
    return f"{stamp} ({duration(age)} ago)"


def ago(value: Any, now: float) -> str:
    """'12 s ago', for table cells; a dash when unknown."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    age = now - moment
    if -5 <= age < 2:
        return "just now"
    return f"{duration(age)} ago" if age > 0 else when(value, now)


def yes_no(value: Any) -> str:
    if value is None:
        return DASH
    return "yes" if value else "no"


def text(value: Any) -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(text(v) for v in value) or DASH
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def size(value: Any) -> str:
    if not isinstance(value, int | float):
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return DASH


def percentiles(values: Any) -> str:
    if not isinstance(values, dict) or not any(v is not None for v in values.values()):
        return DASH
    return "   ".join(f"{k} {v:.2f} ms" for k, v in values.items() if isinstance(v, int | float))


def money(value: Any) -> str:
    """'1.00' -> '$1.00' (the box's amounts are decimal strings in dollars)."""
    try:
        return f"${Decimal(str(value)):,.2f}" if value not in (None, "") else DASH
    except InvalidOperation:
        return text(value)


def scalar_rows(data: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Rows for a section this page does not know in detail: its simple values by name."""
    rows = []
    for key, value in data.items():
        if key in skip:
            continue
        if isinstance(value, list):
            simple = all(not isinstance(v, dict | list) for v in value)
            value = text(value) if simple else f"{len(value)} entries"
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k} {text(v)}" for k, v in value.items() if not isinstance(v, dict | list)
            )
        rows.append((key.replace("_", " "), text(value)))
    return rows


# ---- sections -----------------------------------------------------------------------------


def pos_section(status: dict[str, Any], now: float) -> Section:
    pos = section(status, "pos")
    if not pos:
        return Section("pos", "POS link", missing=True)
    connections = [c for c in pos.get("connections") or [] if isinstance(c, dict)]
    running = pos.get("running") is not False
    if not running:
        tone, badge = "bad", "not serving"
    elif connections:
        tone, badge = "ok", f"{len(connections)} POS connected"
    else:
        tone, badge = "warn", "no POS connected"
    peers = Table(
        ["POS", "Dialect", "Register", "Connected", "Last message", "Messages"],
        [
            [
                text(c.get("peer")),
                text(c.get("dialect") or "detecting"),
                text(c.get("register") or c.get("register_id") or c.get("registers")),
                ago(c.get("connected_at"), now),
                ago(c.get("last_message_at"), now),
                text(c.get("messages")),
            ]
            for c in connections
        ],
        "No POS is connected right now.",
    )
    told = Table(
        ["POS", "Register", "Told", "When"],
        [
            [
                text(" ".join(filter(None, (t.get("pos"), t.get("vendor"))))),
                text(t.get("register")),
                text(
                    "online: prompt for loyalty"
                    if t.get("prompt_for_loyalty")
                    else "offline: do not prompt"
                ),
                ago(t.get("at"), now),
            ]
            for t in pos.get("online_status_told") or []
            if isinstance(t, dict)
        ],
        "No POS has asked whether the loyalty host is online yet.",
        title="What each POS was last told (Is Loyalty Host Online?)",
    )
    return Section(
        "pos",
        "POS link",
        tone,
        badge,
        rows=[
            ("Listening on", text(pos.get("listen"))),
            ("Serving", yes_no(running)),
            ("Dialect setting", text(pos.get("dialect"))),
            ("Transactions in progress", text(pos.get("open_sessions"))),
            ("Connections closed for bad input", text(pos.get("closed_bad_input"))),
            ("Connections cut for a slow frame", text(pos.get("cut_slow_frame"))),
            ("Connections refused over the cap", text(pos.get("refused_over_cap"))),
            ("TLS", "on" if pos.get("tls") else "off"),
            ("Connections refused in the TLS handshake", text(pos.get("tls_refused"))),
            ("Box overhead per request", percentiles(pos.get("overhead_ms"))),
        ],
        tables=[peers, told],
        wide=True,
    )


def primary_address(status: dict[str, Any]) -> str | None:
    facts = section(section(status, "network"), "facts")
    address = facts.get("primary_address") or section(facts, "primary").get("address")
    return str(address) if address else None


def browser_address(host_header: str) -> str:
    """The host part of the Host header: '10.1.2.3:8080' -> '10.1.2.3', '[::1]:80' -> '::1'."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def setup_values(status: dict[str, Any], host_header: str) -> Setup | None:
    listen = section(status, "pos").get("listen")
    if not isinstance(listen, str) or ":" not in listen:
        return None
    bind, _, port = listen.rpartition(":")
    bind = bind.strip("[]")
    try:
        bound: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(bind)
    except ValueError:
        bound = None
    browser = browser_address(host_header)
    primary = primary_address(status)
    if bound is not None and not bound.is_unspecified:  # the one address the POS can use
        address, source = bind, "the one address the box listens on for the POS"
    elif primary:
        address, source = primary, "the box's address on the site network"
    else:
        address, source = browser, "the address this browser used to reach the box"
    setup = Setup(address, source, port)
    if bound is not None and bound.is_loopback:
        everywhere = "[::]" if bound.version == 6 else "0.0.0.0"
        hint = (
            f"The box listens for the POS on {bind} only: only a POS on the box itself (a "
            f"simulator) can connect. For a POS on the site network, set [pos] listen = "
            f'"{everywhere}:{port}" in the configuration and restart the service.'
        )
        # A warning only for a browser on another machine: a site's POS could not connect
        # either. On the box itself (a developer's demo) it is a note.
        if is_loopback_host(browser):
            setup.note = hint
        else:
            setup.warning = hint
    return setup


# The host link's state as the page shows it: (tone, badge).
HOST_BADGES = {
    "online": ("ok", "online"),
    "degraded": ("warn", "answering slowly"),
    "down": ("bad", "unreachable"),
    "unauthorized": ("bad", "token refused"),
    "not_enrolled": ("warn", "not enrolled"),
    "unknown": ("", "not contacted yet"),
}


def host_section(status: dict[str, Any], now: float) -> Section:
    host = section(status, "host")
    if not host:
        return Section("host", "Central host link", missing=True)
    tone, badge = HOST_BADGES.get(str(host.get("state")), ("", "not contacted yet"))
    calls = ", ".join(f"{k} {host[k]}" for k in ("ok", "timeout", "error") if k in host)
    rows = [
        ("Host", text(host.get("url"))),
        ("Online", yes_no(host.get("online"))),
        ("State", f"{badge} since {when(host.get('since'), now)}" if host.get("since") else badge),
        ("Why", text(host.get("reason"))),
        ("Last success", when(host.get("last_ok"), now)),
        ("Last error", text(host.get("last_error"))),
        ("Calls", calls or DASH),
    ]
    if "latency_ms" in host:
        rows.append(("Latency", percentiles(host.get("latency_ms"))))
    network = section(status, "network")
    layers = network_layers(network)
    tables = []
    if layers:
        checked = network.get("checked_at") or section(network, "check").get("checked_at")
        again = " (running again now)" if host.get("diagnosing") else ""
        rows.append(("Layered check", when(checked, now) + again))
        tables.append(Table(["Check", "Result", "Detail"], [_layer_row(lay) for lay in layers]))
    elif network:
        rows.append(("Layered check", "not run yet"))
    note = "" if network else "Layered connection checks: not available yet."
    return Section("host", "Central host link", tone, badge, rows, tables, note)


def _layer_row(layer: Layer) -> list[str]:
    if layer.ok is False:
        result = "FAILED"
    elif layer.skipped:
        result = "not needed"
    elif layer.ok:
        result = f"ok ({layer.ms:.0f} ms)" if layer.ms else "ok"
    else:
        result = "unknown"
    return [layer.name, result, layer.detail or DASH]


def outbox_section(status: dict[str, Any], now: float) -> Section:
    outbox = section(status, "outbox")
    if not outbox:
        return Section("outbox", "Outbox backlog", missing=True)
    depth = outbox.get("depth") or 0
    oldest = outbox.get("oldest_pending_s") or 0
    if outbox.get("paused") or (isinstance(oldest, int | float) and oldest > 3600):
        tone = "bad"
    elif depth:
        tone = "warn"
    else:
        tone = "ok"
    badge = f"{depth} waiting" if depth else "empty"
    return Section(
        "outbox",
        "Outbox backlog",
        tone,
        badge,
        rows=[
            ("Transactions waiting", text(depth)),
            ("Oldest waiting for", duration(oldest) if depth else DASH),
            ("Delivered since start", text(outbox.get("delivered_since_start"))),
            ("Conflicts (409)", text(outbox.get("conflicts"))),
            ("Refused by the host", text(outbox.get("rejected"))),
            ("Delivery paused", text(outbox.get("paused") or "no")),
        ],
    )


def readers_section(status: dict[str, Any], now: float) -> Section:
    readers = status.get("readers")
    if not isinstance(readers, list):
        return Section("readers", "Card readers", missing=True)
    readers = [r for r in readers if isinstance(r, dict)]
    gone = [r for r in readers if reader_gone(r)]
    if not readers:
        tone, badge = "", "none attached"
    elif gone:
        tone, badge = "bad", f"{len(gone)} not connected"
    else:
        tone, badge = "ok", f"{len(readers)} connected"
    table = Table(
        ["Reader", "Register", "State", "Last read", "Reads", "Last verdict"],
        [
            [
                reader_name(r),
                text(r.get("register_id") or r.get("register")),
                text(r.get("state")) + (f" ({r['detail']})" if r.get("detail") else ""),
                ago(r.get("last_read_at"), now),
                text(r.get("reads")),
                _reader_verdict(r.get("last_verdict")),
            ]
            for r in readers
        ],
        "No card reader is attached.",
    )
    return Section("readers", "Card readers", tone, badge, tables=[table], wide=True)


def _reader_verdict(value: Any) -> str:
    if isinstance(value, dict):  # masked upstream; privacy.redact masked it again
        parts = [value.get("result"), value.get("loyalty_id"), value.get("reason")]
        if "over_21" in value:
            parts.append(f"over 21: {yes_no(value['over_21'])}")
        return " ".join(str(p) for p in parts if p) or DASH
    return text(value)


NETWORK_SHOWN = (
    "setting",
    "facts",
    "check",
    "host_url",
    "online",
    "verdict",
    "route_to_host",
    "pos_candidates",
    "refreshed_at",
    "checked_at",
)


def network_section(status: dict[str, Any], now: float) -> Section:
    network = section(status, "network")
    if not network:
        return Section("network", "Network", missing=True)
    facts = section(network, "facts")
    primary = section(facts, "primary")
    gateways = facts.get("gateways")
    gateway = primary.get("gateway")
    if not gateway and isinstance(gateways, list) and gateways and isinstance(gateways[0], dict):
        gateway = gateways[0].get("address")
    dns = section(facts, "dns")
    address = primary_address(status)
    if address and primary.get("prefix") is not None:
        address = f"{address}/{primary['prefix']}"
    rows = [
        ("Box address", text(address)),
        ("Address setting", _address_setting(section(network, "setting"), now)),
        ("Interface", text(primary.get("interface"))),
        ("Address from", text(primary.get("origin"))),
        ("Gateway", text(gateway)),
        ("DNS servers", text(dns.get("servers"))),
        ("Hostname", text(facts.get("hostname"))),
        ("Route to the host", _route(network.get("route_to_host"))),
        ("Host check", _check_result(network)),
        ("Discovery ran", when(network.get("refreshed_at"), now)),
    ]
    result = section(section(network, "setting"), "result")
    if result:
        outcome = "done" if result.get("ok") else "failed"
        rows.append(("Last address change", f"{outcome}: {text(result.get('message'))}"))
    if facts.get("errors"):
        rows.append(("Discovery problems", text(facts["errors"])))
    rows += scalar_rows(network, skip=NETWORK_SHOWN)
    candidates = [c for c in network.get("pos_candidates") or [] if isinstance(c, dict)]
    candidates.sort(key=lambda c: not c.get("likely_pos"))
    table = Table(
        ["Device on the network", "Maker", "Likely POS", "Seen"],
        [
            [
                text(c.get("address")),
                text(c.get("pos_vendor") or c.get("vendor")),
                yes_no(c.get("likely_pos")),
                text(str(c.get("state") or "").lower()),
            ]
            for c in candidates
        ],
        "No other device seen on the network yet.",
    )
    failed = any(layer.ok is False for layer in network_layers(network))
    if failed:
        tone, badge = "bad", "host check failed"
    elif not facts:
        tone, badge = "warn", "not discovered yet"
    else:
        tone, badge = "ok" if primary else "warn", text(address) if primary else "no address"
    return Section("network", "Network", tone, badge, rows, [table])


def _address_setting(setting: dict[str, Any], now: float) -> str:
    """'fixed 192.168.1.50/24, set by status page at 14:03:12 (2 min ago)', 'DHCP', ..."""
    if not setting:
        return DASH
    static = setting.get("mode") == "static"
    shown = f"fixed {text(setting.get('address'))}" if static else "DHCP"
    if setting.get("source"):
        shown += f", set by {setting['source']} at {when(setting.get('at'), now)}"
    if setting.get("pending"):
        shown += "; a change is being applied"
    if setting.get("managed") is False:
        shown += "; not applied on this machine (no network helper)"
    return shown


@dataclass
class AddressForm:
    address: str = ""
    gateway: str = ""
    dns: str = ""


def address_form(status: dict[str, Any] | None) -> AddressForm:
    """The address form's values: the fixed address in force, else what the box has now."""
    network = section(status or {}, "network")
    setting = section(network, "setting")
    if setting.get("mode") == "static":
        dns = setting.get("dns") or []
        return AddressForm(
            str(setting.get("address") or ""),
            str(setting.get("gateway") or ""),
            ", ".join(str(d) for d in dns),
        )
    facts = section(network, "facts")
    primary = section(facts, "primary")
    if primary.get("family") != "ipv4" or not primary.get("address"):
        return AddressForm()
    servers = section(facts, "dns").get("servers") or []
    return AddressForm(
        f"{primary['address']}/{primary.get('prefix', 24)}",
        str(primary.get("gateway") or ""),
        ", ".join(str(d) for d in servers if ":" not in str(d)),
    )


def _check_result(network: dict[str, Any]) -> str:
    check = section(network, "check")
    if not check:
        return "not run yet"
    if check.get("ok"):
        return "passed"
    return f"failed at {check.get('failed_layer') or '?'} (see Central host link)"


def _route(route: Any) -> str:
    if not isinstance(route, dict):
        return DASH
    if route.get("error"):
        return f"none: {route['error']}"
    via = f"via {route['gateway']}" if route.get("gateway") else "direct"
    kind = f", {route['type']}" if route.get("type") and route["type"] != "unicast" else ""
    return f"{via} on {text(route.get('interface'))}{kind}"


def policy_section(status: dict[str, Any], now: float) -> Section:
    policy = section(status, "policy")
    enrollment = status.get("enrollment")
    if isinstance(enrollment, dict):
        rows = [(f"Enrollment: {k}", v) for k, v in scalar_rows(enrollment)]
    else:
        rows = [("Enrollment", NOT_AVAILABLE)]
    if not policy:
        return Section(
            "policy", "Enrollment and policy", rows=rows, note="Policy: " + NOT_AVAILABLE
        )
    bad = policy.get("refused") or policy.get("clock_problem")
    if bad or (policy.get("policy_version") is not None and not policy.get("in_force")):
        tone, badge = "bad", "offline discounts stopped"
    elif policy.get("in_force"):
        tone, badge = "ok", "in force"
    else:
        tone, badge = "warn", "no policy yet"
    rows += [
        ("Policy version", text(policy.get("policy_version"))),
        ("In force", yes_no(policy.get("in_force"))),
        ("Signed with key", text(policy.get("key_id"))),
        ("Issued", when(policy.get("issued_at"), now)),
        ("Expires", when(policy.get("expires_at"), now)),
        ("Last refresh", when(policy.get("last_refresh_at"), now)),
        ("Refused", text(policy.get("refused"))),
        ("Last error", text(policy.get("last_error"))),
        ("Clock vs host", _skew(policy.get("clock_skew_s"))),
        ("Clock problem", text(policy.get("clock_problem"))),
    ]
    return Section("policy", "Enrollment and policy", tone, badge, rows)


def _skew(value: Any) -> str:
    if not isinstance(value, int | float):
        return DASH
    return f"{abs(value):.1f} s {'ahead' if value > 0 else 'behind'}" if value else "in step"


def software_section(status: dict[str, Any], now: float) -> Section:
    journal = section(status, "journal")
    uptime = status.get("uptime_s")
    os_info = section(status, "os")
    slot = os_info.get("slot")
    rows = [
        ("Version", text(status.get("version"))),
        (
            "System slot",
            f"{str(slot).upper()}: OS {os_info.get('version') or 'unknown'}"
            f" ({os_info.get('variant') or 'unknown'} image)"
            if slot
            else DASH,
        ),
        ("Image manifest", text(os_info.get("manifest"))[:12]),
        ("Running for", duration(uptime) if isinstance(uptime, int | float) else DASH),
        ("Device", text(status.get("device_id"))),
        ("Site", text(status.get("site_id"))),
        ("Journal events", text(journal.get("events"))),
        ("Oldest journal event", when(journal.get("oldest_event_at"), now)),
        ("Journal decisions", text(journal.get("decisions"))),
        ("Journal size", size(journal.get("size_bytes"))),
    ]
    days = journal.get("retention_days")
    if isinstance(days, int):  # undelivered events are kept whatever their age
        rows.append(("Delivered events kept", f"{days} days"))
    unreadable = journal.get("unreadable")
    if unreadable:
        # Kept and sent to the host as received; a count that grows means a POS problem.
        rows.append(
            ("POS requests kept unreadable", f"{unreadable} (sent to the host as received)")
        )
    recovered = journal.get("recovered_from")
    if recovered:
        rows.append(("Damaged journal kept as", text(recovered)))
    tone = "bad" if recovered else "warn" if unreadable else ""
    return Section("software", "Software", tone, text(status.get("version")), rows)


def transactions_section(status: dict[str, Any], now: float) -> Section:
    recent = status.get("recent_transactions")
    if not isinstance(recent, list):
        return Section("transactions", "Recent transactions", missing=True, wide=True)
    rows = []
    for txn in recent:
        if not isinstance(txn, dict):
            continue
        decision = txn.get("decision")
        origin = txn.get("origin") or (
            decision.get("origin") if isinstance(decision, dict) else decision
        )
        rows.append(
            [
                when(txn.get("at") or txn.get("time") or txn.get("timestamp"), now),
                text(txn.get("register_id") or txn.get("register")),
                text(txn.get("masked_id") or txn.get("loyalty_id")),
                text(origin),
                money(txn.get("discount")),
            ]
        )
    table = Table(
        ["Time", "Register", "Loyalty ID", "Decided by", "Discount"], rows, "No transactions yet."
    )
    return Section("transactions", "Recent transactions", tables=[table], wide=True)


SECTIONS: tuple[Callable[[dict[str, Any], float], Section], ...] = (
    pos_section,
    readers_section,
    host_section,
    outbox_section,
    network_section,
    policy_section,
    software_section,
    transactions_section,
)


def _safe_section(builder: Callable[[dict[str, Any], float], Section], status, now) -> Section:
    try:
        return builder(status, now)
    except Exception:
        log.exception("status page: cannot show section %s", builder.__name__)
        name = builder.__name__.removesuffix("_section")
        return Section(name, name.capitalize(), missing=True, note="unexpected data from the box")


UNAVAILABLE = Verdict(
    False,
    "The box could not report its status",
    "Reload the page in a few seconds. If this stays, restart the service (Technician actions "
    "below) and call the support desk.",
    key="status_error",
)


def judge(status: dict[str, Any] | None, ctx: Context) -> Verdict:
    """The page's verdict (also `/api/status`'s): UNAVAILABLE when the box cannot say."""
    if status is None:
        return UNAVAILABLE
    try:
        return verdict(status, ctx)
    except Exception:
        log.exception("status page: cannot judge the status")
        return UNAVAILABLE


def build_page(status: dict[str, Any] | None, host_header: str, ctx: Context) -> Page:
    now = ctx.now
    result = judge(status, ctx)
    if status is None:
        return Page(result, "Connect Box", when(now, now), None, [])
    try:
        setup = setup_values(status, host_header)
    except Exception:
        log.exception("status page: cannot work out the POS values")
        setup = None
    identity = " \u00b7 ".join(
        f"{label} {status[key]}"
        for label, key in (("Device", "device_id"), ("Site", "site_id"))
        if status.get(key)
    )
    sections = [_safe_section(builder, status, now) for builder in SECTIONS]
    return Page(result, identity, time.strftime("%H:%M:%S", time.localtime(now)), setup, sections)
