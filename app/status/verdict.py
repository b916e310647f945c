"""The status page's one verdict: "All Systems Online", or the one thing to fix first.

`problems()` walks the status dict (as `StatusSource.status()` builds it) through the checks in the
order a technician should work through them; the first problem found is the verdict. Every check
reads the status defensively: a missing or unexpected section is "nothing known", never an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from provisioning.api import is_loopback_host
from provisioning.rfc3339 import parse_rfc3339

ALL_ONLINE = "All Systems Online"
BACKLOG_LIMIT_S = 3600
POS_IDLE_S = 600
GONE_STATES = ("gone", "missing", "disconnected", "unplugged", "error", "failed")


@dataclass(frozen=True)
class Problem:
    key: str
    title: str
    action: str
    detail: str = ""
    section: str = ""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    title: str
    action: str = ""
    detail: str = ""
    key: str = "ok"
    section: str = ""
    others: tuple[Problem, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        """The verdict as `/api/status` gives it, in the page's words."""
        return {
            "level": "ok" if self.ok else "problem",
            "key": self.key,
            "headline": self.title,
            "detail": self.detail,
            "action": self.action,
            "also": [problem.title for problem in self.others],
        }


@dataclass(frozen=True)
class Layer:
    """One layer of the network's host check (link, gateway, dns, tcp, tls, http, api)."""

    name: str
    ok: bool | None  # None: unknown
    detail: str = ""
    action: str = ""  # the network check's own advice when this layer fails
    skipped: bool = False  # the layer does not apply here
    ms: float | None = None


@dataclass(frozen=True)
class Context:
    now: float
    pos_last_seen: float | None = None
    pos_idle_s: float = POS_IDLE_S


def section(status: dict[str, Any], name: str) -> dict[str, Any]:
    value = status.get(name)
    return value if isinstance(value, dict) else {}


# ---- the checks, in the order of the verdict --------------------------------------------------


def _pos_not_serving(status: dict[str, Any], ctx: Context) -> Problem | None:
    pos = section(status, "pos")
    if pos.get("running", True) is not False:
        return None
    return Problem(
        "pos_down",
        "The box is not serving the POS",
        "Restart the service (Technician actions below). If it happens again, power the box off "
        "and on, then call the support desk.",
        f"the POS port {pos.get('listen', '')} is closed".strip(),
        "pos",
    )


def _journal_recovered(status: dict[str, Any], ctx: Context) -> Problem | None:
    recovered = section(status, "journal").get("recovered_from")
    if not recovered:
        return None
    return Problem(
        "journal_recovered",
        "The transaction journal was damaged and has been replaced",
        "Call the support desk. Sales continue; the damaged file is kept on the box for them.",
        f"damaged file kept as {recovered}",
        "software",
    )


def _token_revoked(status: dict[str, Any], ctx: Context) -> Problem | None:
    host = section(status, "host")
    paused = section(status, "outbox").get("paused")
    if not host.get("unauthorized") and not paused:
        return None
    return Problem(
        "token_revoked",
        "The central host refused this box's token",
        "Call the support desk: the box's device token must be renewed. Sales continue with "
        "offline discounts; transactions wait safely on the box.",
        str(paused or host.get("last_error") or ""),
        "host",
    )


# Advice by layer, for a failed layer that brings none of its own.
LAYER_ACTIONS = {
    "link": "Check the box's network cable and the link light on the switch or router port.",
    "gateway": "The site router does not answer: check the router and the cable to it.",
    "dns": "Host names cannot be looked up: check the DNS settings of the site router.",
    "tcp": "The site's internet connection is down, or a firewall blocks the box: check the "
    "router or modem, or call the site's internet provider.",
    "tls": "The secure connection to the host fails: check the box's clock and that no firewall "
    "or proxy intercepts HTTPS.",
    "http": "The network works but the provider's central host does not answer properly: call "
    "the support desk.",
    "api": "The central host refuses this box's requests: call the support desk.",
}
HOST_DOWN_ACTION = (
    "{check} Sales continue: the box decides discounts from its offline policy and keeps every "
    "transaction until the host is back."
)


def check_the_way_to_the_host(status: dict[str, Any]) -> str:
    """Where to look when the host does not answer: the site's internet, or, for a host on
    this machine (a developer's reference host), that host itself."""
    url = str(section(status, "host").get("url") or "")
    host = urlsplit(url).hostname
    if host and is_loopback_host(host):
        return (
            f"The central host is on this machine ({url}): check that it runs (the reference "
            "host: connectbox host-sim), or correct [host] url in the configuration."
        )
    return "Check the site's internet connection (router, modem, cables)."


def network_layers(network: Any) -> list[Layer]:
    """The layers of `status["network"]["check"]` (`{"ok", "failed_layer", "layers": [...]}`,
    each layer `{layer, ok, detail, action, ms, skipped}`; a bare list of layers is taken too)."""
    check = network.get("check") if isinstance(network, dict) else None
    items = check.get("layers") if isinstance(check, dict) else check
    if not isinstance(items, list):
        return []
    layers = []
    for item in items:
        if not isinstance(item, dict):
            continue
        ok = item.get("ok")
        ms = item.get("ms")
        layers.append(
            Layer(
                str(item.get("layer") or item.get("name") or "?"),
                ok if isinstance(ok, bool) else None,
                str(item.get("detail") or ""),
                str(item.get("action") or ""),
                bool(item.get("skipped")),
                float(ms) if isinstance(ms, int | float) else None,
            )
        )
    return layers


def failing_layer(status: dict[str, Any]) -> Layer | None:
    return next((lay for lay in network_layers(status.get("network")) if lay.ok is False), None)


def _host_unreachable(status: dict[str, Any], ctx: Context) -> Problem | None:
    host = section(status, "host")
    # The host link's state decides (unknown before the first answer: no verdict yet; a
    # refused token is the token problem); the layered check only names the failing layer.
    state = host.get("state")
    if state == "degraded":
        return Problem(
            "host_slow",
            "The central host answers too slowly",
            "Nothing to do at the site: sales get the box's own discounts until the host is "
            "quick again. If it lasts more than an hour, call the support desk.",
            str(host.get("reason") or ""),
            "host",
        )
    if state != "down":
        return None
    layer = failing_layer(status)
    if layer is not None:
        return Problem(
            "host_unreachable",
            f"The central host cannot be reached: the {layer.name} check fails",
            layer.action or LAYER_ACTIONS.get(layer.name) or _host_down_action(status),
            layer.detail or str(host.get("last_error") or ""),
            "host",
        )
    return Problem(
        "host_unreachable",
        "The central host cannot be reached",
        _host_down_action(status),
        str(host.get("last_error") or ""),
        "host",
    )


def _host_down_action(status: dict[str, Any]) -> str:
    return HOST_DOWN_ACTION.format(check=check_the_way_to_the_host(status))


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an epoch number or an RFC 3339 string (with its UTC offset); None
    when neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return parse_rfc3339(value).timestamp()
        except ValueError:
            return None
    return None


def _policy_problem(status: dict[str, Any], ctx: Context) -> Problem | None:
    policy = section(status, "policy")
    if not policy:
        return None
    if policy.get("refused"):
        return Problem(
            "policy_refused",
            "A new offline policy from the host was refused",
            "Call the support desk. The box keeps using its last valid policy while it lasts.",
            str(policy["refused"]),
            "policy",
        )
    if policy.get("clock_problem"):
        return Problem(
            "clock",
            "The box's clock is wrong",
            "Offline discounts are stopped until the time is right. Check that the box reaches "
            "the internet (its clock follows network time); if it stays wrong, call the support "
            "desk.",
            str(policy["clock_problem"]),
            "policy",
        )
    expires = parse_time(policy.get("expires_at"))
    if policy.get("policy_version") is not None and policy.get("in_force") is False:
        if expires is not None and expires <= ctx.now:
            return Problem(
                "policy_expired",
                "The signed offline policy has expired",
                "Offline discounts are stopped. Let the box reach the central host so it fetches a "
                "new policy (check the internet connection); if it stays expired, call the "
                "support desk.",
                f"expired {policy.get('expires_at')}",
                "policy",
            )
        return Problem(
            "policy_not_in_force",
            "The signed offline policy is not in force",
            "Offline discounts are stopped. Call the support desk.",
            str(policy.get("last_error") or ""),
            "policy",
        )
    return None


def _backlog_old(status: dict[str, Any], ctx: Context) -> Problem | None:
    outbox = section(status, "outbox")
    oldest = outbox.get("oldest_pending_s") or 0
    if not isinstance(oldest, int | float) or oldest <= BACKLOG_LIMIT_S:
        return None
    depth = outbox.get("depth", 0)
    return Problem(
        "backlog",
        f"{depth} transaction(s) have waited {duration(oldest)} to reach the central host",
        "Nothing is lost: they are kept on the box and sent as soon as the host answers. "
        f"{check_the_way_to_the_host(status)} If the host is reachable and the backlog stays, "
        "call the support desk.",
        "",
        "outbox",
    )


def reader_gone(reader: dict[str, Any]) -> bool:
    state = str(reader.get("state") or "").lower()
    return state in GONE_STATES or reader.get("present") is False


def reader_name(reader: dict[str, Any]) -> str:
    return str(
        reader.get("name") or reader.get("devnode") or reader.get("id") or reader.get("path") or "?"
    )


def _reader_gone(status: dict[str, Any], ctx: Context) -> Problem | None:
    readers = status.get("readers")
    if not isinstance(readers, list):
        return None
    gone = [r for r in readers if isinstance(r, dict) and reader_gone(r)]
    if not gone:
        return None
    reader = gone[0]
    register = reader.get("register_id") or reader.get("register")
    where = f" (register {register})" if register else ""
    return Problem(
        "reader_gone",
        f"Card reader {reader_name(reader)}{where} is not connected",
        "Check the reader's USB cable and plug it back in: the box picks it up again without a "
        "restart. If it stays gone, try another USB port.",
        str(reader.get("detail") or ""),
        "readers",
    )


def _no_pos(status: dict[str, Any], ctx: Context) -> Problem | None:
    pos = section(status, "pos")
    if not pos or pos.get("connections"):
        return None
    uptime = status.get("uptime_s")
    started = ctx.now - uptime if isinstance(uptime, int | float) else None
    seen = [t for t in (ctx.pos_last_seen, parse_time(pos.get("last_connected_at"))) if t]
    since = max(seen) if seen else started
    if since is None or ctx.now - since < ctx.pos_idle_s:
        return None
    minutes = round(ctx.pos_idle_s / 60)
    return Problem(
        "no_pos",
        f"No POS has connected in the last {minutes} minutes",
        "Type the values shown under \u201cValues to type into the POS\u201d into the POS, and "
        "check the network cable between the POS and the site's switch.",
        "last seen " + (duration(ctx.now - since) + " ago" if seen else "never since start"),
        "pos",
    )


CHECKS: tuple[Callable[[dict[str, Any], Context], Problem | None], ...] = (
    _pos_not_serving,
    _journal_recovered,
    _token_revoked,
    _host_unreachable,
    _policy_problem,
    _backlog_old,
    _reader_gone,
    _no_pos,
)


def problems(status: dict[str, Any], ctx: Context) -> list[Problem]:
    found = []
    for check in CHECKS:
        problem = check(status, ctx)
        if problem is not None:
            found.append(problem)
    return found


def verdict(status: dict[str, Any], ctx: Context | None = None) -> Verdict:
    found = problems(status, ctx or Context(now=time.time()))
    if not found:
        return Verdict(True, ALL_ONLINE)
    first, *others = found
    return Verdict(
        False, first.title, first.action, first.detail, first.key, first.section, tuple(others)
    )


class PosWatch:
    """When a POS was last seen connected, as far as the status page has observed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_seen: float | None = None

    def observe(self, status: dict[str, Any], now: float) -> float | None:
        if section(status, "pos").get("connections"):
            with self._lock:
                self.last_seen = now
        return self.last_seen


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {rest // 60} min" if hours < 10 and rest >= 60 else f"{hours} h"
    return f"{seconds // 86400} days"
