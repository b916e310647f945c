"""The OS slot writer: the one privileged step of an OS update (`update_os`).

The service runs as an unprivileged user and cannot write a disk partition, the EFI system
partition or reboot the box, and should not be able to. This small helper can, and does
nothing else: `connectbox-os-slot.socket` (a Unix socket only root and the `connectbox` group
may open) starts one `connectbox-os-slot@.service` per connection, as root in a sandbox of its
own, from the read-only root slot (never from the service's writable software root). Each
connection carries one request, a JSON line; the answers are JSON lines, the last one with
`"done": true`:

- `{"action": "status"}`: the running slot and version, and each slot's boot entry
  (`good`: blessed, `trying`: attempts left, `bad`: none left, `none`).
- `{"action": "install", "version", "sha256", "signature", "key_id", "slot"}` with the
  artefact's open file descriptor passed along (SCM_RIGHTS, so no path the service controls is
  ever opened by root): checks the signature over `sha256` with the trusted keys of the
  configuration (`[policy] trusted_keys`, readable by root only), that `slot` (if given) is the
  inactive one; removes the inactive slot's boot entry and
  kernel; reads the artefact once (provisioning/osimage.py) while it writes the root filesystem
  into the inactive slot's partition at a bounded rate (synced and dropped from the page cache
  every few MiB, so the POS's journal and the running system keep the disk and the memory), the
  kernel and initrd to the ESP; only when every byte hashed to the signed sha256 (and each part
  to the manifest) does it add the slot's entry with boot attempts, `connectbox-<slot>+3.conf`.
  A power cut or any failure before that leaves a slot without an entry: never booted.
  Progress lines (`{"written": n, "of": total}`) go out as it writes; when the service hangs up,
  the write stops.
- `{"action": "reboot", "slot": "b"}`: reboots, only when that slot is the inactive one and its
  entry has attempts left.

The service already checked the artefact; this checks it again, because it trusts nothing the
service hands it. Nothing here imports `app/`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import select
import shlex
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning import osimage
from provisioning.osimage import SLOTS, ArtefactStream, UpdateRejected
from provisioning.releases import verify_signature
from provisioning.store import fsync_dir, lock_exclusive

log = logging.getLogger("connectbox.osslot")

SOCKET = Path("/run/connectbox-os-slot.sock")
LOCK_WAIT_S = 60.0
TRIES = 3  # boot attempts of a new slot before systemd-boot falls back (docs/image.md)
_ENTRY = re.compile(r"^connectbox-([ab])(?:\+(\d+)(?:-(\d+))?)?\.conf$")
Progress = Callable[[int, int], None]


@dataclass
class Layout:
    """Where things are on the box (tests point these at files)."""

    esp: Path = Path("/efi")
    devices: Path = Path("/dev/disk/by-partlabel")  # cbroot-a, cbroot-b
    config: Path = Path("/etc/connectbox/connectbox.toml")
    cmdline: Path = osimage.CMDLINE
    os_version: Path = osimage.OS_VERSION_FILE
    tries: int = TRIES
    max_rate: float = 24 * 1024 * 1024  # bytes/s written to the slot
    sync_bytes: int = 8 * 1024 * 1024  # synced, dropped from the cache and reported this often
    reboot: list[str] = field(default_factory=lambda: ["systemctl", "--no-block", "reboot"])

    def device(self, slot: str) -> Path:
        return self.devices / f"cbroot-{slot}"

    @property
    def entries(self) -> Path:
        return self.esp / "loader" / "entries"


class Aborted(Exception):
    """The service hung up: the write stops (the slot stays without a boot entry)."""


# What the boot entries say.


def slot_states(layout: Layout) -> dict[str, dict[str, Any]]:
    """Each slot's boot entry: {"state": good|trying|bad|none, "entry", "version"}."""
    states: dict[str, dict[str, Any]] = {s: {"state": "none"} for s in SLOTS}
    try:
        names = sorted(p.name for p in layout.entries.iterdir())
    except OSError:
        names = []
    for name in names:
        match = _ENTRY.match(name)
        if not match:
            continue
        slot, left, done = match.group(1), match.group(2), match.group(3)
        state = "good" if left is None else ("trying" if int(left) > 0 else "bad")
        version = None
        with contextlib.suppress(OSError):
            for line in (layout.entries / name).read_text(errors="replace").splitlines():
                if line.startswith("version "):
                    version = line.split(" ", 1)[1].strip()
        states[slot] = {
            "state": state,
            "entry": name,
            "version": version,
            "tries_done": int(done or 0),
        }
    return states


def status(layout: Layout) -> dict[str, Any]:
    slot, version = osimage.running_os(layout.cmdline, layout.os_version)
    return {"running": {"slot": slot, "version": version}, "slots": slot_states(layout)}


def inactive_slot(layout: Layout) -> str:
    running, _ = osimage.running_os(layout.cmdline, layout.os_version)
    if running not in SLOTS:
        raise UpdateRejected("the running slot is unknown (no connectbox.slot= at boot)")
    return "b" if running == "a" else "a"


# Install.


def trusted_keys(config: Path) -> dict[str, str]:
    try:
        with open(config, "rb") as f:
            keys = tomllib.load(f).get("policy", {}).get("trusted_keys", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpdateRejected(f"cannot read the trusted keys from {config}: {exc}") from None
    if not isinstance(keys, dict):
        return {}
    return {k: v for k, v in keys.items() if isinstance(k, str) and isinstance(v, str)}


def install(
    layout: Layout, request: dict[str, Any], artefact: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Write the artefact read from the file descriptor `artefact` into the inactive slot."""
    version = osimage.check_version(request.get("version"))
    sha256 = str(request.get("sha256", "")).lower()
    verify_signature(
        sha256.encode("ascii", "replace"),
        str(request.get("signature", "")),
        trusted_keys(layout.config),
        request.get("key_id"),
    )
    slot = inactive_slot(layout)
    if request.get("slot") not in (None, slot):  # the service's idea of the box is out of date
        raise UpdateRejected(f"slot {request['slot']} is not the inactive slot")
    began = time.monotonic()
    with _open_slot(layout, slot) as (device, capacity):
        _forget_slot(layout, slot)
        with os.fdopen(os.dup(artefact), "rb") as raw:
            stream = ArtefactStream(raw)
            size, reader = stream.member(osimage.MANIFEST, osimage.MAX_MANIFEST_BYTES)
            manifest = osimage.parse_manifest(reader.read(size))
            if manifest.version != version:
                raise UpdateRejected(
                    f"the artefact is OS {manifest.version!r}, the command says {version!r}"
                )
            entry = manifest.entries[slot]
            osimage.check_entry(entry, slot)
            rootfs = manifest.files["rootfs"]
            if rootfs["size"] > capacity:
                raise UpdateRejected(
                    f"the root filesystem ({rootfs['size']} bytes) is larger than slot {slot}"
                    f" ({capacity} bytes)"
                )
            boot = layout.esp / "connectbox" / slot
            boot.mkdir(parents=True, exist_ok=True)
            try:
                for name, what in ((osimage.KERNEL, "kernel"), (osimage.INITRD, "initrd")):
                    _, reader = stream.member(name, osimage.MAX_BOOT_FILE_BYTES)
                    with open(boot / f"{name}.new", "wb") as out:
                        osimage.copy_checked(reader, out.write, manifest.files[what], what)
                        out.flush()
                        os.fsync(out.fileno())
                _, reader = stream.member(osimage.ROOTFS, capacity)
                _write_rootfs(layout, device, reader, rootfs, progress)
                wrote = time.monotonic() - began
                if stream.finish() != sha256:
                    raise UpdateRejected("the artefact's sha256 is not the signed one")
            except BaseException:
                _forget_slot(layout, slot)  # the ESP keeps no half of it
                raise
        for name in (osimage.KERNEL, osimage.INITRD):
            os.replace(boot / f"{name}.new", boot / name)
        fsync_dir(boot)
        entry_name = f"connectbox-{slot}+{layout.tries}.conf"
        tmp = layout.entries / f".{entry_name}.tmp"
        layout.entries.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as out:
            out.write(entry if entry.endswith("\n") else entry + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, layout.entries / entry_name)  # the slot is bootable from here on
        fsync_dir(layout.entries)
    log.info("slot %s holds OS %s (%s); %s s", slot, version, entry_name, round(wrote, 1))
    return {"slot": slot, "entry": entry_name, "version": version, "seconds": round(wrote, 1)}


@contextlib.contextmanager
def _open_slot(layout: Layout, slot: str) -> Iterator[tuple[int, int]]:
    """The slot's partition, opened for writing and locked: (fd, its size in bytes)."""
    path = layout.device(slot)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISBLK(info.st_mode) and info.st_rdev == os.stat("/").st_dev:
            raise UpdateRejected(f"{path} is the running root filesystem")
        # A write the service hung up on stops at its next block: wait for it a while.
        if not lock_exclusive(fd, LOCK_WAIT_S, poll_s=0.2):
            raise UpdateRejected(f"slot {slot} is being written already")
        yield fd, os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _forget_slot(layout: Layout, slot: str) -> None:
    """Before its partition changes: the slot's boot entry and kernel go first."""
    for path in _listdir(layout.entries):
        match = _ENTRY.match(path.name.removeprefix(".").removesuffix(".tmp"))
        if match and match.group(1) == slot:  # its entry, or one a power cut left half-made
            path.unlink()
    fsync_dir(layout.entries)
    for path in _listdir(layout.esp / "connectbox" / slot):
        path.unlink()
    fsync_dir(layout.esp / "connectbox" / slot)


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _write_rootfs(
    layout: Layout, device: int, reader: Any, spec: dict[str, Any], progress: Progress | None
) -> None:
    """Unpack the root filesystem into the slot at most `max_rate` bytes/s; checked against
    the manifest. Synced every few MiB and dropped from the page cache, so that neither a big
    writeback nor a flushed cache stalls the running system."""
    digest, written, synced = hashlib.sha256(), 0, 0
    began = time.monotonic()
    os.lseek(device, 0, os.SEEK_SET)
    for block in osimage.gunzip_blocks(reader, spec["size"]):
        digest.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(device, view) :]
        written += len(block)
        if written - synced >= layout.sync_bytes:
            os.fsync(device)
            os.posix_fadvise(device, synced, written - synced, os.POSIX_FADV_DONTNEED)
            synced = written
            if progress is not None:
                progress(written, spec["size"])
            ahead = written / layout.max_rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    os.fsync(device)
    os.posix_fadvise(device, 0, 0, os.POSIX_FADV_DONTNEED)
    if written != spec["size"] or digest.hexdigest() != spec["sha256"]:
        raise UpdateRejected("the root filesystem does not match the artefact's manifest")


def reboot(layout: Layout, request: dict[str, Any]) -> dict[str, Any]:
    slot = request.get("slot")
    if slot != inactive_slot(layout):
        raise UpdateRejected(f"slot {slot!r} is not the inactive slot")
    state = slot_states(layout)[slot]
    if state["state"] != "trying":
        raise UpdateRejected(f"slot {slot} has no boot entry with attempts left ({state})")
    log.warning("rebooting into slot %s (%s)", slot, state["entry"])
    subprocess.run(layout.reboot, check=True, timeout=60)
    return {"rebooting": slot}


# One connection (systemd's Accept=yes hands it over as standard input).


def serve(conn: socket.socket, layout: Layout) -> None:
    def send(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall((json.dumps(message) + "\n").encode())

    def progress(written: int, total: int) -> None:
        if _hung_up(conn):
            raise Aborted("the service hung up")
        send({"written": written, "of": total})

    fds: list[int] = []
    try:
        request, fds = _receive(conn)
        action = request.get("action")
        if action == "status":
            answer = status(layout)
        elif action == "install":
            if len(fds) != 1:
                raise UpdateRejected("install needs the artefact's file descriptor")
            answer = install(layout, request, fds[0], progress)
        elif action == "reboot":
            answer = reboot(layout, request)
        else:
            raise UpdateRejected(f"unknown action {action!r}")
        send({"done": True, "ok": True, **answer})
    except (UpdateRejected, Aborted) as exc:
        log.warning("refused: %s", exc)
        send({"done": True, "ok": False, "error": str(exc)})
    except Exception as exc:
        log.exception("failed")
        send({"done": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        for fd in fds:
            os.close(fd)


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The request line and the file descriptors that came with it."""
    data, fds, _, _ = socket.recv_fds(conn, 64 * 1024, 4)
    buffer = bytearray(data)
    conn.settimeout(30)
    while b"\n" not in buffer and len(buffer) < 64 * 1024:
        more = conn.recv(64 * 1024)
        if not more:
            break
        buffer += more
    try:
        request = json.loads(buffer.split(b"\n", 1)[0])
    except ValueError:
        request = None
    if not isinstance(request, dict):
        for fd in fds:
            os.close(fd)
        raise UpdateRejected("the request is not a JSON object")
    return request, fds


def _hung_up(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.osslot",
        description="Write an OS update into the inactive slot (connectbox-os-slot@.service).",
    )
    parser.add_argument("--esp", type=Path, default=Layout.esp)
    parser.add_argument("--config", type=Path, default=Layout.config)
    parser.add_argument("--tries", type=int, default=TRIES)
    parser.add_argument("--max-mib-s", type=float, default=Layout.max_rate / 1024 / 1024)
    parser.add_argument("--reboot-cmd", default=shlex.join(Layout().reboot))
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    layout = Layout(
        esp=opts.esp,
        config=opts.config,
        tries=opts.tries,
        max_rate=opts.max_mib_s * 1024 * 1024,
        reboot=shlex.split(opts.reboot_cmd),
    )
    serve(socket.socket(fileno=0), layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
