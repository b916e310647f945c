"""Boot the Connect Box image in QEMU and drive it from outside, as a site would.

Runs in the image stage (`scripts/test-image`, part of `.ci/run`), which builds the development
image and sets CONNECTBOX_IMAGE_DIR; by hand:

    sudo scripts/build-image --variant development
    CONNECTBOX_IMAGE_DIR=build/image .venv/bin/python -m pytest tests/image/test_boot.py -s

CONNECTBOX_QEMU_ACCEL picks the accelerator (default tcg; kvm where KVM works). The reference
host runs here on 127.0.0.1:<the port baked into the image>; QEMU's user networking maps the
guest's "host" address (see docs/image.md) to this machine's 127.0.0.1. Most scenarios share
one direct-kernel boot of slot A (fast); the power cut boots its own copy of the disk. UEFI,
systemd-boot and the A/B slots are tested by real OS updates (tests/image/test_os_update.py).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import http.server
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from app.pos.tls import client_context
from provisioning.releases import make_release, sign_artefact
from simulators import pos as sim
from simulators.host.keys import TEST_KEY_ID, test_private_key
from tests.e2e.test_power_loss import pos_load
from tests.image.qemu import (
    BOOT_TIMEOUT_S,
    BOOTS_A_VM,
    RESTART_TIMEOUT_S,
    STATIC_GUEST,
    WATCHDOG_S,
    Disk,
    Machine,
    development_image,
)
from tests.tlsca import make_tls_files

CONNECTBOX = "/opt/connectbox/current/bin/connectbox"
CARD = "6000001234567894"
SWIPE = f"%B{CARD}^LOYAL/JANE^2912101000000000?;{CARD}=29121010000000000000?\r"
WEDGE_CARD = "6000009876543217"

pytestmark = BOOTS_A_VM


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    return development_image()


@pytest.fixture(scope="module")
def reference_host(image):
    from simulators.host.runner import start_in_thread

    host = start_in_thread("127.0.0.1", int(image["CONNECTBOX_IMAGE_HOST_PORT"]))
    yield host
    host.stop()


@pytest.fixture(scope="module")
def vm(image, reference_host, tmp_path_factory):
    machine = Machine(image, tmp_path_factory.mktemp("direct")).start()
    try:
        yield machine
    finally:
        machine.stop()
        print(f"QEMU console log: {machine.log_path}")


def _get_rewards(port: int, register: str, loyalty_id: str | None = None):
    counter = sim.SequenceCounter()
    txn = sim.transaction(
        register, counter.new_transaction(), [sim.item_line(1, "028200003843", 2, "9.49")]
    )
    with sim.PosClient("127.0.0.1", port, timeout=10.0) as pos:
        return pos.send(sim.get_rewards(counter.next(), txn, loyalty_id))


def _wait_for_read(vm: Machine, devnode: str, reads: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        readers = {r["devnode"]: r for r in vm.status()["readers"]}
        reader = readers.get(devnode)
        if reader and reader["reads"] >= reads:
            return reader
        if time.monotonic() > deadline:
            raise AssertionError(f"no read on {devnode}: {readers}")
        time.sleep(0.5)


# -- one direct-kernel boot of slot A -------------------------------------------------------------


def test_status_page_answers_after_power_on(vm):
    # A hung boot fails here; how fast a boot is is bench/boot_time.py's figure, not a test's.
    seconds = vm.wait_healthy(BOOT_TIMEOUT_S)
    print(f"FIGURE boot -> /healthz 200: {seconds:.1f} s")
    assert vm.check("systemctl is-active connectbox.service") == "active"


def test_root_is_read_only_and_the_data_partition_holds_the_state(vm, image):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    assert vm.check("findmnt -no OPTIONS /").split(",")[0] == "ro"
    status, _ = vm.shell("touch /usr/lib/connectbox/x")
    assert status != 0
    assert vm.check("findmnt -no SOURCE /data") == "/dev/vda4"  # PARTLABEL=cbdata
    for path, source in (
        ("/var", "/var"),
        ("/etc/connectbox", "/etc/connectbox"),
        ("/opt/connectbox", "/software"),
    ):
        assert vm.check(f"findmnt -no SOURCE {path}") == f"/dev/vda4[{source}]"
    assert vm.check("cat /proc/cmdline").count("connectbox.slot=a") == 1
    os_image = vm.status()["os"]
    version = image["CONNECTBOX_IMAGE_OS_VERSION"]
    assert (os_image["slot"], os_image["version"], os_image["variant"]) == (
        "a",
        version,
        "development",
    )
    manifest = vm.check("sha256sum /usr/lib/connectbox/manifest.txt").split()[0]
    assert os_image["manifest"] == manifest  # what the page and the heartbeat show
    packages = vm.check("cat /usr/lib/connectbox/manifest.txt")
    assert "deb systemd " in packages and "python flask==" in packages.lower()
    # First boot: the serial from the DMI table, the hostname from its last six characters.
    assert vm.check("cat /etc/connectbox/serial") == "CB2026-TEST42"
    assert vm.check("hostname") == "connectbox-test42"
    # Locked root, no SSH, nothing failed.
    assert vm.check("passwd -S root").split()[1] == "L"
    assert vm.shell("test -e /usr/sbin/sshd")[0] != 0
    assert vm.check("systemctl --failed --no-legend --plain") == ""
    assert vm.check("systemctl show -p User --value connectbox.service") == "connectbox"
    pid = vm.check("systemctl show -p MainPID --value connectbox.service")
    rss_kib = int(vm.check(f"grep VmRSS /proc/{pid}/status").split()[1])
    print(f"FIGURE service RSS after boot: {rss_kib / 1024:.1f} MiB")


def test_a_headless_box_boots_to_multi_user_with_its_tools_and_without_leftovers(vm, image):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    assert vm.check("systemctl get-default") == "multi-user.target"
    assert vm.check("systemctl is-active graphical.target; true") != "active"
    # procps: ps and free for whoever looks at the box.
    assert "connectbox" in vm.check("ps -eo user:16,comm")
    assert "Mem:" in vm.check("free -m")
    # No apt timers on a read-only root; no floppy probing.
    assert "apt" not in vm.check("systemctl list-timers --no-legend --plain")
    masked = vm.check("systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer; true")
    assert masked.split() == ["masked", "masked"]
    assert vm.check("lsmod | grep -c '^floppy' ; true") == "0"
    assert "blacklist floppy" in vm.check("cat /etc/modprobe.d/connectbox.conf")
    # The initramfs is zstd-compressed (zstd is installed; gzip was the fallback).
    with open(image["CONNECTBOX_IMAGE_INITRD"], "rb") as initrd:
        assert initrd.read(4) == b"\x28\xb5\x2f\xfd"


def test_firewall_admits_only_the_pos_port_status_page_mdns_and_dhcp(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    ruleset = vm.check("nft list ruleset")
    assert "policy drop" in ruleset
    assert "9000" in ruleset and "8080" in ruleset and "5353" in ruleset and "68" in ruleset
    assert "dport 22" not in ruleset and "ssh" not in ruleset
    # The POS and status ports from the site's own networks only: QEMU's user network (the
    # forwarded test connections come from its 10.0.2.2) and IPv6 link-local.
    assert "ip saddr @site_v4 tcp dport { 80, 8080, 9000 } accept" in ruleset
    assert _site_networks(vm) == ["10.0.2.0/24"]
    assert "fe80::/64" in vm.check("nft list set inet filter site_v6")
    assert vm.check("systemctl is-active connectbox-site-networks.service") == "active"


# Every unit of the project: the service, its set-up and boot check, the root helpers it asks
# through their sockets (one instance per request: analysed as an instance), the network helpers,
# safe mode and its guard, and the development image's forwarder. docs/image.md records the scores.
PROJECT_UNITS = [
    "connectbox.service",
    "connectbox-setup.service",
    "connectbox-boot-check.service",
    "connectbox-update-guard.service",
    "connectbox-safe-mode.service",
    "connectbox-update@probe.service",
    "connectbox-clock@probe.service",
    "connectbox-journal-sync@probe.service",
    "connectbox-os-slot@probe.service",
    "connectbox-network.service",
    "connectbox-site-networks.service",
    "connectbox-demo-hostfwd.service",
]
MAX_EXPOSURE = 2.0


def test_every_project_unit_scores_at_most_2_in_systemd_analyze_security(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    plain = "SYSTEMD_COLORS=0 SYSTEMD_URLIFY=0"
    units = " ".join(PROJECT_UNITS)
    text = vm.check(f"{plain} systemd-analyze security --no-pager {units}", timeout=180)
    scores = {
        unit: float(score)
        for unit, score in re.findall(r"Overall exposure level for (\S+): (\d+\.\d+)", text)
    }
    assert sorted(scores) == sorted(PROJECT_UNITS), text[-3000:]
    for unit, score in scores.items():
        print(f"FIGURE exposure {unit}: {score}")
    assert {u: s for u, s in scores.items() if s > MAX_EXPOSURE} == {}
    # What the service's sandbox could break and no other test here sees: network discovery
    # (`ip -j` over netlink) and the mDNS announcement (the readers have tests of their own).
    network = vm.status()["network"]["facts"]
    assert network["errors"] == [] and network["interfaces"], network
    deadline = time.monotonic() + 60
    while not (vm.status().get("mdns") or {}).get("announced"):
        assert time.monotonic() < deadline, vm.status().get("mdns")
        time.sleep(2)


def _site_networks(vm: Machine) -> list[str]:
    listed = vm.check("nft -j list set inet filter site_v4")
    found = json.loads(listed)["nftables"][1]["set"].get("elem", [])
    return [f"{e['prefix']['addr']}/{e['prefix']['len']}" for e in found]


def _sale(port: int, dialect: str = "passport", tls=None) -> None:
    """A tobacco sale that gets the Scan Data discount (the box may need a moment to reach
    the host after /healthz answers)."""
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        lines.clear()
        try:
            with sim.PosClient("127.0.0.1", port, dialect, timeout=10.0, tls=tls) as client:
                result = sim.tobacco_phone_sale(client, lines.append)
        except Exception as exc:
            result, error = None, exc
        else:
            error = None
        if result is not None and result.discount > 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no Scan Data discount: {error or result}\n" + "\n".join(lines))
        time.sleep(3)


def test_sale_gets_the_scan_data_discount(vm, reference_host):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    _sale(vm.pos_port)
    assert any(e["event"] == "finalize" for e in reference_host.store.events())


def test_serial_reader_on_the_second_serial_port_feeds_register_1(vm, reference_host):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    with vm.reader_cable() as cable:
        cable.sendall(SWIPE.encode())
        reader = _wait_for_read(vm, "/dev/ttyS1", 1)
    assert CARD not in str(reader) and reader["register_id"] == "1"
    _get_rewards(vm.pos_port, "2")  # another register: not its read
    _get_rewards(vm.pos_port, "1")
    other, mine = reference_host.store.rewards_requests()[-2:]
    assert other["loyalty_id"] is None
    assert mine["loyalty_id"] == {"value": CARD, "entry_method": "swipe", "source": "reader"}


def test_keyboard_wedge_through_uinput_feeds_register_1(vm, reference_host):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    swipe = f";{WEDGE_CARD}=29121010000000000000?\\r"
    output = vm.check(
        f"/opt/connectbox/current/venv/bin/python /usr/lib/connectbox/tests/guest_wedge.py "
        f"'{swipe}'",
        timeout=60,
    )
    assert output.endswith("typed"), output
    reader = _wait_for_read(vm, "/dev/connectbox/test-wedge", 1)
    assert reader["kind"] == "keyboard" and WEDGE_CARD not in str(reader)
    _get_rewards(vm.pos_port, "1")
    body = reference_host.store.rewards_requests()[-1]
    assert body["loyalty_id"]["value"] == WEDGE_CARD
    assert body["loyalty_id"]["source"] == "reader"


def test_the_uinput_driver_test_passes_inside_the_image(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    output = vm.check(
        "cd /usr/lib/connectbox/tests && /opt/connectbox/current/venv/bin/python -m pytest"
        " -q -p no:cacheprovider test_keyboard_reader.py -k uinput",
        timeout=120,
    )
    assert "1 passed" in output and "skipped" not in output, output


def test_watchdog_restarts_a_frozen_service(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    pid = vm.check("systemctl show -p MainPID --value connectbox.service")
    vm.check(f"kill -STOP {pid}")
    stopped = time.monotonic()
    deadline = stopped + WATCHDOG_S + RESTART_TIMEOUT_S
    while True:
        new = vm.check("systemctl show -p MainPID --value connectbox.service")
        if new not in (pid, "0") and vm.healthz() == 200:
            break
        assert time.monotonic() < deadline, vm.check("systemctl status connectbox.service")
        time.sleep(2)
    print(f"FIGURE watchdog: frozen -> restarted and answering: {time.monotonic() - stopped:.0f} s")
    log = vm.check("journalctl -b -u connectbox.service --no-pager -o cat")
    assert "Watchdog timeout" in log, log[-2000:]


def test_an_app_update_is_done_by_the_update_unit_and_reported_once(vm, reference_host, tmp_path):
    """The service cannot write /opt/connectbox: it hands `update` to connectbox-update@, which
    downloads (through a forwarder to this machine), verifies, switches, restarts the service,
    checks it and leaves the result the service reports."""
    vm.wait_healthy(BOOT_TIMEOUT_S)
    assert vm.shell("runuser -u connectbox -- touch /opt/connectbox/x")[0] != 0
    source = tmp_path / "release"
    (source / "bin").mkdir(parents=True)
    entry = source / "bin" / "connectbox"  # the same code, under a new release's name
    entry.write_text('#!/bin/sh\nexec /usr/lib/connectbox/factory/bin/connectbox "$@"\n')
    entry.chmod(0o755)
    artefact = make_release(source, "0.1.1", tmp_path / "published")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=artefact.parent)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vm.check(
        f"systemd-run --unit=artefact-fwd socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr "
        f"TCP:10.0.2.2:{port}"
    )
    args = {
        "version": "0.1.1",
        "url": f"http://127.0.0.1:{port}/{artefact.name}",
        "key_id": TEST_KEY_ID,
        **sign_artefact(artefact, test_private_key()),
    }
    try:
        update = reference_host.store.queue_command("D-DEMO", "update", args)
        result = _command_results(reference_host, [update], timeout=420)[update]
        assert result["ok"] and "0.1.0 -> 0.1.1" in result["detail"], result
        same = reference_host.store.queue_command("D-DEMO", "update", args)
        result = _command_results(reference_host, [same], timeout=180)[same]
        assert result["ok"] and "already running 0.1.1" in result["detail"], result
    finally:
        server.shutdown()
        vm.shell("systemctl stop artefact-fwd")
    assert vm.check("readlink /opt/connectbox/current") == "releases/0.1.1"
    assert vm.check("stat -c %U /opt/connectbox/releases/0.1.1/bin/connectbox") == "root"
    assert vm.wait_healthy() > 0
    log = vm.check("journalctl -b -u 'connectbox-update@*' -o cat --no-pager")
    assert "update command" in log and "ok=True" in log, log[-2000:]


def _command_results(host, command_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        results = {
            c["command_id"]: c["result"]
            for c in host.store.commands("D-DEMO")
            if c["command_id"] in command_ids and c["result"]
        }
        if len(results) == len(command_ids) or time.monotonic() > deadline:
            assert len(results) == len(command_ids), (results, command_ids)
            return results
        time.sleep(2)


def test_with_ntp_blocked_the_clock_is_set_from_the_host(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    # NTP unreachable (the site blocks it), and the clock two hours behind.
    vm.check("nft insert rule inet filter output udp dport 123 drop")
    vm.check("systemctl restart systemd-timesyncd; rm -f /run/systemd/timesync/synchronized")
    vm.check(f"date -s @{int(time.time()) - 7200} >/dev/null")
    deadline = time.monotonic() + 180  # the next host answer, then a housekeeping tick
    while abs(int(vm.check("date +%s")) - time.time()) > 10:
        assert time.monotonic() < deadline, vm.check(
            "journalctl -b -u connectbox -u 'connectbox-clock@*' -n 30 -o cat --no-pager"
        )
        time.sleep(3)
    print(f"FIGURE clock set from the host: {time.monotonic() - deadline + 180:.0f} s")
    log = vm.check("journalctl -b -u 'connectbox-clock@*' -o cat --no-pager")
    assert "connectbox clock helper: stepped +" in log, log
    assert "asking the clock helper" in vm.check("journalctl -b -u connectbox -o cat --no-pager")


def test_safe_mode_answers_when_the_service_cannot_start(vm, reference_host):
    """A configuration the service cannot read: it fails its start limit, the guard finds no
    update to roll back, and safe mode keeps the page, the heartbeat and the commands."""
    vm.wait_healthy(BOOT_TIMEOUT_S)
    config = "/etc/connectbox/connectbox.toml"
    vm.check(f"cp {config} /tmp/good.toml && echo 'not [valid' >> {config}")
    vm.check("systemctl restart --no-block connectbox.service")
    beats = len(reference_host.store.heartbeats("D-DEMO"))
    # Once the broken service has run, queued for safe mode's first heartbeat.
    broken = "journalctl -b -u connectbox -o cat --no-pager | grep -q 'not valid TOML'"
    deadline = time.monotonic() + 120
    while vm.shell(broken)[0] != 0:
        assert time.monotonic() < deadline, vm.check("systemctl status connectbox; true")
        time.sleep(2)
    logs = reference_host.store.queue_command("D-DEMO", "upload_logs", {})
    deadline = time.monotonic() + 300
    status = None
    while status is None or not status.get("safe_mode"):
        assert time.monotonic() < deadline, vm.check(
            "systemctl status connectbox connectbox-update-guard connectbox-safe-mode; true"
        )
        time.sleep(3)
        try:
            status = vm.status()
        except Exception:
            status = None
    try:  # nothing serves the POS: no boot counts as good on this
        urllib.request.urlopen(f"http://127.0.0.1:{vm.status_port}/healthz", timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
    else:
        raise AssertionError("/healthz answered 200 in safe mode")
    assert "not valid TOML" in status["reason"]
    guard = vm.check("journalctl -b -u connectbox-update-guard -o cat --no-pager")
    assert "no update explains it: starting safe mode" in guard, guard[-2000:]
    results = _command_results(reference_host, [logs], timeout=180)
    assert results[logs]["ok"], results[logs]
    beat = reference_host.store.heartbeats("D-DEMO")[-1]
    assert len(reference_host.store.heartbeats("D-DEMO")) > beats
    assert beat["components"]["safe_mode"] is True and beat["status"] == "degraded"
    uploaded = gzip.decompress(reference_host.store.logs("D-DEMO")[-1]["content"]).decode()
    assert "not valid TOML" in uploaded
    # Repaired (here by hand; in the field by an update), `restart` starts the service again.
    vm.check(f"cp /tmp/good.toml {config}")
    again = reference_host.store.queue_command("D-DEMO", "restart", {})
    assert _command_results(reference_host, [again], timeout=180)[again]["ok"]
    assert vm.wait_healthy() > 0
    assert vm.check("systemctl is-active connectbox-safe-mode.service; true") == "inactive"


def _addresses(vm: Machine) -> list[tuple[str, int, bool]]:
    """The wired port's global IPv4 addresses: (address, prefix, from DHCP)."""
    links = json.loads(vm.check("ip -j -4 addr show scope global"))
    return [
        (a["local"], a["prefixlen"], bool(a.get("dynamic")))
        for link in links
        if link["ifname"].startswith(("en", "eth"))
        for a in link["addr_info"]
    ]


def test_a_fixed_address_survives_a_reboot_and_the_pos_port_speaks_tls(
    vm, reference_host, tmp_path
):
    """The last test of this boot: it reboots the box (the tests above need none)."""
    vm.wait_healthy(BOOT_TIMEOUT_S)
    started = time.monotonic()
    # TLS on the POS port: a CA made here; the box's certificate and key written through the
    # console next to the configuration, which names them relative to itself.
    tls = make_tls_files(tmp_path / "tls")
    for name, path in (("pos.pem", tls.cert), ("pos.key", tls.key)):
        encoded = base64.b64encode(path.read_bytes()).decode()
        vm.check(f"echo {encoded} | base64 -d > /etc/connectbox/{name}")
    vm.check("chgrp connectbox /etc/connectbox/pos.key && chmod 640 /etc/connectbox/pos.key")
    vm.check(
        'sed -i \'/^\\[pos\\]$/a tls_cert = "pos.pem"\\ntls_key = "pos.key"\' '
        "/etc/connectbox/connectbox.toml"
    )
    # A fixed address from the command: applied by the helper, kept once the gateway answers.
    out = vm.check(
        f"{CONNECTBOX} network static {STATIC_GUEST}/24 --gateway 10.0.2.2 --dns 10.0.2.3",
        timeout=240,
    )
    assert f"Done: fixed address {STATIC_GUEST}/24, gateway 10.0.2.2, DNS 10.0.2.3 in force" in out
    applied_s = time.monotonic() - started
    assert _addresses(vm) == [(STATIC_GUEST, 24, False)]

    vm.at_static = True
    vm.reboot()
    seconds = vm.wait_healthy(BOOT_TIMEOUT_S)
    print(f"FIGURE reboot -> /healthz 200 at the fixed address: {seconds:.1f} s")
    assert _addresses(vm) == [(STATIC_GUEST, 24, False)]  # no DHCP lease beside it
    link = vm.check("ls /sys/class/net | grep -E '^(en|eth)' | head -1")
    network_file = vm.check(f"networkctl status --no-pager -n 0 {link} | grep 'Network File'")
    assert "/etc/systemd/network/10-connectbox-static.network" in network_file
    setting = vm.status()["network"]["setting"]
    assert (setting["managed"], setting["mode"], setting["address"], setting["source"]) == (
        True,
        "static",
        f"{STATIC_GUEST}/24",
        "connectbox network",
    )
    assert setting["result"]["ok"] is True and setting["pending"] is False
    assert _site_networks(vm) == ["10.0.2.0/24"]
    assert vm.check("systemctl --failed --no-legend --plain") == ""

    # A TLS sale in both dialects, at the fixed address.
    for dialect in ("passport", "eps"):
        _sale(vm.static_pos_port, dialect, client_context(tls.ca))
    assert vm.status()["pos"]["tls"] is True

    # A fixed address whose gateway never answers is not kept: the previous one comes back.
    status, out = vm.shell(
        f"{CONNECTBOX} network static 10.0.2.60/24 --gateway 10.0.2.77 --dns 10.0.2.3",
        timeout=240,
    )
    assert status == 1, out
    assert (
        "not kept: the gateway 10.0.2.77 does not answer; back to fixed address 10.0.2.50/24" in out
    )
    vm.wait_healthy(BOOT_TIMEOUT_S)
    assert _addresses(vm) == [(STATIC_GUEST, 24, False)]

    # And back to DHCP.
    out = vm.check(f"{CONNECTBOX} network dhcp", timeout=240)
    assert "Done: DHCP in force" in out, out
    vm.at_static = False
    vm.wait_healthy(BOOT_TIMEOUT_S)
    assert _addresses(vm) == [("10.0.2.15", 24, True)]
    print(
        f"FIGURE fixed address + TLS test: applied in {applied_s:.0f} s, "
        f"whole test {time.monotonic() - started:.0f} s"
    )


# -- a pulled power cord -------------------------------------------------------------------------


def test_power_cut_mid_finalize_stream_loses_and_repeats_nothing(image, reference_host, tmp_path):
    disk = Disk.copy_of(image["CONNECTBOX_IMAGE_DISK"], tmp_path / "disk.img")
    with open(disk.path, "r+b") as f:  # written to a larger disk: the data partition grows
        f.truncate(f.seek(0, os.SEEK_END) + 1024 * 1024 * 1024)
    machine = Machine(image, tmp_path / "vm", disk=disk.path, snapshot=False).start()
    answered: list[str] = []
    try:
        machine.wait_healthy(BOOT_TIMEOUT_S)
        identity = machine.check("cat /etc/machine-id; hostname")
        data_mib = int(machine.check("df -m --output=size /data | tail -1"))
        assert data_mib > 1100, f"/data did not grow to the disk: {data_mib} MiB"
        # The host fails every delivery: the answered finalizes wait in the box's outbox.
        reference_host.set_fault("error500", 0)
        stop = threading.Event()
        counters = {r: sim.SequenceCounter() for r in ("3", "4")}
        load = [
            threading.Thread(target=pos_load, args=(machine.pos_port, r, c, answered, stop))
            for r, c in counters.items()
        ]
        for thread in load:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answered) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(random.uniform(0.0, 1.0))
        # The service's last lines: a warning it logs now (a POS frame it cannot read). The
        # guest watches for it in the journal and for the end of the sync it asks for; the plug
        # is pulled the moment that is seen, well within journald's own 5 s.
        marker = f"CUT{random.randrange(16**5):05x}"
        start = machine.type_line(_SYNC_WATCH.replace("MARKER", marker))
        machine.wait_console(rf"READY-{marker}", timeout=60, start=start)
        _unreadable_frame(machine.pos_port, marker)
        found = machine.wait_console(rf"SYNCED-{marker} (\S+) (\S+)", timeout=120, start=start)
        machine.power_cut()  # mid-stream: a finalize may be on the wire
        logged, synced = (float(t) for t in found.groups())
        print(
            f"FIGURE warning in the journal -> on disk (seen in the guest): {synced - logged:.2f} s"
        )
        stop.set()
        for thread in load:
            thread.join(timeout=15)
        assert len(answered) >= 6, "the sales did not get going"
        reference_host.set_fault("ok", 0)

        machine.start()  # power back
        machine.wait_healthy(BOOT_TIMEOUT_S)
        assert machine.check("cat /etc/machine-id; hostname") == identity
        wanted = set(answered)
        deadline = time.monotonic() + 120
        while True:
            at_host = [
                f"{e['body']['pos']['register_id']}/{e['body']['pos']['pos_transaction_id']}"
                for e in reference_host.store.events()
                if e["event"] == "finalize" and e["body"]["pos"]["register_id"] in counters
            ]
            if wanted <= set(at_host) or time.monotonic() > deadline:
                break
            time.sleep(1)
        print(f"FIGURE power cut: {len(answered)} finalizes answered, {len(set(at_host))} at host")
        assert wanted <= set(at_host), sorted(wanted - set(at_host))
        assert len(at_host) == len(set(at_host)), "a finalize reached the host twice"
        assert len(machine.check("journalctl --list-boots --no-pager").splitlines()) >= 2
        show = "SYSTEMD_COLORS=0 journalctl -b -1 -u connectbox -p warning -o cat --no-pager"
        last = machine.check(show)
        assert marker in last, last[-2000:]
    finally:
        reference_host.set_fault("ok", 0)
        machine.stop()


# Run in the guest (the quotes keep the echoed command line from matching): once the service's
# warning with MARKER is in the journal, wait for the end of the journal sync that covers it.
# The service asks one sync at a time, and one that covers the warning starts by the second
# after it: done once another follows or none runs.
_SYNC_WATCH = (
    "show() { systemctl show -p NAccepted -p NConnections connectbox-journal-sync.socket; }; "
    "n0=$(systemctl show -p NAccepted --value connectbox-journal-sync.socket); "
    "echo READY-'MARKER'; "
    "until journalctl -u connectbox -p warning -o cat --no-pager | grep -q MARKER; "
    "do sleep 0.1; done; "
    "logged=$(date +%s.%N); "
    "until eval $(show); [ $NAccepted -ge $((n0 + 3)) ] "
    "|| { [ $NAccepted -ge $((n0 + 2)) ] && [ $NConnections = 0 ]; }; do sleep 0.05; done; "
    "echo SYNCED-'MARKER' $logged $(date +%s.%N)"
)


def _unreadable_frame(port: int, marker: str) -> None:
    """Send the POS port bytes no framing knows, starting with `marker`, which the service's
    warning quotes ("unknown framing, first bytes ...")."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as pos:
        pos.sendall(marker.encode() + b"-" * 40)
        with contextlib.suppress(OSError):
            pos.recv(64)  # the box hangs up
