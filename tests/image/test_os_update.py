"""OS updates over the air, end to end: the development image in QEMU, booted through OVMF and
systemd-boot with boot counting, takes `update_os` commands from the reference host.

Runs in the image stage (`scripts/test-image`), which builds the development image with its
signed slot artefact (`--slot-key`); by hand:

    .venv/bin/python -m provisioning.osimage keygen build/keys/slot.key   # prints the public key
    sudo scripts/build-image --variant development --trusted-key ci-slot=<public key> \
        --slot-key build/keys/slot.key --slot-key-id ci-slot
    CONNECTBOX_IMAGE_DIR=build/image .venv/bin/python -m pytest tests/image/test_os_update.py -s

A UEFI boot costs minutes under TCG, so the scenarios share one disk and follow each other, as
on a box in the field. The box's slot A is first made an older OS (0.0.1) than the build's
artefact. Then:
1. a bad signature, an unknown key and the version already running: answered at once, nothing
   downloaded;
2. a broken new OS (a root filesystem without /sbin/init, signed with the TEST key): written
   to slot B, tried three times, then slot A boots again and reports the failure, once;
3. the build's artefact: the power is cut while the slot is written; slot A boots (slot B has
   no boot entry), and the update goes on;
4. slot B boots, passes its boot check, is blessed and reports success, once, from B.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from provisioning import osimage
from simulators import pos as sim
from simulators.host.keys import TEST_KEY_ID, test_private_key
from simulators.host.rules import DEFAULT_CONFIG
from tests.image.qemu import (
    BOOTS_A_VM,
    MIB,
    UEFI_BOOT_TIMEOUT_S,
    UEFI_FALLBACK_TIMEOUT_S,
    Disk,
    Machine,
    development_image,
)
from tests.provisioning.conftest import record

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "D-DEMO"
OLD = "0.0.1"  # slot A's OS, made older than the build's artefact
BROKEN = "0.0.2"
# Each step waits for the host to hear back: a heartbeat (5 s here), the download and write,
# and for the reboots a UEFI boot each (three failed attempts of slot B before slot A).
ANSWER_S = 120
UPDATE_S = 900 + UEFI_BOOT_TIMEOUT_S
FALLBACK_S = 300 + UEFI_FALLBACK_TIMEOUT_S

pytestmark = BOOTS_A_VM


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    env = development_image()
    assert env.get("CONNECTBOX_IMAGE_OS_ARTEFACT"), "build the image with --slot-key"
    assert osimage.newer(env["CONNECTBOX_IMAGE_OS_VERSION"], BROKEN)
    return env


@pytest.fixture(scope="module")
def host(image):
    from simulators.host.runner import start_in_thread

    config = {**DEFAULT_CONFIG, "heartbeat_s": 5}  # commands arrive within seconds
    running = start_in_thread("127.0.0.1", int(image["CONNECTBOX_IMAGE_HOST_PORT"]), config=config)
    running.recorder = record(running)  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.fixture(scope="module")
def box(image, host, tmp_path_factory):
    work = tmp_path_factory.mktemp("os-update")
    disk = Disk.copy_of(image["CONNECTBOX_IMAGE_DISK"], work / "disk.img")
    with open(disk.path, "r+b") as f:  # a real disk is larger: room for the download
        f.truncate(f.seek(0, os.SEEK_END) + 1024 * MIB)
    _make_slot_a_older(disk, work)
    machine = Machine(image, work / "vm", disk=disk.path, uefi=True, snapshot=False)
    machine.disk_copy = disk  # type: ignore[attr-defined]
    machine.start()
    try:
        yield machine
    finally:
        machine.stop()
        print(f"QEMU console log: {machine.log_path}")


def _make_slot_a_older(disk: Disk, work: Path) -> None:
    """Slot A says it is OS 0.0.1: its version file (debugfs, straight into the partition)
    and its boot entry."""
    (work / "os-version").write_text(OLD + "\n")
    commands = work / "debugfs.cmds"
    commands.write_text(
        f"rm /usr/lib/connectbox/os-version\nwrite {work / 'os-version'} "
        "/usr/lib/connectbox/os-version\n"
    )
    offset = disk.partitions["cbroot-a"].start
    subprocess.run(
        ["debugfs", "-w", "-f", str(commands), f"{disk.path}?offset={offset}"],
        check=True, capture_output=True,
    )  # fmt: skip
    disk.esp_write("/loader/entries/connectbox-a.conf", _entry("a", OLD).encode())


def _entry(slot: str, version: str) -> str:
    return subprocess.run(
        [str(ROOT / "image" / "boot-entry"), slot, version],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def _command(host, args: dict[str, Any]) -> str:
    return host.store.queue_command(DEVICE, "update_os", args)


def _result(host, command_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = {c["command_id"]: c["result"] for c in host.store.commands(DEVICE)}
        if found.get(command_id) is not None:
            return found[command_id]
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for {command_id} within {timeout} s")
        time.sleep(2)


def _posts(host, command_id: str) -> list[int | None]:
    """The statuses of the box's result posts for a command (exactly once: one 200)."""
    suffix = f"/commands/{command_id}/result"
    return [c.status for c in host.recorder.snapshot() if c.path.endswith(suffix)]


def _os(box: Machine) -> dict[str, Any]:
    status = box.status()
    return {**status["os"], "update": status.get("os_update")}


def _wait_os(box: Machine, timeout: float, check) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = _os(box)
            if check(last):
                return last
        except Exception as exc:  # rebooting, or the service not up yet
            last = exc
        time.sleep(1)
    raise AssertionError(f"the box never got there: {last}\n{box.tail()}")


class Sales:
    """A POS selling through the box in a loop: the round trip of every request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rtts: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = sim.PosClient("127.0.0.1", self.port, timeout=10.0)
            try:
                with client:
                    sim.sale_without_loyalty(client, lambda line: None)
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.rtts += client.rtts
            self._stop.wait(0.5)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(30)
        if not self.rtts:
            return f"no answer ({len(self.failures)} sales failed)"
        ordered = sorted(self.rtts)
        p95 = ordered[int(len(ordered) * 0.95)]
        return (
            f"{len(ordered)} requests, median {statistics.median(ordered) * 1000:.0f} ms,"
            f" p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms;"
            f" {len(self.failures)} sales failed"
        )


def _sell_for(box: Machine, seconds: float) -> Sales:
    sales = Sales(box.pos_port)
    time.sleep(seconds)
    return sales


def test_refusals_and_the_running_version_are_answered_at_once(box, host, image):
    box.wait_healthy(UEFI_BOOT_TIMEOUT_S)
    assert _os(box)["version"] == OLD and _os(box)["slot"] == "a"
    artefact = Path(image["CONNECTBOX_IMAGE_OS_ARTEFACT"])
    good = {**_args(artefact), "url": host.publish(artefact.name, artefact)}
    forged = osimage.sign(artefact, good["version"], test_private_key(), "ci-slot")["signature"]
    commands = {
        "bad signature": _command(host, {**good, "signature": forged}),
        "unknown key": _command(host, {**good, "key_id": "prod-k9"}),
        "running version": _command(host, {**good, "version": OLD}),
    }
    results = {what: _result(host, cid, ANSWER_S) for what, cid in commands.items()}
    assert results["bad signature"]["ok"] is False
    assert "signature does not verify with key 'ci-slot'" in results["bad signature"]["detail"]
    assert results["unknown key"]["ok"] is False
    assert "unknown key_id 'prod-k9'" in results["unknown key"]["detail"]
    running = results["running version"]
    assert running == {"ok": True, "detail": f"already running OS {OLD}; nothing to do"}
    assert host.downloads() == []  # nothing was downloaded for any of them
    assert _os(box)["update"] is None
    for command_id in commands.values():
        assert _posts(host, command_id) == [200]


def _args(artefact: Path) -> dict[str, Any]:
    return json.loads(artefact.with_name(artefact.name + ".json").read_text())


def _broken_artefact(image: dict[str, str], work: Path) -> Path:
    """A new OS whose root filesystem has no /sbin/init: the kernel and initramfs come up,
    cannot start it and reboot (panic=10)."""
    tree = work / "broken-root" / "usr" / "lib" / "connectbox"
    tree.mkdir(parents=True)
    (tree / "os-version").write_text(BROKEN + "\n")
    rootfs = work / "broken-root.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "cbroot", "-d", str(work / "broken-root"), str(rootfs),
         "8M"],
        check=True,
    )  # fmt: skip
    return osimage.pack(
        work / f"connectbox-os-{BROKEN}.tar",
        BROKEN,
        rootfs,
        Path(image["CONNECTBOX_IMAGE_KERNEL"]),
        Path(image["CONNECTBOX_IMAGE_INITRD"]),
        {s: _entry(s, BROKEN) for s in osimage.SLOTS},
    )


def test_a_broken_os_falls_back_to_slot_a_which_reports_once(box, host, image, tmp_path):
    artefact = _broken_artefact(image, tmp_path)
    args = osimage.sign(artefact, BROKEN, test_private_key(), TEST_KEY_ID)
    args["url"] = host.publish(artefact.name, artefact)
    console = len(box.console_text())
    began = time.monotonic()
    command_id = _command(host, args)
    result = _result(host, command_id, FALLBACK_S)
    print(f"FIGURE broken OS: command -> failure reported from A: {time.monotonic() - began:.0f} s")
    print(f"FIGURE broken OS: {result['detail']}")
    assert result["ok"] is False
    assert f"OS {BROKEN} on slot b did not pass its boot check" in result["detail"]
    assert "connectbox-b+0-3.conf" in result["detail"]  # three attempts, all spent
    assert f"fell back to OS {OLD} on slot a" in result["detail"]
    tried = box.console_text()[console:].count("root=PARTLABEL=cbroot-b")
    assert tried >= 3, box.tail()
    status = _wait_os(box, 60, lambda s: s["slot"] == "a")
    assert status["version"] == OLD and status["update"] is None
    time.sleep(12)  # two more heartbeats: the result is not posted again
    assert _posts(host, command_id) == [200]


def test_a_power_cut_in_the_slot_write_leaves_slot_a_booting(box, host, image):
    artefact = Path(image["CONNECTBOX_IMAGE_OS_ARTEFACT"])
    args = {**_args(artefact), "url": host.publish(artefact.name, artefact)}
    print(f"FIGURE slot artefact: {artefact.stat().st_size / MIB:.1f} MiB ({artefact.name})")
    idle = _sell_for(box, 10)
    print(f"FIGURE POS before the update: {idle.stop()}")
    box.command_id = _command(host, args)  # type: ignore[attr-defined]
    began = time.monotonic()
    _wait_os(
        box,
        UPDATE_S,
        lambda s: (
            (s["update"] or {}).get("state") == "write"
            and (s["update"] or {}).get("written", 0) >= 64 * MIB
        ),
    )
    print(f"FIGURE command -> 64 MiB of the slot written: {time.monotonic() - began:.0f} s")
    sales = _sell_for(box, 10)
    written = _os(box)["update"]["written"]
    print(f"FIGURE POS during the slot write: {sales.stop()}")
    assert not sales.failures, sales.failures
    box.power_cut()
    disk: Disk = box.disk_copy  # type: ignore[attr-defined]
    assert disk.esp_list("/loader/entries") == ["connectbox-a.conf"], "a half slot was bootable"
    box.start()  # power back (the console starts afresh)
    status = _wait_os(box, UEFI_BOOT_TIMEOUT_S, lambda s: s["slot"] is not None)
    assert status["slot"] == "a" and status["version"] == OLD
    assert "root=PARTLABEL=cbroot-b" not in box.console_text()
    print(f"FIGURE power cut after {written / MIB:.0f} MiB written: slot A booted")


def test_a_to_b_boots_b_which_reports_once(box, host, image):
    command_id = box.command_id  # type: ignore[attr-defined]
    version = image["CONNECTBOX_IMAGE_OS_VERSION"]
    began = time.monotonic()
    result = _result(host, command_id, UPDATE_S)
    print(
        f"FIGURE after the power cut -> success reported from B: {time.monotonic() - began:.0f} s"
    )
    print(f"FIGURE A -> B: {result['detail']}")
    assert result["ok"] is True, result
    assert result["detail"].startswith(
        f"updated OS {OLD} -> {version}: slot b passed its boot check"
    )
    status = _wait_os(box, 60, lambda s: s["slot"] == "b")
    assert status["version"] == version and status["update"] is None
    time.sleep(12)
    assert _posts(host, command_id) == [200]
    assert all(c["result"] is not None for c in host.store.commands(DEVICE))
    inside = box.check("ls /efi/loader/entries; sync").split()
    assert inside == ["connectbox-a.conf", "connectbox-b.conf"], inside
    box.stop()
    disk: Disk = box.disk_copy  # type: ignore[attr-defined]
    assert disk.esp_list("/loader/entries") == ["connectbox-a.conf", "connectbox-b.conf"]
