"""Discovery: listing here, the sysfs walk over a fake tree, rules, hot-plug, layering."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drivers.discovery import (
    KNOWN_VENDORS,
    USB_SERIAL_BRIDGES,
    DeviceInfo,
    DeviceMonitor,
    list_readers,
    list_readers_pyudev,
    list_readers_sysfs,
    matches,
    normalize_usb_id,
    parse_key_bitmap,
    vendor_name,
)
from tests.imports import imports_of

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ROOT / "drivers"

# A real keyboard's capabilities/key (64-bit kernel): keys 1..63 and more.
KEYBOARD_KEYS = "120013 00803078f800d001 feffffdfffefffff fffffffffffffffe"
MOUSE_KEYS = "1f0000 " + " ".join(["0" * 16] * 4)  # BTN_LEFT..BTN_TASK only, as printed


class FakeSysfs:
    """A sysfs tree in a temporary directory: /devices plus the /class symlinks into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.usb = root / "devices/pci0000:00/0000:00:14.0/usb1"
        (root / "class/tty").mkdir(parents=True)
        (root / "class/input").mkdir(parents=True)

    @staticmethod
    def _write(directory: Path, **attrs: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in attrs.items():
            path = directory / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")

    def _link(self, subsystem: str, name: str, target: Path) -> None:
        link = self.root / "class" / subsystem / name
        os.symlink(os.path.relpath(target, link.parent), link)

    def usb_device(self, port: str, vid: str, pid: str, **attrs: str) -> Path:
        directory = self.usb / "1-1" / port if port != "1-1" else self.usb / "1-1"
        self._write(directory, idVendor=vid, idProduct=pid, **attrs)
        return directory

    def tty(self, usb_dir: Path | None, name: str, usb_serial: bool = True) -> Path:
        if usb_dir is None:
            parent = self.root / "devices/platform/serial8250"
        else:
            parent = usb_dir / f"{usb_dir.name}:1.0"
            self._write(parent, bInterfaceNumber="00")
            if usb_serial:
                parent = parent / name  # the usb-serial port device
                parent.mkdir(parents=True, exist_ok=True)
        directory = parent / "tty" / name
        self._write(directory, uevent=f"MAJOR=188\nMINOR=0\nDEVNAME={name}")
        self._link("tty", name, directory)
        return directory

    def event(self, usb_dir: Path, number: int, name: str, keys: str) -> Path:
        interface = usb_dir / f"{usb_dir.name}:1.0"
        self._write(interface, bInterfaceNumber="00")
        input_dir = interface / f"0003:0000:0000.000{number}" / "input" / f"input{number}"
        self._write(input_dir, name=name, capabilities__key=keys, capabilities__ev="120013")
        event = input_dir / f"event{number}"
        self._write(event, uevent=f"MAJOR=13\nMINOR={64 + number}\nDEVNAME=input/event{number}")
        self._link("input", f"event{number}", event)
        self._link("input", f"input{number}", input_dir)
        return event


@pytest.fixture
def sysfs(tmp_path) -> FakeSysfs:
    fake = FakeSysfs(tmp_path / "sys")
    ftdi = fake.usb_device(
        "1-1.2", "0403", "6001", serial="A10K3XYZ", manufacturer="FTDI", product="FT232R USB UART"
    )
    fake.tty(ftdi, "ttyUSB0")
    magtek_cdc = fake.usb_device("1-1.3", "0801", "0011", product="USB Swipe Reader")
    fake.tty(magtek_cdc, "ttyACM0", usb_serial=False)
    magtek_hid = fake.usb_device(
        "1-1.4", "0801", "0001", serial="B0C1D2", manufacturer="Mag-Tek", product="USB Swipe Reader"
    )
    fake.event(magtek_hid, 3, "Mag-Tek USB Swipe Reader", KEYBOARD_KEYS)
    desk_keyboard = fake.usb_device("1-1.5", "046d", "c31c", product="USB Keyboard")
    fake.event(desk_keyboard, 4, "Logitech USB Keyboard", KEYBOARD_KEYS)
    honeywell_pos = fake.usb_device("1-1.6", "0c2e", "0b61")
    fake.event(honeywell_pos, 5, "Honeywell HID POS (buttons only)", MOUSE_KEYS)
    fake.tty(None, "ttyS0")  # a platform UART: not a USB reader
    return fake


def test_list_readers_runs_here_and_returns_device_infos():
    readers = list_readers()
    assert isinstance(readers, list)
    assert all(isinstance(info, DeviceInfo) for info in readers)
    assert all(info.kind in ("serial", "keyboard") for info in readers)


def test_pyudev_and_sysfs_listings_agree_on_this_machine():
    import pyudev

    def identity(info: DeviceInfo) -> tuple:
        # The serial may differ: with a udev database pyudev prefers usb_id's sanitised one.
        return (info.devnode, info.kind, info.vendor_id, info.product_id, info.port_path)

    from_udev = list_readers_pyudev(pyudev.Context())
    assert [identity(i) for i in from_udev] == [identity(i) for i in list_readers_sysfs()]


def test_sysfs_fallback_over_a_fake_tree(sysfs):
    readers = list_readers_sysfs(sysfs.root)
    assert readers == [
        DeviceInfo(
            "/dev/input/event3",
            "keyboard",
            "0801",
            "0001",
            "B0C1D2",
            "1-1.4",
            "Mag-Tek USB Swipe Reader",
        ),
        DeviceInfo("/dev/ttyACM0", "serial", "0801", "0011", None, "1-1.3", "USB Swipe Reader"),
        DeviceInfo(
            "/dev/ttyUSB0", "serial", "0403", "6001", "A10K3XYZ", "1-1.2", "FTDI FT232R USB UART"
        ),
    ]
    assert list_readers(sys_root=sysfs.root) == readers
    assert readers[2].behind_bridge and readers[2].vendor_name == "FTDI"
    assert readers[0].vendor_name == "MagTek"


def test_sysfs_fallback_lists_unknown_keyboards_on_request(sysfs):
    readers = list_readers_sysfs(sysfs.root, include_unknown_keyboards=True)
    assert [r.devnode for r in readers if r.kind == "keyboard"] == [
        "/dev/input/event3",
        "/dev/input/event4",
    ]


def test_sysfs_fallback_on_a_missing_tree(tmp_path):
    assert list_readers_sysfs(tmp_path / "nothing") == []


def test_key_bitmap_parsing_64_and_32_bit():
    bits64 = parse_key_bitmap(KEYBOARD_KEYS)
    bits32 = parse_key_bitmap("120013 00803078 f800d001 feffffdf ffefffff ffffffff fffffffe")
    assert bits64 == bits32
    assert bits64 >> 28 & 1 and not bits64 & 1
    assert parse_key_bitmap("") == 0
    assert parse_key_bitmap(MOUSE_KEYS) >> 0x110 & 1  # BTN_LEFT


MAGTEK = DeviceInfo("/dev/ttyACM0", "serial", "0801", "0011", "B0C1D2", "1-1.2", "Mag-Tek Reader")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({}, True),
        ({"vendor_id": "0801"}, True),
        ({"vendor_id": "0x0801", "product_id": "11"}, True),
        ({"vendor_id": 0x0801}, True),
        ({"vendor_id": "0ACD"}, False),
        ({"vendor_id": "0801", "product_id": "0012"}, False),
        ({"serial": "b0c1d2"}, True),
        ({"serial": "B0C1D3"}, False),
        ({"port_path": "1-1.2"}, True),
        ({"port_path": "1-1.3"}, False),
        ({"devnode": "/dev/ttyACM0"}, True),
        ({"devnode": "/dev/ttyACM1"}, False),
        ({"kind": "serial", "name": "mag-tek"}, True),
        ({"kind": "keyboard"}, False),
        ({"vendor_id": "0801", "serial": None}, True),
    ],
)
def test_matches(rule, expected):
    assert matches(MAGTEK, rule) is expected


def test_matches_fields_the_device_lacks_and_devnode_symlinks(tmp_path):
    bare = DeviceInfo(str(tmp_path / "ttyUSB0"), "serial", "1a86", "7523", None, "1-1.5", None)
    assert not matches(bare, {"serial": "X"})
    assert matches(bare, {"vendor_id": "1A86", "port_path": "1-1.5"})
    (tmp_path / "ttyUSB0").write_text("")
    (tmp_path / "connectbox").mkdir()
    link = tmp_path / "connectbox" / "serial-1a86-7523-port-1-1.5"
    link.symlink_to(tmp_path / "ttyUSB0")
    assert matches(bare, {"devnode": str(link)})


def test_matches_rejects_unknown_keys_and_bad_ids():
    with pytest.raises(ValueError, match="vendorid"):
        matches(MAGTEK, {"vendorid": "0801"})
    with pytest.raises(ValueError):
        matches(MAGTEK, {"vendor_id": "MagTek"})


def test_usb_ids_and_vendor_tables():
    assert normalize_usb_id("0x0ACD") == "0acd" == normalize_usb_id(0x0ACD)
    for bad in ("", "12345", "xyz", -1, 0x10000, True):
        with pytest.raises(ValueError):
            normalize_usb_id(bad)
    cards_md = {"0801", "0acd", "0c2e", "0536", "05e0", "05f9", "080c", "1eab", "065a", "0404"}
    assert set(KNOWN_VENDORS) == cards_md
    assert set(USB_SERIAL_BRIDGES) == {"0403", "067b", "10c4", "1a86"}
    assert vendor_name("0ACD") == "ID TECH" and vendor_name("ffff") is None


class Events:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.log: list[tuple[str, str]] = []

    def add(self, info: DeviceInfo) -> None:
        with self.cond:
            self.log.append(("add", info.devnode))
            self.cond.notify_all()

    def remove(self, info: DeviceInfo) -> None:
        with self.cond:
            self.log.append(("remove", info.devnode))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.log) >= count, timeout)
            return list(self.log)


def test_polling_monitor_reports_plug_and_unplug_in_a_fake_sysfs(sysfs):
    events = Events()
    monitor = DeviceMonitor(
        events.add,
        events.remove,
        lister=lambda: list_readers_sysfs(sysfs.root),
        poll_interval_s=0.05,
    )
    monitor.start()
    try:
        assert monitor.mode == "polling"
        assert events.wait(3) == [
            ("add", "/dev/input/event3"),
            ("add", "/dev/ttyACM0"),
            ("add", "/dev/ttyUSB0"),
        ]
        wch = sysfs.usb_device("1-1.7", "1a86", "7523", product="USB Serial")
        sysfs.tty(wch, "ttyUSB1")
        assert events.wait(4)[3] == ("add", "/dev/ttyUSB1")
        (sysfs.root / "class/tty/ttyUSB0").unlink()
        assert events.wait(5)[4] == ("remove", "/dev/ttyUSB0")
        time.sleep(0.2)
        assert len(events.log) == 5  # nothing reported twice
        assert [r.devnode for r in monitor.readers] == [
            "/dev/input/event3",
            "/dev/ttyACM0",
            "/dev/ttyUSB1",
        ]
    finally:
        monitor.stop()
    assert monitor.mode == "stopped"


def test_netlink_monitor_starts_and_stops_on_this_machine():
    events = Events()
    monitor = DeviceMonitor(events.add, events.remove)
    monitor.start()
    try:
        # Here: a kernel-source netlink monitor (no udev daemon) or, if netlink is refused,
        # the polling fallback. Either way it lists what is attached.
        assert monitor.mode.startswith("netlink") or monitor.mode == "polling"
        assert monitor.readers == list_readers()
    finally:
        monitor.stop()
    assert monitor.mode == "stopped"


def test_polling_fallback_when_netlink_is_not_wanted():
    monitor = DeviceMonitor(lambda i: None, lambda i: None, use_netlink=False, poll_interval_s=0.05)
    monitor.start()
    try:
        assert monitor.mode == "polling"
    finally:
        monitor.stop()


# -- layering: drivers/ never imports app/ ----------------------------------------------------


def _driver_modules() -> list[str]:
    modules = []
    for path in sorted(DRIVERS.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # importing it runs the program; the static check above covers it
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    return modules


def test_no_driver_module_imports_app_or_the_simulators_statically():
    assert imports_of("drivers", "app", "simulators") == []


def test_importing_every_driver_module_loads_nothing_from_app():
    modules = _driver_modules()
    assert "drivers.frames" in modules and "drivers.discovery" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'app' or m.startswith('app.'))\n"
        "print('APP-MODULES:' + ','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "APP-MODULES:\n" in result.stdout, f"drivers/ pulled in app: {result.stdout}"
