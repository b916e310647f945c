"""The OS image overlay (image/overlay/): units, journald/network/time settings, firewall.

Static checks so a later edit cannot silently drop a hardening line or open a port, then the
tools' own checks: `systemd-analyze verify` and `security --offline` against a scratch root that
holds the overlay, the host's system units and stand-ins for the release binaries, and
`nft -c` (check only: nothing is ever loaded on this machine). Needs the Debian packages
systemd (systemd-analyze) and nftables (nft).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "image" / "overlay"
UNITS = OVERLAY / "etc" / "systemd" / "system"
SERVICE = UNITS / "connectbox.service"
GUARD = UNITS / "connectbox-update-guard.service"
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
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert one(s, key) == value, key
    assert words(s, "ReadWritePaths") == {"/var/lib/connectbox", "/opt/connectbox"}
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


def test_guard_runs_previous_release_updater(guard, tmp_path) -> None:
    s = guard["Service"]
    assert one(s, "Type") == "oneshot"
    argv = shlex.split(one(s, "ExecStart").lstrip("-"))
    assert argv[:4] == [
        "/opt/connectbox/previous/venv/bin/python",
        "-m",
        "provisioning.updates",
        "resume",
    ]
    opts = argv[4:]
    assert opts[opts.index("--root") + 1] == "/opt/connectbox"
    assert opts[opts.index("--health-url") + 1] == "http://127.0.0.1:8080/healthz"
    # The options are the real CLI's: the same arguments parse (with a harmless command/root).
    opts[opts.index("--root") + 1] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "provisioning.updates", "status", *opts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The service's start limit must be reset, or the guard's restart would be refused.
    assert any("reset-failed connectbox.service" in v for v in s.get("ExecStartPre", []))


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
    net = parse_unit(OVERLAY / "etc" / "systemd" / "network" / "20-wired.network")
    assert words(net["Match"], "Name") == {"en*", "eth*"}
    assert one(net["Network"], "DHCP") == "yes"
    assert "Link" not in net  # RequiredForOnline: wait-online waits for any wired link ...
    wait = parse_unit(UNITS / "systemd-networkd-wait-online.service.d" / "connectbox.conf")
    assert wait["Service"]["ExecStart"][-1].startswith("-")  # ... 15 s at most, no failure
    assert "--any --timeout=15" in wait["Service"]["ExecStart"][-1]
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


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory) -> Path:
    """A root with the overlay, this machine's system units and stand-ins for the binaries."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(OVERLAY, root, dirs_exist_ok=True)
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(units).is_dir():
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    for binary in (
        "opt/connectbox/current/bin/connectbox",
        "opt/connectbox/previous/venv/bin/python",
        "usr/lib/connectbox/factory/venv/bin/python",
        "usr/bin/systemctl",
    ):
        path = root / binary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def test_systemd_analyze_verify(scratch_root) -> None:
    done = subprocess.run(
        [
            _need("systemd-analyze"),
            "verify",
            "--man=no",
            f"--root={scratch_root}",
            "/etc/systemd/system/connectbox.service",
            "/etc/systemd/system/connectbox-update-guard.service",
            "/etc/systemd/system/connectbox-os-slot.socket",
            "/etc/systemd/system/connectbox-os-slot@1.service",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Unknown keys and bad values are only warnings: any output at all fails.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr
    )


@pytest.mark.parametrize(
    ("unit", "threshold"),
    [
        # Exposure 0-100 (shown as 0.0-10.0). The service scores about 38 ("OK").
        ("connectbox.service", 50),
        # Root, but the narrowest unit of the image: 1.3 when written.
        ("connectbox-os-slot@1.service", 20),
    ],
)
def test_systemd_analyze_security(scratch_root, unit: str, threshold: int) -> None:
    done = subprocess.run(
        [
            _need("systemd-analyze"),
            "security",
            "--man=no",
            "--offline=yes",
            f"--threshold={threshold}",
            f"--root={scratch_root}",
            f"/etc/systemd/system/{unit}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
