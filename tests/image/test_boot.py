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

import os
import random
import threading
import time

import pytest

from simulators import pos as sim
from tests.e2e.test_power_loss import pos_load
from tests.image.qemu import (
    BOOT_TIMEOUT_S,
    BOOTS_A_VM,
    RESTART_TIMEOUT_S,
    WATCHDOG_S,
    Disk,
    Machine,
    development_image,
)

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
    version = image["CONNECTBOX_IMAGE_OS_VERSION"]
    assert vm.status()["os"] == {"slot": "a", "version": version, "variant": "development"}
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


def test_firewall_admits_only_the_pos_port_status_page_mdns_and_dhcp(vm):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    ruleset = vm.check("nft list ruleset")
    assert "policy drop" in ruleset
    assert "9000" in ruleset and "8080" in ruleset and "5353" in ruleset and "68" in ruleset
    assert "dport 22" not in ruleset and "ssh" not in ruleset


def test_sale_gets_the_scan_data_discount(vm, reference_host):
    vm.wait_healthy(BOOT_TIMEOUT_S)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while True:  # the box may need a moment to reach the host after /healthz answers
        lines.clear()
        try:
            with sim.PosClient("127.0.0.1", vm.pos_port, timeout=10.0) as client:
                result = sim.tobacco_phone_sale(client, lines.append)
        except Exception as exc:
            result, error = None, exc
        else:
            error = None
        if result is not None and result.discount > 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no Scan Data discount: {error or result}\n" + "\n".join(lines))
        time.sleep(3)
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
        machine.power_cut()  # mid-stream: a finalize may be on the wire
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
    finally:
        reference_host.set_fault("ok", 0)
        machine.stop()
