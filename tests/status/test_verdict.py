"""The one verdict: "All Systems Online" or the first thing to fix, in the documented order."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from app.status.verdict import (
    ALL_ONLINE,
    Context,
    PosWatch,
    duration,
    network_layers,
    problems,
    verdict,
)
from app.status.view import browser_address, build_page, setup_values

NOW = 1_800_000_000.0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


HEALTHY = {
    "version": "0.1.0",
    "uptime_s": 7200,
    "device_id": "D-DEMO",
    "site_id": "S-1001",
    "pos": {
        "listen": "0.0.0.0:9000",
        "dialect": "auto",
        "running": True,
        "connections": [
            {
                "peer": "127.0.0.1:50000",
                "dialect": "passport",
                "connected_at": NOW - 600,
                "last_message_at": NOW - 5,
                "messages": 12,
            }
        ],
        "closed_bad_input": 0,
        "overhead_ms": {"p50": 0.5, "p99": 2.0},
        "open_sessions": 0,
    },
    "host": {
        "url": "https://host.example",
        "state": "online",
        "reason": "answering",
        "online": True,
        "last_ok": NOW - 5,
        "last_error": "",
        "unauthorized": False,
        "ok": 10,
        "timeout": 0,
        "error": 0,
    },
    "counters": {"request.GetRewards": 3},
    "outbox": {
        "depth": 0,
        "oldest_pending_s": 0,
        "conflicts": 0,
        "rejected": 0,
        "delivered_since_start": 4,
        "paused": None,
    },
    "journal": {"recovered_from": None, "events": 4, "pending": 0, "decisions": 3},
    "policy": {
        "policy_version": 7,
        "issued_at": _iso(NOW - 86400),
        "expires_at": _iso(NOW + 86400 * 13),
        "key_id": "k1",
        "in_force": True,
        "refused": None,
        "last_error": None,
        "last_refresh_at": _iso(NOW - 60),
        "clock_skew_s": 0.3,
        "clock_problem": None,
    },
    "readers": [{"name": "MagTek", "register_id": "1", "state": "connected", "reads": 2}],
}

# One change per problem, in the verdict's order.
BREAKERS = {
    "pos_down": lambda s: s["pos"].update(running=False),
    "journal_recovered": lambda s: s["journal"].update(recovered_from="journal.db.corrupt-1"),
    "token_revoked": lambda s: s["host"].update(
        state="unauthorized",
        unauthorized=True,
        online=False,
        last_error="host answered 401: token revoked",
    ),
    "host_unreachable": lambda s: s["host"].update(
        state="down", online=False, last_error="cannot reach the host: connection refused"
    ),
    "policy_refused": lambda s: s["policy"].update(refused="bad signature"),
    "backlog": lambda s: s["outbox"].update(depth=120, oldest_pending_s=3 * 3600),
    "reader_gone": lambda s: s["readers"][0].update(state="gone", detail="unplugged"),
    "no_pos": lambda s: s["pos"].update(connections=[]),
}
ORDER = list(BREAKERS)


def status_with(*keys: str) -> dict:
    status = copy.deepcopy(HEALTHY)
    for key in keys:
        BREAKERS[key](status)
    return status


def ctx(**kw) -> Context:
    return Context(now=NOW, **kw)


def test_a_healthy_box_is_all_systems_online():
    result = verdict(status_with(), ctx())
    assert result.ok and result.title == ALL_ONLINE and result.action == ""


@pytest.mark.parametrize("key", ORDER)
def test_each_problem_alone_is_the_verdict_with_an_action(key):
    result = verdict(status_with(key), ctx())
    assert not result.ok and result.key == key
    assert result.title and result.action  # what is wrong and what to do, in plain words


@pytest.mark.parametrize("index", range(len(ORDER) - 1))
def test_the_earlier_problem_wins(index):
    first, later = ORDER[index], ORDER[index + 1 :]
    status = status_with(*later, first)
    assert verdict(status, ctx()).key == first


def test_all_problems_at_once_come_in_the_documented_order():
    # The host link has one state: a refused token is not also "unreachable".
    assert [p.key for p in problems(status_with("token_revoked"), ctx())] == ["token_revoked"]
    without_token = [key for key in ORDER if key != "token_revoked"]
    assert [p.key for p in problems(status_with(*without_token), ctx())] == without_token


def test_policy_expired_and_clock_problem():
    status = status_with()
    status["policy"].update(in_force=False, expires_at=_iso(NOW - 60))
    result = verdict(status, ctx())
    assert result.key == "policy_expired" and "expired" in result.title
    status = status_with()
    status["policy"].update(in_force=False, clock_problem="the box clock is 300 s ahead")
    result = verdict(status, ctx())
    assert result.key == "clock" and "300 s ahead" in result.detail


def test_outbox_paused_is_a_revoked_token():
    status = status_with()
    status["outbox"]["paused"] = "host answered 401: unknown token"
    assert verdict(status, ctx()).key == "token_revoked"


def _check(*layers):
    return {"ok": all(lay["ok"] for lay in layers), "layers": list(layers)}


def test_the_failing_network_layer_is_named_with_its_advice():
    status = status_with("host_unreachable")
    status["network"] = {
        "facts": {"primary": {"address": "203.0.113.7"}},
        "check": _check(
            {"layer": "link", "ok": True, "detail": "eth0 up"},
            {"layer": "gateway", "ok": True, "detail": "203.0.113.1 answers"},
            {
                "layer": "dns",
                "ok": False,
                "detail": "no answer from 203.0.113.53",
                "action": "Check the DNS server set in the site router.",
            },
        ),
    }
    result = verdict(status, ctx())
    assert result.key == "host_unreachable"
    assert result.title == "The central host cannot be reached: the dns check fails"
    assert result.action == "Check the DNS server set in the site router."
    assert result.detail == "no answer from 203.0.113.53"
    # without advice of its own, the layer gets the page's
    del status["network"]["check"]["layers"][2]["action"]
    assert "DNS settings" in verdict(status, ctx()).action


def test_the_link_state_decides_and_the_layered_check_names_the_layer():
    status = status_with()
    status["network"] = {"check": _check({"layer": "tcp", "ok": False, "detail": "refused"})}
    assert verdict(status, ctx()).ok  # the link answers: a stale or flaky check does not win
    status["host"].update(state="down", online=False)
    found = verdict(status, ctx())
    assert found.key == "host_unreachable" and "tcp" in found.title
    status["host"].update(state="degraded", online=True, reason="no answer before the deadline")
    assert verdict(status, ctx()).key == "host_slow"


def test_network_layers_of_the_check_and_of_a_bare_list():
    layers = [
        {"layer": "link", "ok": True, "detail": "not needed", "skipped": True},
        {"layer": "tcp", "ok": True, "ms": 0.4},
        {"layer": "http", "ok": False, "action": "call"},
    ]
    for check in ({"ok": False, "layers": layers}, layers):
        found = network_layers({"check": check})
        assert [(lay.name, lay.ok, lay.skipped) for lay in found] == [
            ("link", True, True),
            ("tcp", True, False),
            ("http", False, False),
        ]
        assert found[1].ms == 0.4 and found[2].action == "call"
    assert network_layers({"check": None}) == [] and network_layers("?") == []


def test_host_not_contacted_yet_is_no_problem():
    status = status_with()
    status["host"].update(state="unknown", online=False, last_error="", last_ok=None)
    assert verdict(status, ctx()).ok


def test_no_pos_only_after_the_idle_time():
    status = status_with("no_pos")
    status["uptime_s"] = 120  # just started: give the POS time to connect
    assert verdict(status, ctx()).ok
    status["uptime_s"] = 7200
    assert verdict(status, ctx(pos_last_seen=NOW - 60)).ok  # seen a minute ago
    result = verdict(status, ctx(pos_last_seen=NOW - 900, pos_idle_s=600))
    assert result.key == "no_pos" and "10 minutes" in result.title
    assert "15 min ago" in result.detail


def test_pos_watch_remembers_the_last_connected_pos():
    watch = PosWatch()
    assert watch.observe(status_with("no_pos"), NOW) is None
    assert watch.observe(status_with(), NOW + 1) == NOW + 1
    assert watch.observe(status_with("no_pos"), NOW + 50) == NOW + 1


def test_missing_and_odd_sections_never_crash():
    assert verdict({}, ctx()).ok
    odd = {"pos": [], "host": "?", "outbox": {"oldest_pending_s": "x"}, "readers": {"a": 1}}
    assert verdict(odd, ctx()).ok
    page = build_page({"network": "?", "readers": [1, None], "policy": []}, "x", ctx())
    assert {s.id for s in page.sections} >= {"pos", "host", "readers", "network"}


def test_the_values_for_the_pos():
    status = status_with()
    assert browser_address("box.local:8080") == "box.local"
    assert browser_address("[::1]:8080") == "::1"
    setup = setup_values(status, "203.0.113.9:8080")
    assert (setup.address, setup.port, setup.warning) == ("203.0.113.9", "9000", "")
    status["network"] = {"facts": {"primary_address": "203.0.113.7"}}
    assert setup_values(status, "localhost:8080").address == "203.0.113.7"
    status["network"] = {"facts": {"primary": {"address": "203.0.113.8"}}}
    assert setup_values(status, "localhost:8080").address == "203.0.113.8"
    # A POS port on loopback only: the values are that address and the real port; the hint
    # is a warning for a browser at the site, a note for one on the box itself.
    status["pos"]["listen"] = "127.0.0.1:9123"
    here = setup_values(status, "localhost")
    assert (here.address, here.port, here.warning) == ("127.0.0.1", "9123", "")
    assert "127.0.0.1 only" in here.note and '[pos] listen = "0.0.0.0:9123"' in here.note
    site = setup_values(status, "192.0.2.10:8080")
    assert site.warning == here.note and site.note == ""
    status["pos"]["listen"] = "[::1]:9001"
    assert '"[::]:9001"' in setup_values(status, "192.0.2.10").warning
    status["pos"]["listen"] = "192.0.2.44:9002"  # one address: the POS must use that one
    assert setup_values(status, "192.0.2.10").address == "192.0.2.44"


def test_advice_follows_where_the_host_is():
    status = status_with()
    status["host"] = {**status["host"], "state": "down", "url": "https://loyalty.example.com"}
    assert "site's internet connection" in verdict(status, ctx()).action
    status["host"]["url"] = "http://127.0.0.1:8700"
    action = verdict(status, ctx()).action
    assert "on this machine (http://127.0.0.1:8700)" in action and "internet" not in action


def test_the_verdict_summary_is_the_pages_words():
    assert verdict(status_with(), ctx()).summary() == {
        "level": "ok",
        "key": "ok",
        "headline": "All Systems Online",
        "detail": "",
        "action": "",
        "also": [],
    }


def test_durations_read_naturally():
    assert [duration(s) for s in (5, 600, 3 * 3600 + 600, 30 * 3600, 4 * 86400)] == [
        "5 s",
        "10 min",
        "3 h 10 min",
        "30 h",
        "4 days",
    ]
