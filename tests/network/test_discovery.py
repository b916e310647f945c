"""Discovery: parsing captured `ip -j` output, then the real thing inside a test namespace."""

from __future__ import annotations

import json
import select
import subprocess
import time

import pytest

from app.network.discovery import (
    Address,
    DnsServer,
    Gateway,
    Interface,
    NetworkFacts,
    Primary,
    build_facts,
    fingerprint,
    host_of,
    parse_default_gateways,
    parse_dns,
    parse_interfaces,
    parse_resolv_conf,
    parse_resolvectl_dns,
    parse_route_get,
)
from app.network.manager import NetworkManager
from app.network.reachability import HostCheck, LayerResult
from tests.network.netns import PYTHON, site_and_box

# Captured on a Debian box with DHCP on eth0 (addresses changed to documentation ranges).
ADDR_JSON = """[
{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue",
 "operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback",
 "address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[
  {"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo",
   "valid_life_time":4294967295,"preferred_life_time":4294967295},
  {"family":"inet6","local":"::1","prefixlen":128,"scope":"host",
   "valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,
 "qdisc":"fq_codel","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether",
 "address":"b8:27:eb:12:34:56","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[
  {"family":"inet","local":"198.51.100.57","prefixlen":24,"broadcast":"198.51.100.255",
   "scope":"global","dynamic":true,"noprefixroute":true,"label":"eth0",
   "valid_life_time":85743,"preferred_life_time":85743},
  {"family":"inet","local":"198.51.100.200","prefixlen":24,"scope":"global","secondary":true,
   "label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},
  {"family":"inet6","local":"2001:db8:1:2:ba27:ebff:fe12:3456","prefixlen":64,
   "scope":"global","dynamic":true,"mngtmpaddr":true,"noprefixroute":true,
   "valid_life_time":2591990,"preferred_life_time":604790},
  {"family":"inet6","local":"fe80::ba27:ebff:fe12:3456","prefixlen":64,"scope":"link",
   "noprefixroute":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":3,"ifname":"wlan0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,
 "qdisc":"pfifo_fast","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether",
 "address":"b8:27:eb:ab:cd:ef","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}
]"""

LINK_JSON = """[
{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,
 "operstate":"UNKNOWN","link_type":"loopback","address":"00:00:00:00:00:00"},
{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,
 "operstate":"UP","link_type":"ether","address":"b8:27:eb:12:34:56"},
{"ifindex":3,"ifname":"wlan0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,
 "operstate":"DOWN","link_type":"ether","address":"b8:27:eb:ab:cd:ef"},
{"ifindex":4,"ifname":"eth1","flags":["BROADCAST","MULTICAST"],"mtu":1500,
 "operstate":"DOWN","link_type":"ether","address":"b8:27:eb:00:00:01"}
]"""

ROUTES4_JSON = """[
{"dst":"default","gateway":"198.51.100.1","dev":"eth0","protocol":"dhcp",
 "prefsrc":"198.51.100.57","metric":100,"flags":[]},
{"dst":"default","gateway":"203.0.113.1","dev":"wlan0","protocol":"dhcp","metric":600,
 "flags":["linkdown"]},
{"dst":"198.51.100.0/24","dev":"eth0","protocol":"kernel","scope":"link",
 "prefsrc":"198.51.100.57","metric":100,"flags":[]}
]"""

ROUTES6_JSON = """[
{"dst":"2001:db8:1:2::/64","dev":"eth0","protocol":"ra","metric":100,"flags":[],"pref":"medium"},
{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":1024,"flags":[],"pref":"medium"},
{"dst":"default","gateway":"fe80::1","dev":"eth0","protocol":"ra","metric":100,"flags":[],
 "pref":"medium"}
]"""

RESOLV_STUB = """# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
nameserver 127.0.0.53
options edns0 trust-ad
search site.example
"""

RESOLVECTL_DNS = """Global:
Link 2 (eth0): 198.51.100.1 2001:db8:1:2::1
Link 3 (wlan0):
"""


def test_interfaces_addresses_and_origin():
    interfaces = parse_interfaces(ADDR_JSON, LINK_JSON)
    assert [i.name for i in interfaces] == ["lo", "eth0", "wlan0", "eth1"]
    lo, eth0, wlan0, eth1 = interfaces
    assert lo.loopback and lo.mac is None and lo.state == "up"
    assert eth0.state == "up" and eth0.carrier and eth0.mac == "b8:27:eb:12:34:56"
    assert wlan0.state == "down" and not wlan0.carrier  # up, but no carrier
    assert eth1.state == "down" and eth1.addresses == []  # only `ip link` lists it
    by_address = {a.address: a for a in eth0.addresses}
    dhcp = by_address["198.51.100.57"]
    assert (dhcp.prefix, dhcp.family, dhcp.dynamic, dhcp.origin) == (24, "ipv4", True, "dhcp")
    assert dhcp.valid_s == 85743
    static = by_address["198.51.100.200"]
    assert (static.dynamic, static.origin, static.valid_s) == (False, "static", None)
    slaac = by_address["2001:db8:1:2:ba27:ebff:fe12:3456"]
    assert (slaac.family, slaac.prefix, slaac.origin) == ("ipv6", 64, "autoconf")
    assert by_address["fe80::ba27:ebff:fe12:3456"].origin == "link-local"
    assert [a.address for a in eth0.usable_addresses] == [
        "198.51.100.57",
        "198.51.100.200",
        "2001:db8:1:2:ba27:ebff:fe12:3456",
    ]


def test_default_gateways_by_metric_ipv4_first():
    gateways = parse_default_gateways(ROUTES4_JSON, "ipv4") + parse_default_gateways(
        ROUTES6_JSON, "ipv6"
    )
    assert [(g.address, g.interface, g.metric, g.protocol) for g in gateways] == [
        ("198.51.100.1", "eth0", 100, "dhcp"),
        ("203.0.113.1", "wlan0", 600, "dhcp"),
        ("fe80::1", "eth0", 100, "ra"),
    ]


def test_multipath_and_unreachable_defaults():
    routes = [
        {
            "dst": "default",
            "metric": 50,
            "nexthops": [
                {"gateway": "192.0.2.1", "dev": "eth0", "weight": 1},
                {"gateway": "192.0.2.2", "dev": "eth1", "weight": 1},
            ],
        },
        {"type": "unreachable", "dst": "default", "metric": 4278198272},
        {"dst": "default", "gateway": "192.0.2.9", "dev": "eth2"},  # added by hand: no protocol
    ]
    gateways = parse_default_gateways(json.dumps(routes))
    assert [(g.address, g.interface, g.metric) for g in gateways] == [
        ("192.0.2.9", "eth2", 0),
        ("192.0.2.1", "eth0", 50),
        ("192.0.2.2", "eth1", 50),
    ]
    assert gateways[0].protocol == "static"
    assert parse_default_gateways("") == []


def test_resolv_conf_and_resolvectl():
    servers, search = parse_resolv_conf(
        "# comment\nnameserver 192.0.2.53 # the router\nnameserver fe80::1%eth0\n"
        "nameserver 192.0.2.53\ndomain old.example\nsearch a.example b.example\n; x\n"
    )
    assert servers == ["192.0.2.53", "fe80::1%eth0"]
    assert search == ["a.example", "b.example"]
    entries = parse_resolvectl_dns(
        "Global: 192.0.2.100#dns.example\nLink 2 (eth0): 198.51.100.1 2001:db8::53\n"
        "Link 3 (wlan0):\nFallback DNS: 9.9.9.9\n"
    )
    assert entries == [
        DnsServer("192.0.2.100", "resolved", None),
        DnsServer("198.51.100.1", "resolved", "eth0"),
        DnsServer("2001:db8::53", "resolved", "eth0"),
    ]


def test_stub_resolver_reports_the_upstream_servers():
    dns = parse_dns(RESOLV_STUB, parse_resolvectl_dns(RESOLVECTL_DNS))
    assert dns.stub_resolver
    assert dns.servers == ["198.51.100.1", "2001:db8:1:2::1"]
    assert dns.search == ["site.example"]
    assert [e.source for e in dns.entries] == ["resolv.conf", "resolved", "resolved"]
    plain = parse_dns("nameserver 192.0.2.1\n")
    assert plain.servers == ["192.0.2.1"] and not plain.stub_resolver


def test_build_facts_primary_address_and_to_dict():
    facts = build_facts(
        ADDR_JSON, LINK_JSON, ROUTES4_JSON, ROUTES6_JSON, RESOLV_STUB, RESOLVECTL_DNS, "box1"
    )
    assert facts.primary == Primary("eth0", "198.51.100.57", 24, "ipv4", "dhcp", "198.51.100.1")
    assert facts.default_gateway == Gateway("198.51.100.1", "eth0", "ipv4", 100, "dhcp")
    assert [i.name for i in facts.connected] == ["eth0"]
    data = json.loads(json.dumps(facts.to_dict()))
    assert data["hostname"] == "box1"
    assert data["primary"]["address"] == "198.51.100.57"
    assert data["dns"]["servers"] == ["198.51.100.1", "2001:db8:1:2::1"]
    eth0 = next(i for i in data["interfaces"] if i["name"] == "eth0")
    assert eth0["addresses"][0] == {
        "address": "198.51.100.57",
        "prefix": 24,
        "family": "ipv4",
        "scope": "global",
        "dynamic": True,
        "origin": "dhcp",
        "valid_s": 85743,
    }


def test_primary_without_default_route_and_without_anything():
    facts = build_facts(ADDR_JSON, LINK_JSON, "[]", "[]", "")
    assert facts.primary == Primary("eth0", "198.51.100.57", 24, "ipv4", "dhcp", None)
    assert facts.default_gateway is None
    empty = build_facts("[]")
    assert empty.primary is None and empty.interfaces == [] and empty.dns.servers == []


def test_route_get_and_host_of():
    route = parse_route_get(
        '[{"dst":"203.0.113.7","gateway":"198.51.100.1","dev":"eth0",'
        '"prefsrc":"198.51.100.57","flags":[],"uid":0,"cache":[]}]'
    )
    assert route == {
        "interface": "eth0",
        "source": "198.51.100.57",
        "gateway": "198.51.100.1",
        "type": "unicast",
    }
    local = parse_route_get(
        '[{"type":"local","dst":"127.0.0.1","dev":"lo","prefsrc":"127.0.0.1","flags":[]}]'
    )
    assert local["type"] == "local" and local["gateway"] is None
    assert host_of("https://host.example:8443/api") == "host.example"
    assert host_of("https://[2001:db8::1]/") == "2001:db8::1"
    assert host_of("[2001:db8::1]") == "2001:db8::1"
    assert host_of("host.example") == "host.example"


def test_fingerprint_ignores_ticking_lifetimes():
    before = json.loads(ADDR_JSON)
    after = json.loads(ADDR_JSON)
    after[1]["addr_info"][0]["valid_life_time"] = 85000
    assert fingerprint(before, LINK_JSON) == fingerprint(after, LINK_JSON)
    after[1]["addr_info"][0]["local"] = "198.51.100.58"
    assert fingerprint(before, LINK_JSON) != fingerprint(after, LINK_JSON)


# ------------------------------------------------------------------ the manager, with fakes


def _facts(address: str) -> NetworkFacts:
    eth0 = Interface("eth0", 2, "up", "UP", True, "02:00:00:00:00:01", 1500, "ether", False)
    eth0.addresses = [Address(address, 24, "ipv4", "global", True, "dhcp")]
    return NetworkFacts(
        interfaces=[eth0],
        gateways=[Gateway("192.0.2.1", "eth0", "ipv4")],
        primary=Primary("eth0", address, 24, "ipv4", "dhcp", "192.0.2.1"),
    )


def _result(ok: bool) -> HostCheck:
    layer = LayerResult("tcp", ok, "seen", "" if ok else "ask the network provider")
    return HostCheck(ok, None if ok else "tcp", [layer], time.time(), "https://host.example")


def test_manager_rediscovers_when_addresses_change_and_reports_flips():
    state = {"links": 1, "address": "192.0.2.10", "ok": True}
    calls = {"discover": 0, "check": 0}

    def discover_fn():
        calls["discover"] += 1
        return _facts(state["address"])

    def check_fn(url, token, facts, **kwargs):
        calls["check"] += 1
        assert token == "tok" and kwargs["device_id"] == "D-1"
        return _result(state["ok"])

    manager = NetworkManager(
        "https://host.example",
        lambda: "tok",
        "D-1",
        poll_s=0.05,
        check_every_s=3600,
        recheck_failed_s=3600,
        discover_fn=discover_fn,
        check_fn=check_fn,
        candidates_fn=lambda: [{"address": "192.0.2.20", "likely_pos": True}],
        links_fn=lambda: state["links"],
        route_fn=lambda url: {"host": "host.example", "interface": "eth0"},
    )
    flips: list[bool] = []
    changes: list[NetworkFacts] = []
    manager.on_checked = lambda check: flips.append(check.ok)
    manager.on_network_change(changes.append)
    assert manager.snapshot()["check"] is None
    manager.start()
    try:
        _wait(lambda: flips == [True])
        assert len(changes) == 1
        time.sleep(0.3)
        assert calls == {"discover": 1, "check": 1}  # nothing changed: no rediscovery
        state.update(links=2, address="192.0.2.11", ok=False)
        _wait(lambda: flips == [True, False])
        assert calls["discover"] == 2 and calls["check"] == 2
        assert changes[-1].primary.address == "192.0.2.11"
        state["ok"] = True
        manager.trigger()
        _wait(lambda: flips == [True, False, True])
    finally:
        manager.stop()
    snap = manager.snapshot()
    assert set(snap) >= {
        "verdict",
        "facts",
        "check",
        "pos_candidates",
        "route_to_host",
        "refreshed_at",
        "checked_at",
    }
    assert snap["verdict"] == "the central host is reachable"
    assert snap["facts"]["primary"]["address"] == "192.0.2.11"
    assert snap["check"]["ok"] is True
    assert snap["pos_candidates"] == [{"address": "192.0.2.20", "likely_pos": True}]
    json.dumps(snap)


def _wait(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ------------------------------------------------------------------ inside a real namespace

DISCOVER_CODE = """
import json, sys
from app.network.discovery import discover, route_to
facts = discover(resolv_conf=sys.argv[1], resolvectl=None)
print(json.dumps({
    "facts": facts.to_dict(),
    "to_site": route_to("192.0.2.1"),
    "to_far": route_to("https://198.51.100.7:8443/v1"),
}))
"""


def test_discovery_inside_a_box_namespace(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\nsearch site.example\n")
    with site_and_box() as net:
        # a second address with a lease time, the way a DHCP client adds it
        net.box.ip(
            "addr", "add", "192.0.2.77/24", "dev", net.box_if,
            "valid_lft", "3600", "preferred_lft", "3600",
        )  # fmt: skip
        done = net.box.python(DISCOVER_CODE, str(resolv))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
    facts = report["facts"]
    names = [i["name"] for i in facts["interfaces"]]
    assert names == ["lo", net.box_if]  # only what the namespace has: not the machine's
    box_if = facts["interfaces"][1]
    assert box_if["state"] == "up" and box_if["carrier"] and box_if["mac"]
    addresses = {a["address"]: a for a in box_if["addresses"] if a["family"] == "ipv4"}
    assert addresses["192.0.2.10"]["prefix"] == 24
    assert addresses["192.0.2.10"]["origin"] == "static"
    assert not addresses["192.0.2.10"]["dynamic"]
    assert addresses["192.0.2.77"]["dynamic"] and addresses["192.0.2.77"]["origin"] == "dhcp"
    assert facts["gateways"][0] == {
        "address": "192.0.2.1",
        "interface": net.box_if,
        "family": "ipv4",
        "metric": 0,
        "protocol": "static",
    }
    assert facts["dns"]["servers"] == ["192.0.2.1"]
    assert facts["dns"]["search"] == ["site.example"]
    primary = facts["primary"]
    assert (primary["interface"], primary["address"], primary["prefix"]) == (
        net.box_if,
        "192.0.2.10",
        24,
    )
    assert primary["gateway"] == "192.0.2.1"
    assert facts["errors"] == []
    to_site = report["to_site"]
    assert (to_site["interface"], to_site["source"], to_site["gateway"]) == (
        net.box_if,
        "192.0.2.10",
        None,
    )
    to_far = report["to_far"]
    assert to_far["host"] == "198.51.100.7"
    assert (to_far["interface"], to_far["source"], to_far["gateway"]) == (
        net.box_if,
        "192.0.2.10",
        "192.0.2.1",
    )


MANAGER_CODE = """
import json, sys, threading
from app.network.manager import NetworkManager
from app.network.reachability import HostCheck
seen = []
changed = threading.Event()
def on_network(facts):
    seen.append(facts)
    if len(seen) >= 2:
        changed.set()
manager = NetworkManager(
    "http://192.0.2.1:9/", lambda: None, "D-NS", poll_s=0.1, check_every_s=3600,
    resolv_conf=sys.argv[1],
    check_fn=lambda url, token, facts, **kw: HostCheck(True, None, [], 0.0, url),
)
manager.on_network_change(on_network)
manager.start()
while not seen:
    threading.Event().wait(0.02)
print("ready", flush=True)
ok = changed.wait(10)
manager.stop()
box = seen[-1].interface(sys.argv[2])
print(json.dumps({"changed": ok, "addresses": [a.address for a in box.addresses]}), flush=True)
"""


def test_manager_notices_a_new_address_inside_a_namespace(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    with site_and_box() as net:
        proc = net.box.popen([PYTHON, "-c", MANAGER_CODE, str(resolv), net.box_if])
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the manager did not start in time"
        assert proc.stdout.readline().strip() == "ready"
        net.box.ip("addr", "add", "192.0.2.11/24", "dev", net.box_if)
        out, err = proc.communicate(timeout=15)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["changed"], err
    assert "192.0.2.11" in report["addresses"] and "192.0.2.10" in report["addresses"]


def test_namespaces_are_removed_even_when_the_test_fails():
    names: list[str] = []
    with pytest.raises(RuntimeError), site_and_box() as net:
        names += [net.site.name, net.box.name]
        raise RuntimeError("boom")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names and not any(name in listed for name in names)


def test_resolve_takes_addresses_as_they_are():
    from app.network.discovery import resolve

    assert resolve("192.0.2.1") == ["192.0.2.1"]  # no lookup at all for an address
    assert resolve("localhost", 2.0)[0] in ("127.0.0.1", "::1")  # from /etc/hosts
