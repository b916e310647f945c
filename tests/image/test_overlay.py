"""The OS image overlay (image/overlay/): units, journald/network/time settings, firewall.

Static checks so a later edit cannot silently drop a hardening line or open a port, then the
tools' own checks: `systemd-analyze verify` and `security --offline` against a scratch root that
holds the overlay, the host's system units and stand-ins for the release binaries, and
`nft -c` (check only: nothing is ever loaded on this machine). Needs the Debian packages
systemd (systemd-analyze) and nftables (nft).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from provisioning import update_unit

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "image" / "overlay"
UNITS = OVERLAY / "etc" / "systemd" / "system"
SERVICE = UNITS / "connectbox.service"
GUARD = UNITS / "connectbox-update-guard.service"
NETWORK_HELPER = UNITS / "connectbox-network.service"
SITE_NETWORKS = UNITS / "connectbox-site-networks.service"
DEMO_FORWARDER = REPO / "image" / "demo" / "connectbox-demo-hostfwd.service"
SLOT_SOCKET = UNITS / "connectbox-os-slot.socket"
SLOT_WRITER = UNITS / "connectbox-os-slot@.service"
NFT = OVERLAY / "etc" / "nftables.conf"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd-style INI file: {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= missing"
    return values[-1]


def words(section: dict[str, list[str]], key: str) -> set[str]:
    """All space-separated values of a list setting; an empty assignment resets the list."""
    result: set[str] = set()
    for value in section.get(key, []):
        if value == "":
            result = set()
        result |= set(value.split())
    return result


@pytest.fixture(scope="module")
def service() -> dict[str, dict[str, list[str]]]:
    return parse_unit(SERVICE)


@pytest.fixture(scope="module")
def guard() -> dict[str, dict[str, list[str]]]:
    return parse_unit(GUARD)


def test_service_runs_current_release_under_systemd_notify(service) -> None:
    s = service["Service"]
    assert one(s, "Type") == "notify"
    assert one(s, "NotifyAccess") == "main"
    assert one(s, "WatchdogSec") == "30"
    assert one(s, "Restart") == "always"
    assert one(s, "RestartSec") == "2"
    assert shlex.split(one(s, "ExecStart")) == [
        "/opt/connectbox/current/bin/connectbox",
        "run",
        "--config",
        "/etc/connectbox/connectbox.toml",
    ]
    assert "MALLOC_ARENA_MAX=2" in s["Environment"]
    assert one(s, "StateDirectory") == "connectbox"
    assert one(service["Unit"], "OnFailure") == "connectbox-update-guard.service"
    assert one(service["Install"], "WantedBy") == "multi-user.target"


def test_service_is_unprivileged(service) -> None:
    s = service["Service"]
    assert one(s, "User") == "connectbox"
    assert one(s, "Group") == "connectbox"
    assert words(s, "SupplementaryGroups") == {"dialout", "input"}
    # Present and empty: no capabilities at all.
    assert s.get("CapabilityBoundingSet") == [""]
    assert s.get("AmbientCapabilities") == [""]
    assert one(s, "NoNewPrivileges") == "yes"


def test_service_hardening(service) -> None:
    s = service["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "DevicePolicy": "closed",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert one(s, key) == value, key
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources", "capset"]
    # Its own code (/opt/connectbox) stays read-only: connectbox-update@.service updates it.
    assert words(s, "ReadWritePaths") == {"/var/lib/connectbox"}
    assert words(s, "RestrictAddressFamilies") == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert sorted(s["DeviceAllow"]) == [
        "char-input rw",
        "char-ttyACM rw",
        "char-ttyS rw",
        "char-ttyUSB rw",
    ]


def test_reader_drivers_load_before_the_service(service) -> None:
    # DeviceAllow=char-ttyUSB/char-ttyACM are resolved from /proc/devices at service start.
    modules = (OVERLAY / "etc" / "modules-load.d" / "connectbox.conf").read_text().split()
    assert {"usbserial", "cdc_acm"} <= set(modules)
    assert "systemd-modules-load.service" in words(service["Unit"], "After")


def test_guard_runs_the_factory_release_update_unit(guard) -> None:
    s = guard["Service"]
    assert one(s, "Type") == "oneshot"
    argv = shlex.split(one(s, "ExecStart"))
    assert argv[:3] == [
        "/usr/lib/connectbox/factory/venv/bin/python",
        "-m",
        "provisioning.update_unit",
    ]
    opts = update_unit.parser().parse_args(argv[3:])  # the real command line's options
    assert opts.guard and opts.root == Path("/opt/connectbox")


HELPER_SOCKETS = {  # socket unit: the path the image's configuration names (scripts/build-image)
    "connectbox-update.socket": "/run/connectbox-update.sock",
    "connectbox-clock.socket": "/run/connectbox-clock.sock",
    "connectbox-journal-sync.socket": "/run/connectbox-journal-sync.sock",
}


def test_root_helpers_take_requests_from_the_service_group_only() -> None:
    build = (REPO / "scripts" / "build-image").read_text()
    for name, path in HELPER_SOCKETS.items():
        sock = parse_unit(UNITS / name)["Socket"]
        assert one(sock, "ListenStream") == path
        assert (one(sock, "SocketUser"), one(sock, "SocketGroup")) == ("root", "connectbox")
        assert (one(sock, "SocketMode"), one(sock, "Accept")) == ("0660", "yes")
        assert f'"{path}"' in build, f"the image's configuration does not name {path}"
        instance = parse_unit(UNITS / name.replace(".socket", "@.service"))["Service"]
        assert one(instance, "StandardInput") == "socket"
    clock = parse_unit(UNITS / "connectbox-clock@.service")["Service"]
    assert words(clock, "CapabilityBoundingSet") == {"CAP_SYS_TIME"}
    assert one(clock, "DynamicUser") == "yes"


def project_units() -> list[Path]:
    """Every unit the project runs: the overlay's services and the development forwarder."""
    return sorted(UNITS.glob("connectbox*.service")) + [DEMO_FORWARDER]


def test_every_project_unit_is_sandboxed() -> None:
    for path in project_units():
        s = parse_unit(path)["Service"]
        for key in ("NoNewPrivileges", "ProtectHome", "ProtectKernelModules", "LockPersonality"):
            assert one(s, key) == "yes", f"{path.name}: {key}"
        assert one(s, "ProtectSystem") == "strict", path.name
        assert one(s, "SystemCallArchitectures") == "native", path.name
        assert s.get("SystemCallFilter"), f"{path.name}: no SystemCallFilter"
        assert "CapabilityBoundingSet" in s, f"{path.name}: capabilities not limited"
        assert s.get("UMask"), f"{path.name}: no UMask"


def test_only_the_service_may_reach_the_os_slot_writer() -> None:
    s = parse_unit(SLOT_SOCKET)["Socket"]
    assert one(s, "ListenStream") == "/run/connectbox-os-slot.sock"
    assert (one(s, "SocketUser"), one(s, "SocketGroup"), one(s, "SocketMode")) == (
        "root",
        "connectbox",
        "0660",
    )
    assert one(s, "Accept") == "yes"  # one writer process per request, never a daemon


def test_os_slot_writer_runs_slot_code_in_a_narrow_sandbox() -> None:
    s = parse_unit(SLOT_WRITER)["Service"]
    argv = shlex.split(one(s, "ExecStart"))
    assert argv == [
        "/usr/lib/connectbox/factory/venv/bin/python",
        "-I",
        "-m",
        "provisioning.osslot",
    ]
    assert one(s, "StandardInput") == "socket" and one(s, "StandardOutput") == "journal"
    assert s.get("CapabilityBoundingSet") == [""] and one(s, "NoNewPrivileges") == "yes"
    assert one(s, "ProtectSystem") == "strict"
    assert words(s, "ReadWritePaths") == {"/efi"}
    assert one(s, "DevicePolicy") == "closed"
    assert sorted(s["DeviceAllow"]) == [
        "/dev/disk/by-partlabel/cbroot-a rw",
        "/dev/disk/by-partlabel/cbroot-b rw",
    ]
    assert one(s, "PrivateNetwork") == "yes"
    assert words(s, "RestrictAddressFamilies") == {"AF_UNIX"}
    assert (one(s, "IOSchedulingClass"), one(s, "CPUSchedulingPolicy")) == ("idle", "idle")


def test_journal_network_time_settings() -> None:
    journal = parse_unit(OVERLAY / "etc" / "systemd" / "journald.conf.d" / "connectbox.conf")
    j = journal["Journal"]
    assert (one(j, "SystemMaxUse"), one(j, "RuntimeMaxUse"), one(j, "MaxRetentionSec")) == (
        "64M",
        "16M",
        "1month",
    )
    network_dir = OVERLAY / "etc" / "systemd" / "network"
    net = parse_unit(network_dir / "20-wired.network")
    assert words(net["Match"], "Name") == {"en*", "eth*"}
    # A fixed address: networkd reads the helper's file on the data partition through this
    # link, which sorts before 20-wired.network (the first match wins; empty: skipped, DHCP).
    static = network_dir / "10-connectbox-static.network"
    assert static.is_symlink()
    assert str(static.readlink()) == "/etc/connectbox/network/static.network"
    assert sorted(p.name for p in network_dir.iterdir())[0] == static.name
    assert one(net["Network"], "DHCP") == "yes"
    assert "Link" not in net  # RequiredForOnline: wait-online waits for any wired link ...
    wait = parse_unit(UNITS / "systemd-networkd-wait-online.service.d" / "connectbox.conf")
    assert wait["Service"]["ExecStart"][-1].startswith("-")  # ... 15 s at most, no failure
    assert "--any --timeout=15" in wait["Service"]["ExecStart"][-1]
    # Logs that survive a power cut: the rest within seconds (warnings at once, via the helper).
    assert one(j, "SyncIntervalSec") == "5s"
    timesyncd = OVERLAY / "etc" / "systemd" / "timesyncd.conf.d" / "connectbox.conf"
    assert "Time" in parse_unit(timesyncd)


def _nft_rules() -> list[str]:
    lines = []
    for raw in NFT.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _ports(rule: str) -> set[int]:
    ports: set[int] = set()
    for match in re.finditer(r"dport\s+(\{[^}]*\}|\S+)", rule):
        for token in re.split(r"[\s,{}]+", match.group(1)):
            if "-" in token:
                low, high = token.split("-", 1)
                ports |= set(range(int(low), int(high) + 1))
            elif token.isdigit():
                ports.add(int(token))
            elif token:
                ports.add(-1)  # a service name (ssh, http, ...): not allowed, see below
    return ports


def test_firewall_opens_only_the_box_ports() -> None:
    rules = _nft_rules()
    text = "\n".join(rules)
    assert re.search(r"hook input priority filter; policy drop;", text)
    assert re.search(r"hook output priority filter; policy accept;", text)
    accepted: set[int] = set()
    for rule in rules:
        if rule.endswith("accept") and rule.startswith(("tcp", "udp", "ip ", "ip6 ")):
            accepted |= _ports(rule)
    assert -1 not in accepted, "use port numbers, not service names"
    assert 22 not in accepted
    assert "ssh" not in text.lower()
    assert accepted == {68, 546, 5353, 9000, 80, 8080}
    # The POS and status ports only from the site's own networks (the sets the site-networks
    # service fills), in both families, and nowhere else.
    box_ports = [rule for rule in rules if _ports(rule) & {9000, 80, 8080} and "accept" in rule]
    assert box_ports == [
        "ip saddr @site_v4 tcp dport { 9000, 80, 8080 } accept",
        "ip6 saddr @site_v6 tcp dport { 9000, 80, 8080 } accept",
    ]
    assert "set site_v4 {" in rules and "set site_v6 {" in rules
    assert 'iif "lo" accept' in rules
    assert "ct state established,related accept" in rules
    assert "nd-neighbor-solicit" in text and "nd-neighbor-advert" in text
    assert "ip daddr 224.0.0.251 udp dport 5353 accept" in rules
    assert "ip6 daddr ff02::fb udp dport 5353 accept" in rules
    assert "tcp dport 80 redirect to :8080" in rules


def _need(tool: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if Path(p).exists()), None
    )
    if path is None:
        pytest.fail(f"{tool} not found: apt-get install systemd nftables")
    return path


def test_nft_accepts_the_ruleset() -> None:
    # -c: parse and check only, never load.
    done = subprocess.run(
        [_need("nft"), "-c", "-f", str(NFT)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# ---- the site's own networks (usr/lib/connectbox/site-networks) ------------------------------


def _site_networks() -> ModuleType:
    path = OVERLAY / "usr" / "lib" / "connectbox" / "site-networks"
    loader = importlib.machinery.SourceFileLoader("site_networks", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


ROUTES_V4 = [  # ip -j -4 route show table main, on a DHCP box with a second, static network
    {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0", "protocol": "dhcp"},
    {"dst": "192.168.1.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link"},
    {"dst": "192.168.1.1", "dev": "eth0", "protocol": "dhcp", "scope": "link"},
    {"dst": "10.9.0.0/16", "gateway": "192.168.1.254", "dev": "eth0"},
    {"dst": "172.16.5.0/24", "dev": "eth1", "protocol": "kernel", "scope": "link"},
    {"type": "unreachable", "dst": "10.99.0.0/16"},
]
ROUTES_V6 = [
    {"dst": "fe80::/64", "dev": "eth0", "protocol": "kernel"},
    {"dst": "2001:db8:1::/64", "dev": "eth0", "protocol": "ra"},
    {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "protocol": "ra"},
]


def test_the_site_is_the_directly_connected_networks_and_what_firewall_allow_adds() -> None:
    site = _site_networks()
    found = site.connected(ROUTES_V4) + site.connected(ROUTES_V6)
    assert [str(n) for n in found] == [
        "192.168.1.0/24",
        "192.168.1.1/32",
        "172.16.5.0/24",
        "fe80::/64",
        "2001:db8:1::/64",
    ]
    extra = site.allowed("# the back office's VLAN\n10.20.0.0/16\nnot-a-network\n\n")
    assert extra == [ipaddress.ip_network("10.20.0.0/16")]
    assert site.allowed("any") == [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    sets = site.merged(found + extra)
    assert sets == {
        "site_v4": ["10.20.0.0/16", "172.16.5.0/24", "192.168.1.0/24"],  # the /32 is inside
        "site_v6": ["2001:db8:1::/64", "fe80::/64"],
    }
    assert site.merged(site.allowed("any") + found)["site_v4"] == ["0.0.0.0/0"]


def test_nft_accepts_the_ruleset_with_the_sets_filled(tmp_path) -> None:
    site = _site_networks()
    update = site.script(site.merged(site.connected(ROUTES_V4) + site.allowed("10.20.0.0/16")))
    assert update.startswith("flush set inet filter site_v4\nadd element inet filter site_v4 {")
    assert "flush set inet filter site_v6\n" in update
    both = tmp_path / "ruleset.nft"
    both.write_text(NFT.read_text() + "\n" + update)
    done = subprocess.run(
        [_need("nft"), "-c", "-f", str(both)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# ---- the privileged helpers ----------------------------------------------------------------


def test_the_network_helper_runs_the_read_only_copy_with_net_admin_only() -> None:
    unit = parse_unit(NETWORK_HELPER)
    s = unit["Service"]
    assert shlex.split(one(s, "ExecStart")) == [
        "/usr/bin/python3",
        "-I",
        "/usr/lib/connectbox/network_apply.py",
    ]
    assert "User" not in s  # root, for networkctl; nothing else
    assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert words(s, "ReadWritePaths") == {"/etc/connectbox/network"}
    assert one(s, "ProtectSystem") == "strict" and one(s, "NoNewPrivileges") == "yes"
    trigger = parse_unit(UNITS / "connectbox-network.path")
    assert one(trigger["Path"], "PathChanged") == "/var/lib/connectbox/network-request.json"
    assert one(trigger["Path"], "Unit") == "connectbox-network.service"
    # The request the service writes is the one the helper reads (app/network/static.py).
    from app.network import static

    assert Path("/usr/lib/connectbox/network_apply.py") == static.HELPER
    assert str(static.STATE_DIR / static.NETWORK_FILE) == "/etc/connectbox/network/static.network"
    assert Path(one(trigger["Path"], "PathChanged")).name == static.REQUEST_FILE


def test_the_site_networks_service_is_unprivileged_but_for_the_firewall() -> None:
    s = parse_unit(SITE_NETWORKS)["Service"]
    assert one(s, "DynamicUser") == "yes"
    assert s["AmbientCapabilities"] == ["CAP_NET_ADMIN"] == s["CapabilityBoundingSet"]
    assert one(s, "Restart") == "always"
    assert "nftables.service" in words(parse_unit(SITE_NETWORKS)["Unit"], "PartOf")


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory) -> Path:
    """A root with the overlay, this machine's system units and stand-ins for the binaries."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(OVERLAY, root, dirs_exist_ok=True, symlinks=True)
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(units).is_dir():
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    for binary in (
        "opt/connectbox/current/bin/connectbox",
        "usr/lib/connectbox/factory/bin/connectbox",
        "usr/lib/connectbox/factory/venv/bin/python",
        "usr/bin/systemctl",
        "usr/bin/python3",
        "usr/bin/socat",
    ):
        path = root / binary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    forwarder = DEMO_FORWARDER.read_text().replace("@PORT@", "18400")
    (root / "etc/systemd/system" / DEMO_FORWARDER.name).write_text(forwarder)
    return root


def _in_root(path: Path) -> str:
    return f"/etc/systemd/system/{path.name}"


def test_systemd_analyze_verify(scratch_root) -> None:
    units = [_in_root(p) for p in project_units() if "@" not in p.name]
    units += [_in_root(UNITS / name) for name in HELPER_SOCKETS]
    units.append(_in_root(UNITS / "connectbox-network.path"))
    units += [_in_root(SLOT_SOCKET), "/etc/systemd/system/connectbox-os-slot@1.service"]
    done = subprocess.run(
        [_need("systemd-analyze"), "verify", "--man=no", f"--root={scratch_root}", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Unknown keys and bad values are only warnings: any output at all fails.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr
    )


MAX_EXPOSURE = 2.0  # systemd-analyze security's 0-10 scale (the bar; docs/image.md)


@pytest.mark.parametrize("unit", [p.name for p in project_units()])
def test_systemd_analyze_security_exposure_is_at_most_2(scratch_root, unit) -> None:
    # Offline, from the files; the boot test checks the same in the running image.
    done = subprocess.run(
        [_need("systemd-analyze"), "security", "--man=no", "--offline=yes",
         f"--root={scratch_root}", f"/etc/systemd/system/{unit}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
