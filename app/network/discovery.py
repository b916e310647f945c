"""What the box has on the site network: interfaces and addresses, default gateway, DNS servers.

Facts come from iproute2's JSON output (`ip -j link`, `ip -j addr`, `ip -j route`), from
/etc/resolv.conf and, when systemd-resolved runs, from `resolvectl dns`. The parsing functions
take the captured text or JSON and never run anything, so they are tested with captured output;
`discover()` and `route_to()` are the only parts that run commands (each with a timeout).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

IP = "ip"
RESOLV_CONF = Path("/etc/resolv.conf")
COMMAND_TIMEOUT_S = 3.0
FOREVER = 4294967295  # iproute2's "forever" lifetime
STUB_RESOLVERS = {"127.0.0.53", "127.0.0.54"}  # systemd-resolved's local stubs


class DiscoveryError(Exception):
    """A command needed for discovery is missing, failed or timed out."""


@dataclass
class Address:
    address: str
    prefix: int
    family: str  # "ipv4" | "ipv6"
    scope: str  # "global" | "link" | "host" | ...
    dynamic: bool  # handed out with a lifetime (DHCP, SLAAC) rather than configured
    origin: str  # "dhcp" | "autoconf" | "static" | "link-local" | "loopback"
    valid_s: int | None = None  # remaining lifetime, None for forever

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass
class Interface:
    name: str
    index: int
    state: str  # "up" when administratively up and with a carrier (cable in), else "down"
    operstate: str
    carrier: bool
    mac: str | None
    mtu: int | None
    kind: str  # iproute2's link_type: "ether", "loopback", "none", ...
    loopback: bool
    addresses: list[Address] = field(default_factory=list)

    @property
    def usable_addresses(self) -> list[Address]:
        """Addresses that can reach beyond the link: not loopback, not link-local."""
        return [a for a in self.addresses if a.scope == "global"]


@dataclass
class Gateway:
    address: str
    interface: str | None
    family: str
    metric: int = 0
    protocol: str = ""  # how the route was made: "dhcp", "ra", "static", "boot", "kernel"


@dataclass
class DnsServer:
    address: str
    source: str  # "resolv.conf" | "resolved"
    interface: str | None = None  # systemd-resolved's per-link servers


@dataclass
class DnsFacts:
    servers: list[str] = field(default_factory=list)
    """The servers that actually answer the box's queries (upstream of a local stub)."""
    search: list[str] = field(default_factory=list)
    entries: list[DnsServer] = field(default_factory=list)
    stub_resolver: bool = False  # resolv.conf points at systemd-resolved's 127.0.0.53


@dataclass
class Primary:
    """The box's address: the one on the default route's interface."""

    interface: str
    address: str
    prefix: int
    family: str
    origin: str
    gateway: str | None


@dataclass
class NetworkFacts:
    hostname: str = ""
    interfaces: list[Interface] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    dns: DnsFacts = field(default_factory=DnsFacts)
    primary: Primary | None = None
    errors: list[str] = field(default_factory=list)
    collected_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    @property
    def default_gateway(self) -> Gateway | None:
        return self.gateways[0] if self.gateways else None

    @property
    def connected(self) -> list[Interface]:
        """Interfaces that are up, not loopback, and have an address beyond the link."""
        return [
            i for i in self.interfaces if i.state == "up" and not i.loopback and i.usable_addresses
        ]


# ---------------------------------------------------------------- parsing (no side effects)


def load_json(data: str | bytes | list[Any] | None) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, str | bytes):
        text = data.decode() if isinstance(data, bytes) else data
        return json.loads(text) if text.strip() else []
    return data


def _family(name: str) -> str:
    return "ipv6" if name == "inet6" else "ipv4"


def parse_addresses(addr_info: list[dict[str, Any]]) -> list[Address]:
    addresses = []
    for info in addr_info:
        local = info.get("local")
        if not local or info.get("family") not in ("inet", "inet6"):
            continue
        family = _family(info["family"])
        scope = str(info.get("scope", "global"))
        dynamic = bool(info.get("dynamic"))
        if scope == "host":
            origin = "loopback"
        elif scope == "link":
            origin = "link-local"
        elif dynamic:
            origin = "dhcp" if family == "ipv4" else "autoconf"
        else:
            origin = "static"
        valid = info.get("valid_life_time")
        addresses.append(
            Address(
                address=str(local),
                prefix=int(info.get("prefixlen", 32 if family == "ipv4" else 128)),
                family=family,
                scope=scope,
                dynamic=dynamic,
                origin=origin,
                valid_s=None if valid in (None, FOREVER) else int(valid),
            )
        )
    return addresses


def _interface(entry: dict[str, Any]) -> Interface:
    flags = set(entry.get("flags", []))
    loopback = "LOOPBACK" in flags or entry.get("link_type") == "loopback"
    carrier = "LOWER_UP" in flags
    up = "UP" in flags and (carrier or loopback)
    mac = None if loopback else (entry.get("address") or None)
    return Interface(
        name=str(entry.get("ifname", "")),
        index=int(entry.get("ifindex", 0)),
        state="up" if up else "down",
        operstate=str(entry.get("operstate", "UNKNOWN")),
        carrier=carrier,
        mac=mac,
        mtu=entry.get("mtu"),
        kind=str(entry.get("link_type", "")),
        loopback=loopback,
    )


def parse_interfaces(
    addr_json: str | bytes | list[Any] | None, link_json: str | bytes | list[Any] | None = None
) -> list[Interface]:
    """Interfaces from `ip -j addr` (which carries link details too), completed by `ip -j link`
    for interfaces that `ip addr` did not list."""
    by_name: dict[str, Interface] = {}
    for entry in load_json(link_json):
        iface = _interface(entry)
        by_name[iface.name] = iface
    for entry in load_json(addr_json):
        iface = _interface(entry)
        iface.addresses = parse_addresses(entry.get("addr_info", []))
        by_name[iface.name] = iface
    return sorted(by_name.values(), key=lambda i: i.index)


def _is_default(route: dict[str, Any]) -> bool:
    return route.get("dst") in ("default", "0.0.0.0/0", "::/0")


def parse_default_gateways(
    routes_json: str | bytes | list[Any] | None, family: str | None = None
) -> list[Gateway]:
    """Default gateways from `ip -j route` (or `ip -j -6 route`), lowest metric first."""
    gateways = []
    for route in load_json(routes_json):
        if not _is_default(route) or route.get("type", "unicast") != "unicast":
            continue
        hops = route.get("nexthops") or [route]
        for hop in hops:
            address = hop.get("gateway")
            if not address:
                continue
            fam = family or ("ipv6" if ":" in address else "ipv4")
            gateways.append(
                Gateway(
                    address=str(address),
                    interface=hop.get("dev", route.get("dev")),
                    family=fam,
                    metric=int(route.get("metric", 0)),
                    # iproute2 leaves out the protocol of routes added by hand ("boot")
                    protocol=str(route.get("protocol", "static")),
                )
            )
    gateways.sort(key=lambda g: (g.family != "ipv4", g.metric))
    return gateways


def parse_default_sources(routes_json: str | bytes | list[Any] | None) -> dict[str, str]:
    """The preferred source address (`prefsrc`) of each default route, by interface."""
    sources = {}
    for route in load_json(routes_json):
        if _is_default(route) and route.get("prefsrc") and route.get("dev"):
            sources.setdefault(str(route["dev"]), str(route["prefsrc"]))
    return sources


def parse_resolv_conf(text: str) -> tuple[list[str], list[str]]:
    """(nameservers, search domains) from resolv.conf text."""
    servers: list[str] = []
    search: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        parts = line.split()
        if len(parts) < 2:
            continue
        if parts[0] == "nameserver":
            server = parts[1]
            if server not in servers:
                servers.append(server)
        elif parts[0] in ("search", "domain"):
            search = parts[1:]  # the last search/domain line wins, as in the resolver
    return servers, search


def parse_resolvectl_dns(text: str) -> list[DnsServer]:
    """Servers from `resolvectl dns`: lines "Global: a b" and "Link 2 (eth0): a b"."""
    entries = []
    for raw in text.splitlines():
        head, sep, tail = raw.partition(":")
        if not sep or not (head.startswith("Global") or head.startswith("Link")):
            # IPv6 addresses contain ':' too, but every line starts with its scope
            continue
        interface = None
        if head.startswith("Link") and "(" in head and ")" in head:
            interface = head[head.index("(") + 1 : head.rindex(")")]
        for token in tail.split():
            address = token.split("#", 1)[0]
            if address.startswith("[") and "]" in address:
                address = address[1 : address.index("]")]
            if is_ip(address.split("%", 1)[0]):
                entries.append(DnsServer(address, "resolved", interface))
    return entries


def parse_dns(resolv_text: str, resolved: list[DnsServer] | None = None) -> DnsFacts:
    servers, search = parse_resolv_conf(resolv_text)
    entries = [DnsServer(s, "resolv.conf") for s in servers]
    entries += resolved or []
    stub = bool(servers) and all(s in STUB_RESOLVERS for s in servers)
    effective: list[str] = []
    for entry in entries:
        if entry.source == "resolv.conf" and entry.address in STUB_RESOLVERS and resolved:
            continue  # the stub forwards to the servers resolved lists
        if entry.address not in effective:
            effective.append(entry.address)
    return DnsFacts(servers=effective, search=search, entries=entries, stub_resolver=stub)


def choose_primary(interfaces: list[Interface], gateways: list[Gateway], sources: dict[str, str]):
    """The address on the default route's interface (its `prefsrc` when the route names one);
    without a default route, the first global address of a connected interface."""
    by_name = {i.name: i for i in interfaces}
    for gateway in gateways:
        iface = by_name.get(gateway.interface or "")
        if iface is None:
            continue
        candidates = [a for a in iface.usable_addresses if a.family == gateway.family]
        preferred = sources.get(iface.name)
        chosen = next((a for a in candidates if a.address == preferred), None)
        chosen = chosen or (candidates[0] if candidates else None)
        if chosen:
            return Primary(
                iface.name,
                chosen.address,
                chosen.prefix,
                chosen.family,
                chosen.origin,
                gateway.address,
            )
    for iface in interfaces:
        if iface.state != "up" or iface.loopback:
            continue
        addresses = sorted(iface.usable_addresses, key=lambda a: a.family != "ipv4")
        if addresses:
            a = addresses[0]
            return Primary(iface.name, a.address, a.prefix, a.family, a.origin, None)
    return None


def build_facts(
    addr_json: Any,
    link_json: Any = None,
    routes4_json: Any = None,
    routes6_json: Any = None,
    resolv_text: str = "",
    resolvectl_text: str | None = None,
    hostname: str = "",
    errors: list[str] | None = None,
) -> NetworkFacts:
    """Everything `discover()` reports, from captured command output."""
    interfaces = parse_interfaces(addr_json, link_json)
    gateways = parse_default_gateways(routes4_json, "ipv4") + parse_default_gateways(
        routes6_json, "ipv6"
    )
    gateways.sort(key=lambda g: (g.family != "ipv4", g.metric))
    sources = {**parse_default_sources(routes6_json), **parse_default_sources(routes4_json)}
    resolved = parse_resolvectl_dns(resolvectl_text) if resolvectl_text else None
    return NetworkFacts(
        hostname=hostname,
        interfaces=interfaces,
        gateways=gateways,
        dns=parse_dns(resolv_text, resolved),
        primary=choose_primary(interfaces, gateways, sources),
        errors=list(errors or []),
    )


def parse_route_get(route_json: Any) -> dict[str, Any]:
    """Interface, source address and gateway from `ip -j route get ADDRESS`."""
    routes = load_json(route_json)
    if not routes:
        return {"interface": None, "source": None, "gateway": None, "type": None}
    route = routes[0]
    return {
        "interface": route.get("dev"),
        "source": route.get("prefsrc"),
        "gateway": route.get("gateway"),
        "type": route.get("type", "unicast"),
    }


def fingerprint(addr_json: Any, link_json: Any = None) -> tuple[Any, ...]:
    """What matters about links and addresses, without counters and lifetimes that tick."""
    return tuple(
        (
            i.name,
            i.state,
            i.mac,
            tuple(sorted((a.address, a.prefix) for a in i.addresses)),
        )
        for i in parse_interfaces(addr_json, link_json)
    )


# ---------------------------------------------------------------- commands


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def run_command(argv: list[str], timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError as exc:
        raise DiscoveryError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DiscoveryError(f"{' '.join(argv)} took longer than {timeout_s:g} s") from exc
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit code {done.returncode}"
        raise DiscoveryError(f"{' '.join(argv)}: {message}")
    return done.stdout


def run_ip(*args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> list[dict[str, Any]]:
    return load_json(run_command([IP, "-j", *args], timeout_s))


def read_links(timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[Any, Any]:
    """(`ip -j addr`, `ip -j link`) as parsed JSON: the input of `fingerprint()`."""
    return run_ip("addr", "show", timeout_s=timeout_s), run_ip("link", "show", timeout_s=timeout_s)


def discover(
    resolv_conf: Path | str = RESOLV_CONF,
    resolvectl: str | None = "resolvectl",
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> NetworkFacts:
    """Collect the facts now. A failing part is reported in `errors`, never raised."""
    errors: list[str] = []

    def ip_json(*args: str) -> Any:
        try:
            return run_ip(*args, timeout_s=timeout_s)
        except (DiscoveryError, ValueError) as exc:
            errors.append(str(exc))
            return []

    addr = ip_json("addr", "show")
    link = ip_json("link", "show")
    routes4 = ip_json("-4", "route", "show", "table", "main")
    routes6 = ip_json("-6", "route", "show", "table", "main")
    try:
        resolv_text = Path(resolv_conf).read_text(errors="replace")
    except OSError as exc:
        errors.append(f"cannot read {resolv_conf}: {exc.strerror or exc}")
        resolv_text = ""
    resolvectl_text = None
    if resolvectl and shutil.which(resolvectl):
        try:
            resolvectl_text = run_command([resolvectl, "dns"], timeout_s)
        except DiscoveryError:
            resolvectl_text = None  # systemd-resolved not running: resolv.conf is the truth
    return build_facts(
        addr,
        link,
        routes4,
        routes6,
        resolv_text,
        resolvectl_text,
        hostname=socket.gethostname(),
        errors=errors,
    )


def host_of(target: str) -> str:
    """The host name or address in a URL, or the target itself."""
    if "://" in target:
        return urlsplit(target).hostname or ""
    if target.startswith("[") and "]" in target:
        return target[1 : target.index("]")]
    return target


def resolve(host: str, timeout_s: float = 5.0, port: int | None = None) -> list[str]:
    """The host's addresses in the order a connection would try them.

    `getaddrinfo` has no timeout of its own; it runs on a helper thread and a resolver that does
    not answer within `timeout_s` raises TimeoutError (the thread finishes on its own later).
    """
    if is_ip(host):
        return [host]
    result: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result["addresses"] = list(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            result["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no answer from the DNS servers within {timeout_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["addresses"]


def route_to(host: str, timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
    """How the box would reach `host` (a name, an address or a URL): the interface, source
    address and gateway from `ip -j route get`, after resolving the name."""
    name = host_of(host)
    answer: dict[str, Any] = {"host": name}
    try:
        addresses = resolve(name, timeout_s)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {**answer, "error": f"cannot resolve {name}: {reason}"}
    answer.update(address=addresses[0], addresses=addresses)
    try:
        answer.update(parse_route_get(run_ip("route", "get", addresses[0], timeout_s=timeout_s)))
    except (DiscoveryError, ValueError) as exc:
        answer["error"] = str(exc)
    return answer
