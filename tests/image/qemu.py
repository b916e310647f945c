"""Boot the Connect Box disk image in QEMU and drive it from outside, like a site would.

`Machine` starts QEMU with the serial console on a Unix socket (read by a thread into a log
and a buffer; `Machine.shell` runs a command through the development image's root shell on
it), the second serial port on a TCP socket on 127.0.0.1 (a card reader's cable), and
user-mode networking with the status page and POS port forwarded to 127.0.0.1. `Disk` reads
and writes the GPT disk image's partitions from outside (sfdisk, dd, mtools): no loop devices.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ports import free_port

OVMF = Path("/usr/share/ovmf/OVMF.fd")
MIB = 1024 * 1024

# Boot timeouts. Measured with bench/boot_time.py on 2026-12-03 on the 2-core build machine
# (TCG, one vCPU), power-on -> /healthz 200, other engineers' test suites running alongside:
#   direct kernel boot, load 1.4-4.5:                  48-83 s (median 52; 41 s alone)
#   direct kernel boot, + 2 CPU burners, load 4.4-9.3: 116-217 s (median 159)
#   UEFI boot of slot A, load 7.3-8.3:                 74-96 s (median 77)
#   UEFI boot of slot A, + 2 CPU burners, load 8-10.5: 139-218 s (median 141)
# (the login prompt comes 10-50 s before /healthz). A timeout is the worst loaded boot with
# margin: it tells a hung boot from a slow one and is no performance target; the boot time is
# bench/boot_time.py's figure. UEFI adds the firmware and systemd-boot. A fallback boots a
# broken slot B three times (each a firmware, kernel and initramfs run plus panic=10; measured
# 252 s for the three and slot A's boot at load 4) before slot A boots fully.
BOOT_TIMEOUT_S = 360  # direct kernel boot (worst loaded 217 s x 1.65)
UEFI_BOOT_TIMEOUT_S = 420  # UEFI (worst loaded 218 s x 1.9)
UEFI_FALLBACK_TIMEOUT_S = 3 * UEFI_BOOT_TIMEOUT_S  # three failed attempts of B, then A
# The service alone, restarted in a booted box (the watchdog test: frozen, killed after
# WatchdogSec, started again): RestartSec plus its start-up under TCG.
WATCHDOG_S = 30  # WatchdogSec in image/overlay/etc/systemd/system/connectbox.service
RESTART_TIMEOUT_S = 180

# A fixed address the boot test gives the box on QEMU's user network (10.0.2.0/24, gateway
# 10.0.2.2, DNS 10.0.2.3; DHCP hands out 10.0.2.15): forwarded too, from ports of its own.
STATIC_GUEST = "10.0.2.50"

# What the development image's serial console shows: agetty's prompt (it logs root in by
# itself), then root's shell prompt.
LOGIN_PROMPT = r"login: "
SHELL_PROMPT = r"root@connectbox[^\n]*[#$] "


def development_image() -> dict[str, str]:
    """The development image the boot tests drive (CONNECTBOX_IMAGE_DIR's image.env)."""
    env = image_env(Path(os.environ["CONNECTBOX_IMAGE_DIR"]))
    assert env["CONNECTBOX_IMAGE_VARIANT"] == "development", "the boot tests drive a dev image"
    return env


def image_env(directory: Path) -> dict[str, str]:
    env = {}
    for line in (directory / "image.env").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


@dataclass
class Machine:
    """One QEMU run of a disk image. `uefi` boots through OVMF and systemd-boot; otherwise
    QEMU's direct kernel boot of slot A (faster: no firmware)."""

    image: dict[str, str]
    workdir: Path
    disk: Path | None = None  # default: the built image, with -snapshot
    uefi: bool = False
    snapshot: bool = True
    status_port: int = field(default_factory=free_port)
    pos_port: int = field(default_factory=free_port)
    reader_port: int = field(default_factory=free_port)
    static_status_port: int = field(default_factory=free_port)  # to STATIC_GUEST
    static_pos_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_path = self.workdir / f"console-{uuid.uuid4().hex[:6]}.sock"
        self.log_path = self.workdir / "console.log"
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._console: socket.socket | None = None
        self._healthy_at: float | None = None  # seconds after power-on /healthz first answered
        self._boot_failed = ""
        self.at_static = False  # the page is reached at STATIC_GUEST, not the DHCP address

    # -- life cycle -----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        disk = self.disk or Path(self.image["CONNECTBOX_IMAGE_DISK"])
        accel = os.environ.get("CONNECTBOX_QEMU_ACCEL", "tcg")
        # One vCPU: under TCG a second one starved the guest's RCU thread now and then (a
        # boot hung with "rcu_preempt kthread starved"), and it leaves a host core to the test.
        # -nodefaults: no floppy drive and no CD-ROM, which a box does not have either. A loaded
        # CI machine once spent the whole boot timeout in the initramfs waiting for udev while
        # the floppy driver probed the default (empty) drive ("floppy: error 10").
        argv = [
            "qemu-system-x86_64", "-nodefaults", "-accel", accel, "-m", "1024", "-smp", "1",
            "-display", "none", "-vga", "none", "-monitor", "none",
            "-chardev", f"socket,id=con,path={self.console_path},server=on,wait=off",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=rdr,host=127.0.0.1,port={self.reader_port},server=on,wait=off",
            "-serial", "chardev:rdr",
            "-drive", f"file={disk},format=raw,if=virtio",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.status_port}-:8080,"
            f"hostfwd=tcp:127.0.0.1:{self.pos_port}-:9000,"
            f"hostfwd=tcp:127.0.0.1:{self.static_status_port}-{STATIC_GUEST}:8080,"
            f"hostfwd=tcp:127.0.0.1:{self.static_pos_port}-{STATIC_GUEST}:9000",
            "-device", "virtio-net-pci,netdev=n0",
            "-smbios", "type=1,serial=CB2026-TEST42",
        ]  # fmt: skip
        if self.snapshot:
            argv.append("-snapshot")
        if self.uefi:
            argv += ["-bios", str(OVMF)]
        else:
            argv += [
                "-kernel", self.image["CONNECTBOX_IMAGE_KERNEL"],
                "-initrd", self.image["CONNECTBOX_IMAGE_INITRD"],
                "-append", self.image["CONNECTBOX_IMAGE_CMDLINE"],
            ]  # fmt: skip
        return argv

    def start(self) -> Machine:
        self._buffer.clear()
        self._healthy_at = None
        self._boot_failed = ""
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.started = time.monotonic()
        deadline = time.monotonic() + 30  # QEMU opening its sockets, even on a busy host
        while True:
            try:
                console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                console.connect(str(self.console_path))
                break
            except OSError:
                console.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = (
                        self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                    )
                    raise AssertionError(f"QEMU did not start: {out}") from None
                time.sleep(0.05)
        self._console = console
        threading.Thread(target=self._read_console, args=(console,), daemon=True).start()
        return self

    def _read_console(self, console: socket.socket) -> None:
        with open(self.log_path, "ab") as log:
            while True:
                try:
                    data = console.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                log.write(data)
                log.flush()
                with self._cond:
                    self._buffer += data
                    self._cond.notify_all()

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self._console is not None:
            self._console.close()
            self._console = None

    stop = power_cut

    def reboot(self) -> None:
        """`systemctl reboot` in the guest; returns at the next boot's shell prompt. Then
        `wait_healthy` counts a boot again."""
        assert self._console is not None, "no console"
        self.wait_console(SHELL_PROMPT, timeout=BOOT_TIMEOUT_S)
        with self._cond:
            start = len(self._buffer)
        self.started = time.monotonic()
        self._healthy_at = None
        self._console.sendall(b"systemctl reboot\n")
        # Only getty prints the login prompt: the old shell's next prompt does not count.
        login = self.wait_console(LOGIN_PROMPT, timeout=BOOT_TIMEOUT_S, start=start)
        self.wait_console(SHELL_PROMPT, timeout=BOOT_TIMEOUT_S, start=login.end())

    # -- what the machine shows -------------------------------------------------------------------

    def console_text(self) -> str:
        with self._cond:
            return self._buffer.decode(errors="replace")

    def tail(self, n: int = 4000) -> str:
        return self.console_text()[-n:]

    def wait_console(self, pattern: str, timeout: float, start: int = 0) -> re.Match[bytes]:
        """Until the console output from byte `start` on matches `pattern`."""
        regex = re.compile(pattern.encode(), re.S)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search(self._buffer, start)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise AssertionError(f"console never showed {pattern!r}:\n{self.tail()}")
                self._cond.wait(min(left, 1.0))

    @property
    def page_port(self) -> int:
        return self.static_status_port if self.at_static else self.status_port

    def healthz(self) -> int | None:
        try:
            url = f"http://127.0.0.1:{self.page_port}/healthz"
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status
        except Exception:
            return None

    def wait_healthy(self, timeout: float = BOOT_TIMEOUT_S) -> float:
        """Seconds from power-on until /healthz answers 200 (`timeout` counts from power-on).

        Tests sharing one boot each call this first: once the box has answered, a later call
        allows a service restart (RESTART_TIMEOUT_S from now) rather than a boot; once a boot
        has timed out, later calls fail at once instead of each waiting out another timeout.
        """
        if self._boot_failed:
            raise AssertionError(f"this boot already failed: {self._boot_failed}")
        if self._healthy_at is not None:
            deadline = time.monotonic() + RESTART_TIMEOUT_S
        else:
            deadline = self.started + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                self._boot_failed = "QEMU exited"
                raise AssertionError("QEMU exited:\n" + self.tail())
            if self.healthz() == 200:
                seconds = time.monotonic() - self.started
                if self._healthy_at is None:
                    self._healthy_at = seconds
                return seconds
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if self._healthy_at is not None:
            raise AssertionError(
                f"/healthz answered {self._healthy_at:.0f} s after power-on, then stopped "
                f"(not back within {RESTART_TIMEOUT_S} s):\n{self.tail()}"
            )
        self._boot_failed = f"/healthz not 200 within {timeout} s of power-on"
        raise AssertionError(f"{self._boot_failed}:\n{self.tail()}")

    def status(self) -> dict:
        url = f"http://127.0.0.1:{self.page_port}/api/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    # -- the development image's root shell on the serial console ----------------------------------

    def shell(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run `command` in the guest's root shell; (exit status, output)."""
        assert self._console is not None, "no console"
        self.wait_console(SHELL_PROMPT, timeout=BOOT_TIMEOUT_S)
        tag = uuid.uuid4().hex[:8]
        with self._cond:
            start = len(self._buffer)
        # The markers are built by the shell (quotes split them) so the echoed command line
        # never matches; output comes back between them.
        line = (f"echo '{tag}''-begin'; ( {command} ) 2>&1; echo \"{tag}-end $?\"\n").encode()
        self._console.sendall(line)
        found = self.wait_console(
            rf"{tag}-begin\r?\n(.*?){tag}-end (\d+)", timeout=timeout, start=start
        )
        output = found.group(1).decode(errors="replace").replace("\r\n", "\n")
        return int(found.group(2)), output

    def type_line(self, command: str) -> int:
        """Type `command` into the root shell without waiting for it: the console offset its
        output starts from (for `wait_console`)."""
        assert self._console is not None, "no console"
        self.wait_console(SHELL_PROMPT, timeout=BOOT_TIMEOUT_S)
        with self._cond:
            start = len(self._buffer)
        self._console.sendall(f"{command}\n".encode())
        return start

    def check(self, command: str, timeout: float = 60) -> str:
        status, output = self.shell(command, timeout)
        assert status == 0, f"{command!r} exited {status}:\n{output}"
        return output.strip()

    # -- the card reader cable on the second serial port --------------------------------------

    def reader_cable(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.reader_port), timeout=10)


@dataclass
class Partition:
    number: int
    name: str
    start: int  # bytes
    size: int  # bytes


class Disk:
    """A copy of the GPT disk image, changed from outside: partitions by name, the ESP's files
    through mtools (`mcopy -i disk@@offset`), whole partitions with dd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        table = json.loads(subprocess.run(
            ["sfdisk", "--json", str(path)], check=True, capture_output=True, text=True
        ).stdout)["partitiontable"]  # fmt: skip
        sector = table.get("sectorsize", 512)
        self.partitions = {
            p["name"]: Partition(i + 1, p["name"], p["start"] * sector, p["size"] * sector)
            for i, p in enumerate(table["partitions"])
        }

    @classmethod
    def copy_of(cls, source: str | Path, dest: Path) -> Disk:
        subprocess.run(["cp", "--sparse=always", str(source), str(dest)], check=True)
        return cls(dest)

    def _esp(self) -> str:
        return f"{self.path}@@{self.partitions['cbesp'].start}"

    def esp_list(self, directory: str) -> list[str]:
        done = subprocess.run(
            ["mdir", "-b", "-i", self._esp(), f"::{directory}"],
            check=True, capture_output=True, text=True, env=_mtools_env(),
        )  # fmt: skip
        return sorted(Path(line.strip()).name for line in done.stdout.splitlines() if line.strip())

    def esp_write(self, name: str, content: bytes | Path) -> None:
        source = content
        if isinstance(content, bytes):
            source = self.path.with_suffix(".upload")
            source.write_bytes(content)
        subprocess.run(
            ["mcopy", "-o", "-i", self._esp(), str(source), f"::{name}"],
            check=True, capture_output=True, env=_mtools_env(),
        )  # fmt: skip

    def esp_mkdir(self, name: str) -> None:
        subprocess.run(
            ["mmd", "-i", self._esp(), f"::{name}"], check=True, capture_output=True,
            env=_mtools_env(),
        )  # fmt: skip

    def write_partition(self, name: str, source: Path | None) -> None:
        """dd `source` into partition `name`; None fills it with garbage (a broken slot)."""
        part = self.partitions[name]
        if source is None:
            with open(self.path, "r+b") as disk:
                disk.seek(part.start)
                chunk = bytes(range(256)) * 4096
                for _ in range(4 * MIB // len(chunk) * 16):  # 64 MiB of junk over the superblock
                    disk.write(chunk)
            return
        assert source.stat().st_size <= part.size, "the filesystem is larger than the slot"
        subprocess.run(
            ["dd", f"if={source}", f"of={self.path}", "bs=1M", f"seek={part.start // MIB}",
             "conv=notrunc,sparse", "status=none"],
            check=True,
        )  # fmt: skip


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def need_tools() -> list[str]:
    """Debian tools the image tests use that may be missing."""
    return [t for t in ("qemu-system-x86_64", "sfdisk", "mcopy") if not shutil.which(t)]


# The boot tests' modules: `pytestmark = BOOTS_A_VM`.
BOOTS_A_VM = [
    pytest.mark.skipif(
        not os.environ.get("CONNECTBOX_IMAGE_DIR"),
        reason="boots a VM: runs in the image stage (scripts/test-image, part of .ci/run)",
    ),
    pytest.mark.skipif(bool(need_tools()), reason=f"missing {need_tools()}"),
]
