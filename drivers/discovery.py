"""Find card readers at start and on hot-plug: USB ttys and keyboard-wedge event devices.

:func:`list_readers` enumerates

* every USB serial tty (``ttyUSB*`` behind a USB-serial bridge, ``ttyACM*`` for CDC-ACM
  readers): kind "serial";
* every keyboard-capable input event device (``event*``) of a USB reader vendor listed in
  ``cards.md`` (:data:`KNOWN_VENDORS`): kind "keyboard" (the USB keyboard on the technician's
  desk is not a reader; ``include_unknown_keyboards=True`` lists every USB keyboard).

It uses pyudev, and reads what it needs from sysfs attributes (``idVendor``, ``idProduct``,
``serial`` of the USB device; ``capabilities/key`` and ``name`` of the input device) rather than
from the udev database: where no udev daemon runs (containers, early boot) a pyudev device has
only the kernel's uevent properties (``DEVNAME``, ``DEVPATH``, ``MAJOR``, ``MINOR``,
``SUBSYSTEM``...), no ``ID_VENDOR_ID``, ``ID_SERIAL_SHORT`` or ``ID_INPUT_KEYBOARD``. Those are
used when present. When pyudev cannot be used at all (library or libudev missing),
:func:`list_readers_sysfs` walks ``/sys/class/tty`` and ``/sys/class/input`` up to the USB device
itself, as pyserial's port listing does; its sysfs root is a parameter so tests can build a fake
tree.

:class:`DeviceMonitor` reports readers coming and going, from a pyudev netlink monitor (the
"udev" source when a udev daemon runs, else the kernel's own uevents) or, when no netlink
monitor can be created, by re-listing every ``poll_interval_s``. :func:`matches` applies a
configuration rule (vendor, product, serial, USB port, device node) to a reader.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: USB vendor ids of card-reader and scanner makers (cards.md, "Identifying readers").
KNOWN_VENDORS: dict[str, str] = {
    "0801": "MagTek",
    "0acd": "ID TECH",
    "0c2e": "Honeywell",
    "0536": "Honeywell (Hand Held Products)",
    "05e0": "Zebra (Symbol)",
    "05f9": "Datalogic",
    "080c": "Datalogic",
    "1eab": "Newland",
    "065a": "Opticon",
    "0404": "NCR",
}

#: USB-serial bridges: the reader hides behind them (its own vendor id is not visible).
USB_SERIAL_BRIDGES: dict[str, str] = {
    "0403": "FTDI",
    "067b": "Prolific",
    "10c4": "Silicon Labs",
    "1a86": "WCH",
}

SERIAL_TTY_PREFIXES = ("ttyUSB", "ttyACM")
KINDS = ("serial", "keyboard")
RULE_KEYS = ("vendor_id", "product_id", "serial", "port_path", "devnode", "kind", "name")

# A keyboard wedge must at least type digits and ENTER (KEY_1..KEY_0 = 2..11, KEY_ENTER = 28).
_REQUIRED_KEYS = tuple(range(2, 12)) + (28,)
_UDEV_CONTROL = "/run/udev/control"


@dataclass(frozen=True)
class DeviceInfo:
    """One reader as found on the system.

    ``vendor_id``/``product_id`` are 4 lower-case hex digits; ``serial`` is the USB serial number
    string; ``port_path`` is the USB device's kernel name (bus-port.port..., like "1-1.2"), which
    identifies the physical socket; ``name`` is human-readable (USB manufacturer and product for
    serial readers, the input device name for keyboard wedges).
    """

    devnode: str
    kind: str
    vendor_id: str | None
    product_id: str | None
    serial: str | None
    port_path: str | None
    name: str | None

    @property
    def vendor_name(self) -> str | None:
        return vendor_name(self.vendor_id)

    @property
    def behind_bridge(self) -> bool:
        """True for a tty of a USB-serial bridge: the reader itself is not identified."""
        return self.vendor_id in USB_SERIAL_BRIDGES


def vendor_name(vendor_id: str | int | None) -> str | None:
    """The maker behind a USB vendor id, from :data:`KNOWN_VENDORS` or the bridge table."""
    if vendor_id is None:
        return None
    key = normalize_usb_id(vendor_id)
    return KNOWN_VENDORS.get(key) or USB_SERIAL_BRIDGES.get(key)


def normalize_usb_id(value: str | int) -> str:
    """``0x0801``, ``"801"``, ``"0801"``, ``2049`` → ``"0801"``; ValueError if not a 16-bit id."""
    if isinstance(value, bool):
        raise ValueError(f"not a USB id: {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        text = text.removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,4}", text):
            raise ValueError(f"not a USB id (1 to 4 hex digits): {value!r}")
        number = int(text, 16)
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"not a USB id: {value!r}")
    return f"{number:04x}"


# -- rules ------------------------------------------------------------------------------------


def matches(info: DeviceInfo, rule: Mapping[str, Any]) -> bool:
    """True if every key given in ``rule`` matches ``info``.

    Keys: ``vendor_id``, ``product_id`` (hex, any case, ``0x`` optional), ``serial`` (case-
    insensitive), ``port_path`` (exact, like "1-1.2"), ``devnode`` (the node or a symlink to it,
    like ``/dev/connectbox/serial-...``), ``kind`` ("serial" or "keyboard"), ``name`` (case-
    insensitive substring). A key whose value is None counts as not given; an empty rule matches
    every reader. Unknown keys raise ValueError, so a misspelt key cannot match everything.
    """
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"unknown reader rule key(s): {', '.join(unknown)}")
    for key, wanted in rule.items():
        if wanted is None:
            continue
        have = getattr(info, key)
        if have is None:
            return False
        if key in ("vendor_id", "product_id"):
            if normalize_usb_id(wanted) != normalize_usb_id(have):
                return False
        elif key == "serial":
            if str(wanted).strip().casefold() != have.casefold():
                return False
        elif key == "name":
            if str(wanted).casefold() not in have.casefold():
                return False
        elif key == "devnode":
            wanted = os.fspath(wanted)
            if wanted != have and os.path.realpath(wanted) != os.path.realpath(have):
                return False
        elif str(wanted) != have:
            return False
    return True


# -- listing ----------------------------------------------------------------------------------


def list_readers(
    context: Any = None,
    *,
    sys_root: str | os.PathLike[str] | None = None,
    include_unknown_keyboards: bool = False,
) -> list[DeviceInfo]:
    """The readers attached now (see the module docstring), sorted by device node.

    ``context`` is a ``pyudev.Context`` (one is made if None). ``sys_root`` forces the pure sysfs
    walk over that tree (pyudev always reads the real /sys).
    """
    if sys_root is not None:
        return list_readers_sysfs(sys_root, include_unknown_keyboards=include_unknown_keyboards)
    try:
        if context is None:
            import pyudev

            context = pyudev.Context()
        found = list_readers_pyudev(context, include_unknown_keyboards=include_unknown_keyboards)
    except (ImportError, OSError) as exc:
        log.info("pyudev unusable (%s); listing readers from sysfs", exc)
        return list_readers_sysfs(include_unknown_keyboards=include_unknown_keyboards)
    return found


def list_readers_pyudev(
    context: Any, *, include_unknown_keyboards: bool = False
) -> list[DeviceInfo]:
    """Enumerate with pyudev; attributes come from sysfs, so no udev database is needed."""
    found: list[DeviceInfo] = []
    for subsystem in ("tty", "input"):
        for device in context.list_devices(subsystem=subsystem):
            info = info_from_udev(device, include_unknown_keyboards=include_unknown_keyboards)
            if info is not None:
                found.append(info)
    return sorted(found, key=_sort_key)


def info_from_udev(device: Any, *, include_unknown_keyboards: bool = False) -> DeviceInfo | None:
    """A :class:`DeviceInfo` for a pyudev device if it is a reader, else None."""
    try:
        subsystem = device.subsystem
        sys_name = device.sys_name
        if subsystem == "tty":
            if not sys_name.startswith(SERIAL_TTY_PREFIXES):
                return None
            kind = "serial"
        elif subsystem == "input":
            if not sys_name.startswith("event"):
                return None
            kind = "keyboard"
        else:
            return None
        usb = device.find_parent("usb", "usb_device")
        if usb is None:
            return None
        props = device.properties
        vendor = _usb_id(props.get("ID_VENDOR_ID")) or _usb_id(_udev_attr(usb, "idVendor"))
        product = _usb_id(props.get("ID_MODEL_ID")) or _usb_id(_udev_attr(usb, "idProduct"))
        serial = props.get("ID_SERIAL_SHORT") or _udev_attr(usb, "serial")
        devnode = device.device_node or _default_devnode(kind, sys_name, "/dev")
        if kind == "keyboard":
            if vendor not in KNOWN_VENDORS and not include_unknown_keyboards:
                return None
            parent = device.parent
            if props.get("ID_INPUT_KEYBOARD") == "1":
                keyboard = True
            else:
                bitmap = None
                if parent is not None:
                    bitmap = _udev_attr(parent, "capabilities/key")
                    if bitmap is None:
                        bitmap = parent.properties.get("KEY")
                keyboard = _is_keyboard_bitmap(bitmap)
            if not keyboard:
                return None
            name = _udev_attr(parent, "name") if parent is not None else None
        else:
            name = _join_name(_udev_attr(usb, "manufacturer"), _udev_attr(usb, "product"))
        return DeviceInfo(
            devnode=devnode,
            kind=kind,
            vendor_id=vendor,
            product_id=product,
            serial=_clean(serial),
            port_path=usb.sys_name,
            name=name,
        )
    except (LookupError, OSError, ValueError) as exc:  # a device vanishing under us
        log.debug("skipping %r: %s", device, exc)
        return None


def list_readers_sysfs(
    sys_root: str | os.PathLike[str] = "/sys",
    dev_root: str = "/dev",
    *,
    include_unknown_keyboards: bool = False,
) -> list[DeviceInfo]:
    """Enumerate from sysfs alone: ``class/tty`` and ``class/input`` up to the USB device."""
    root = os.path.realpath(os.fspath(sys_root))
    found: list[DeviceInfo] = []
    for name in _listdir(os.path.join(root, "class", "tty")):
        if name.startswith(SERIAL_TTY_PREFIXES):
            info = _sysfs_info(root, dev_root, "tty", name, include_unknown_keyboards)
            if info is not None:
                found.append(info)
    for name in _listdir(os.path.join(root, "class", "input")):
        if name.startswith("event"):
            info = _sysfs_info(root, dev_root, "input", name, include_unknown_keyboards)
            if info is not None:
                found.append(info)
    return sorted(found, key=_sort_key)


def _sysfs_info(
    root: str, dev_root: str, subsystem: str, name: str, include_unknown_keyboards: bool
) -> DeviceInfo | None:
    try:
        devdir = os.path.realpath(os.path.join(root, "class", subsystem, name))
        usb = _usb_device_dir(devdir, root)
        if usb is None:
            return None
        vendor = _usb_id(_read_attr(usb, "idVendor"))
        product = _usb_id(_read_attr(usb, "idProduct"))
        devname = _read_uevent(devdir).get("DEVNAME")
        kind = "serial" if subsystem == "tty" else "keyboard"
        if devname:
            devnode = os.path.join(dev_root, devname)
        else:
            devnode = _default_devnode(kind, name, dev_root)
        if kind == "keyboard":
            if vendor not in KNOWN_VENDORS and not include_unknown_keyboards:
                return None
            parent = os.path.dirname(devdir)  # .../inputN/eventM
            if not _is_keyboard_bitmap(_read_attr(parent, "capabilities/key")):
                return None
            label = _read_attr(parent, "name")
        else:
            label = _join_name(_read_attr(usb, "manufacturer"), _read_attr(usb, "product"))
        return DeviceInfo(
            devnode=devnode,
            kind=kind,
            vendor_id=vendor,
            product_id=product,
            serial=_clean(_read_attr(usb, "serial")),
            port_path=os.path.basename(usb),
            name=label,
        )
    except (OSError, ValueError) as exc:
        log.debug("skipping %s/%s: %s", subsystem, name, exc)
        return None


def _usb_device_dir(start: str, root: str) -> str | None:
    """Walk up from a class device to the USB device (the directory with idVendor)."""
    stop = os.path.join(root, "devices")
    path = start
    while path.startswith(stop + os.sep):
        if os.path.isfile(os.path.join(path, "idVendor")) and os.path.isfile(
            os.path.join(path, "idProduct")
        ):
            return path
        path = os.path.dirname(path)
    return None


def _read_attr(directory: str, attr: str) -> str | None:
    try:
        with open(os.path.join(directory, attr), "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def _read_uevent(directory: str) -> dict[str, str]:
    text = _read_attr(directory, "uevent") or ""
    pairs = (line.partition("=") for line in text.splitlines())
    return {key: value for key, sep, value in pairs if sep}


def _udev_attr(device: Any, attr: str) -> str | None:
    try:
        value = device.attributes.get(attr)
    except (KeyError, OSError):
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _usb_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalize_usb_id(value)
    except ValueError:
        return None


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _join_name(*parts: str | None) -> str | None:
    words = [p.strip() for p in parts if p and p.strip()]
    return " ".join(words) or None


def _default_devnode(kind: str, sys_name: str, dev_root: str) -> str:
    if kind == "keyboard":
        return os.path.join(dev_root, "input", sys_name)
    return os.path.join(dev_root, sys_name)


def parse_key_bitmap(text: str | None) -> int:
    """Parse an input ``capabilities/key`` bitmap (hex words, most significant first).

    The kernel prints the first word unpadded and the others zero-padded to the word size
    (16 hex digits on 64-bit kernels, 8 on 32-bit), so the word size is read off the padding.
    """
    words = (text or "").split()
    if not words:
        return 0
    rest = words[1:]
    width = 8 if rest and max(len(w) for w in rest) <= 8 else 16
    bits = 0
    for word in words:
        bits = (bits << (4 * width)) | int(word, 16)
    return bits


def _is_keyboard_bitmap(text: str | None) -> bool:
    try:
        bits = parse_key_bitmap(text)
    except ValueError:
        return False
    return all(bits >> key & 1 for key in _REQUIRED_KEYS)


def _sort_key(info: DeviceInfo) -> tuple:
    parts = re.split(r"(\d+)", info.devnode)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


# -- hot-plug ---------------------------------------------------------------------------------


class DeviceMonitor:
    """Report readers as they come (``on_add(info)``) and go (``on_remove(info)``).

    ``start()`` first makes the monitor live, then (``emit_existing=True``) reports the readers
    already attached, so none plugged in between is missed; duplicates are suppressed (a reader
    is reported again only if it went away or its identity changed). The monitor is a pyudev
    netlink monitor with a ``MonitorObserver`` thread: source "udev" when a udev daemon runs
    (events arrive after udev set permissions and ``/dev/connectbox`` links), else "kernel". If
    no netlink monitor can be created (or ``use_netlink=False``), a thread re-lists every
    ``poll_interval_s``. ``mode`` says which is in use. Callbacks run in the monitor's thread.
    """

    def __init__(
        self,
        on_add: Callable[[DeviceInfo], None],
        on_remove: Callable[[DeviceInfo], None],
        *,
        context: Any = None,
        poll_interval_s: float = 2.0,
        use_netlink: bool = True,
        emit_existing: bool = True,
        include_unknown_keyboards: bool = False,
        lister: Callable[[], list[DeviceInfo]] | None = None,
        source: str | None = None,
    ) -> None:
        self.on_add = on_add
        self.on_remove = on_remove
        self.context = context
        self.poll_interval_s = float(poll_interval_s)
        self.use_netlink = use_netlink and lister is None
        self.emit_existing = emit_existing
        self.include_unknown_keyboards = include_unknown_keyboards
        self._lister = lister
        self.source = source
        self.mode = "stopped"
        self._known: dict[str, DeviceInfo] = {}
        self._lock = threading.RLock()
        # start() and stop() only; never held while a callback runs (callbacks hold _lock).
        self._life = threading.Lock()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread: threading.Thread | None = None

    @property
    def readers(self) -> list[DeviceInfo]:
        """The readers currently known to be attached."""
        with self._lock:
            return sorted(self._known.values(), key=_sort_key)

    def start(self) -> None:
        with self._life:
            if self.mode != "stopped":
                raise RuntimeError("monitor already started")
            self._stop = threading.Event()  # a fresh one: an old poll thread keeps its own, set
            if self.use_netlink:
                try:
                    self._start_netlink()
                except Exception as exc:  # no netlink (permissions, no pyudev, no libudev)
                    log.warning(
                        "no netlink device monitor (%s); polling every %.1f s",
                        exc,
                        self.poll_interval_s,
                    )
                    self._observer = None
            if self._observer is None:
                self.mode = "polling"
                self._thread = threading.Thread(
                    target=self._poll_loop, args=(self._stop,), name="device poll", daemon=True
                )
                self._thread.start()
        if self.emit_existing:
            self.rescan()
        else:
            with self._lock:
                self._known = {info.devnode: info for info in self._list()}

    def stop(self) -> None:
        """Idempotent; safe from any thread (a callback's too: it does not wait for itself)."""
        with self._life:
            self._stop.set()
            observer, self._observer = self._observer, None
            thread, self._thread = self._thread, None
            self.mode = "stopped"
        if observer is not None:
            observer.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def rescan(self) -> None:
        """List the readers now and report the differences from what is known."""
        with self._lock:  # held while listing, so an event cannot interleave with the diff
            current = {info.devnode: info for info in self._list()}
            for devnode, old in list(self._known.items()):
                if current.get(devnode) != old:
                    del self._known[devnode]
                    self._call(self.on_remove, old)
            for devnode, info in current.items():
                if devnode not in self._known:
                    self._known[devnode] = info
                    self._call(self.on_add, info)

    # -- internals ----------------------------------------------------------------------------

    def _list(self) -> list[DeviceInfo]:
        if self._lister is not None:
            return list(self._lister())
        return list_readers(self.context, include_unknown_keyboards=self.include_unknown_keyboards)

    def _start_netlink(self) -> None:
        import pyudev

        if self.context is None:
            self.context = pyudev.Context()
        source = self.source or ("udev" if os.path.exists(_UDEV_CONTROL) else "kernel")
        monitor = pyudev.Monitor.from_netlink(self.context, source=source)
        monitor.filter_by("tty")
        monitor.filter_by("input")
        observer = pyudev.MonitorObserver(monitor, callback=self._on_event, name="device monitor")
        observer.start()
        self._observer = observer
        self.mode = f"netlink ({source})"

    def _on_event(self, device: Any) -> None:
        try:
            action = device.action
            if action == "remove":
                devnode = device.device_node or device.properties.get("DEVNAME")
                if devnode and not devnode.startswith("/"):
                    devnode = "/dev/" + devnode
                with self._lock:
                    old = self._known.pop(devnode, None) if devnode else None
                    if old is not None:
                        self._call(self.on_remove, old)
            elif action in ("add", "change", "bind"):
                info = info_from_udev(
                    device, include_unknown_keyboards=self.include_unknown_keyboards
                )
                if info is None:
                    return
                with self._lock:
                    old = self._known.get(info.devnode)
                    if old == info:
                        return
                    if old is not None:
                        self._call(self.on_remove, old)
                    self._known[info.devnode] = info
                    self._call(self.on_add, info)
        except Exception:
            log.exception("device event %r", device)

    def _poll_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll_interval_s):
            try:
                self.rescan()
            except Exception:
                log.exception("device rescan failed")

    @staticmethod
    def _call(callback: Callable[[DeviceInfo], None], info: DeviceInfo) -> None:
        try:
            callback(info)
        except Exception:
            log.exception("device monitor callback %r failed", callback)
