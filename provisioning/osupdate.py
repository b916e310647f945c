"""OS updates over the air: the service's side of the `update_os` command.

Args `{version, url, size, sha256, signature, key_id}` (host-api.md, version 1.1; the artefact
is provisioning/osimage.py's). The service stays unprivileged: it does everything that needs no
privilege, and the slot writer (provisioning/osslot.py, root, socket-activated) the rest.

1. `apply()`, on the agent's thread, answers at once. The version already running: done, ok,
   nothing touched. Otherwise it checks the args, the signature over `sha256` with the trusted
   keys (a bad or unknown one is refused before a byte is downloaded), that the version is newer
   than the running one (systemd-boot boots the newest entry first, and an old signed artefact
   must not bring back old holes), and the free space; then it writes the marker
   (`<state_dir>/os-update.json`) and leaves the rest to its worker thread. The command's result
   comes later (the agent's DEFER).
2. download: into `<state_dir>/os-update/<sha256>.tar`, paced, resumed with HTTP `Range` after
   a dropped connection, a restart or a power cut; then size, sha256 and signature are checked.
3. write: the slot writer gets the open file and writes the inactive slot, its kernel, initrd
   and its boot entry with attempts (`connectbox-b+3.conf`), at a bounded rate, while the
   service keeps serving.
4. reboot: at an idle moment (`is_idle()`: no open POS session), once; the boot id is noted
   first, so a service restart before the reboot happened asks for it again.
5. After the reboot, whichever system runs finishes it (the marker is on the data partition):
   the new one (its slot and version are the target's) waits until its boot entry is blessed
   (connectbox-boot-check saw the service answer, systemd-bless-boot dropped the counter) and
   reports success; the old one (the new slot used up its attempts) reports the failure and
   how long the fallback took.

Exactly once: the outcome is stored in the marker, handed to `report(command_id, ok, detail)`
(the agent's `complete`: stored, then posted until the host has it), and only then is the
marker removed; a crash in between hands it over again, which the agent ignores. A download or
write interrupted by a restart or power cut is resumed, at most `max_attempts` times.
Nothing here imports `app/`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from provisioning import osimage, osslot
from provisioning.releases import (
    UpdateRejected,
    check_sha256,
    check_url,
    check_version,
    http_download,
    verify_signature,
)
from provisioning.store import JsonDocument

log = logging.getLogger("connectbox.osupdate")

MARKER_NAME = "os-update.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
SPACE_RESERVE = 64 * 1024 * 1024  # the journal and the outbox keep room on the data partition
DOWNLOAD_RATE = 4 * 1024 * 1024  # bytes/s: the site's line stays the POS's (the host's calls)
RETRY_S = (10.0, 30.0, 60.0, 120.0, 300.0)  # a failed download or an absent slot writer


class SlotUnavailable(Exception):
    """The slot writer could not be reached or hung up (retried)."""


class SlotWriter(Protocol):
    def status(self) -> dict[str, Any]: ...

    def install(
        self, artefact: Path, args: dict[str, Any], progress: Callable[[int, int], None]
    ) -> dict[str, Any]: ...

    def reboot(self, slot: str) -> dict[str, Any]: ...


class SlotClient:
    """The slot writer over its socket (connectbox-os-slot.socket): one request a connection."""

    def __init__(self, path: Path = osslot.SOCKET, timeout_s: float = 300.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def status(self) -> dict[str, Any]:
        return self._call({"action": "status"})

    def install(
        self, artefact: Path, args: dict[str, Any], progress: Callable[[int, int], None]
    ) -> dict[str, Any]:
        keys = ("version", "sha256", "signature", "key_id", "slot")
        request = {"action": "install", **{k: args.get(k) for k in keys}}
        with open(artefact, "rb") as f:
            return self._call(request, f.fileno(), progress)

    def reboot(self, slot: str) -> dict[str, Any]:
        return self._call({"action": "reboot", "slot": slot})

    def _call(
        self,
        request: dict[str, Any],
        fd: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        line = (json.dumps(request) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout_s)
                conn.connect(str(self.path))
                if fd is None:
                    conn.sendall(line)
                else:
                    socket.send_fds(conn, [line], [fd])
                buffer = b""
                while True:
                    chunk = conn.recv(64 * 1024)
                    if not chunk:
                        raise SlotUnavailable("the slot writer hung up")
                    buffer += chunk
                    while b"\n" in buffer:
                        raw, buffer = buffer.split(b"\n", 1)
                        message = json.loads(raw)
                        if message.get("done"):
                            if not message.get("ok"):
                                raise UpdateRejected(str(message.get("error")))
                            return message
                        if progress is not None and "written" in message:
                            progress(int(message["written"]), int(message["of"]))
        except (OSError, ValueError) as exc:
            raise SlotUnavailable(f"the slot writer ({self.path}): {exc}") from None


class _Stopping(Exception):
    pass


class OsUpdater:
    def __init__(
        self,
        state_dir: Path,
        trusted_keys: dict[str, str],
        slots: SlotWriter,
        is_idle: Callable[[], bool],
        report: Callable[[str | None, bool, str], Any],
        *,
        running: Callable[[], tuple[str | None, str | None]] = osimage.running_os,
        boot_id: Callable[[], str] = lambda: BOOT_ID.read_text().strip(),
        download_rate: float | None = DOWNLOAD_RATE,
        retry_s: Sequence[float] = RETRY_S,
        poll_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.folder = self.state_dir / "os-update"
        self.trusted_keys = dict(trusted_keys)
        self.slots = slots
        self.is_idle = is_idle
        self.report = report
        self.running = running
        self.boot_id = boot_id
        self.download_rate = download_rate
        self.retry_s = tuple(retry_s)
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self._marker = JsonDocument(self.state_dir / MARKER_NAME)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: dict[str, Any] = {}

    # The command.

    def apply(self, args: Any, command_id: str | None = None) -> tuple[bool, str] | None:
        """(ok, detail) when the command is answered at once; None when it goes on (its
        outcome comes through `report`)."""
        slot, version = self.running()
        if isinstance(args, dict) and version is not None and args.get("version") == version:
            return True, f"already running OS {version}; nothing to do"
        try:
            target = self._parse(args)
        except UpdateRejected as exc:
            return False, f"rejected: {exc.reason}"
        with self._lock:
            marker = self._marker.load()
            if marker is not None:
                if marker.get("command_id") == command_id:
                    return None
                return False, (
                    f"busy: the update to OS {marker.get('version')} (command"
                    f" {marker.get('command_id')}) is not finished"
                )
            try:
                self._admit(target, slot, version)
            except UpdateRejected as exc:
                log.warning("update_os to %s refused: %s", target["version"], exc.reason)
                return False, f"rejected: {exc.reason}; still running OS {version}"
            assert slot is not None
            marker = {
                **target,
                "command_id": command_id,
                "from_version": version,
                "from_slot": slot,
                "slot": "b" if slot == "a" else "a",
                "state": "download",
                "attempts": 1,
                "created_at": time.time(),
            }
            self._marker.save(marker)
            log.info("OS update to %s: into slot %s", target["version"], marker["slot"])
            self._spawn()
        return None

    def pending(self, command_id: str | None = None) -> bool:
        """An update (of that command) is not finished or its outcome not yet handed over."""
        marker = self._marker.load()
        return marker is not None and command_id in (None, marker.get("command_id"))

    def start(self) -> None:
        """At start-up: go on with an update a restart or a reboot interrupted."""
        with self._lock:
            marker = self._marker.load()
            if marker is None:
                return
            if marker.get("state") in ("download", "write"):
                marker["attempts"] = int(marker.get("attempts", 1)) + 1
                self._marker.save(marker)
            self._spawn()

    def stop(self, timeout: float = 2.0) -> None:
        # A download or write cut short goes on at the next start: no reason to hold shutdown.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any] | None:
        marker = self._marker.load()
        if marker is None:
            return None
        return {
            "version": marker.get("version"),
            "slot": marker.get("slot"),
            "state": marker.get("state"),
            "command_id": marker.get("command_id"),
            **self._progress,
        }

    # Checks before anything is done.

    def _parse(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise UpdateRejected("update_os args are not an object")
        version = check_version(args.get("version"))
        size = args.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise UpdateRejected("size is not a positive number of bytes")
        sha256, signature = args.get("sha256"), args.get("signature")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise UpdateRejected("sha256 is not 64 hex digits")
        if not isinstance(signature, str) or not signature:
            raise UpdateRejected("signature is missing")
        key_id = args.get("key_id")
        return {
            "version": version,
            "url": check_url(args.get("url")),
            "size": size,
            "sha256": sha256.lower(),
            "signature": signature,
            "key_id": key_id if isinstance(key_id, str) else None,
        }

    def _admit(self, target: dict[str, Any], slot: str | None, version: str | None) -> None:
        if slot not in osimage.SLOTS or version is None:
            raise UpdateRejected("this system does not say which OS slot and version it runs")
        try:
            running = self.slots.status()["running"]
        except (SlotUnavailable, UpdateRejected, KeyError, TypeError) as exc:
            raise UpdateRejected(f"no OS slot writer on this box ({exc})") from None
        if running.get("slot") != slot:
            raise UpdateRejected(f"the slot writer sees slot {running.get('slot')}, not {slot}")
        if not osimage.newer(target["version"], version):
            raise UpdateRejected(f"OS {target['version']} is not newer than the running {version}")
        self._verify_signature(target)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self._artefact(target)
        held = partial.stat().st_size if partial.exists() else 0
        free = shutil.disk_usage(self.folder).free
        if target["size"] - held > free - SPACE_RESERVE:
            raise UpdateRejected(f"not enough space for {target['size']} bytes ({free} free)")

    def _verify_signature(self, target: dict[str, Any]) -> None:
        message = target["sha256"].encode("ascii", "replace")
        verify_signature(message, target["signature"], self.trusted_keys, target["key_id"])

    def _artefact(self, marker: dict[str, Any]) -> Path:
        return self.folder / f"{marker['sha256'][:64]}.tar"

    # The worker.

    def _spawn(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="os-update", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        steps = {
            "download": self._download,
            "write": self._write,
            "staged": self._reboot,
            "rebooting": self._after_reboot,
        }
        while not self._stop.is_set():
            marker = self._marker.load()
            if marker is None:
                return
            state = marker.get("state")
            try:
                if state == "done":
                    self._hand_over(marker)
                    return
                if state in ("download", "write", "staged") and self._booted_elsewhere(marker):
                    continue
                if state in ("download", "write") and marker["attempts"] > self.max_attempts:
                    raise UpdateRejected(
                        f"interrupted {self.max_attempts} times (restarts or power cuts)"
                    )
                steps[str(state)](marker)
            except _Stopping:
                return
            except UpdateRejected as exc:
                still = f"still running OS {marker['from_version']}"
                self._done(marker, False, f"{exc.reason}; {still}")
            except Exception as exc:  # a bug must not leave the command unanswered
                log.exception("OS update to %s failed", marker.get("version"))
                self._done(marker, False, f"failed: {type(exc).__name__}: {exc}")

    def _booted_elsewhere(self, marker: dict[str, Any]) -> bool:
        """A power cut after the slot got its entry but before the marker said so: the box
        booted the new slot already. It must not write again (that would be the old, good
        slot): it waits for its boot check like after the reboot."""
        if self.running()[0] == marker["from_slot"]:
            return False
        log.warning("booted slot %s before the update asked to: checking it", marker["slot"])
        self._save(marker, state="rebooting", boot_id=None, rebooted_at=time.time())
        return True

    def _save(self, marker: dict[str, Any], **changes: Any) -> None:
        marker.update(changes)
        self._marker.save(marker)

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping()

    def _retrying(self, what: str, step: Callable[[], Any]) -> Any:
        """`step()`, again after a pause while it fails for a passing reason."""
        for pause in (*self.retry_s, None):
            try:
                return step()
            except (SlotUnavailable, _Transient) as exc:
                if pause is None:
                    raise UpdateRejected(f"{what}: {exc}") from None
                log.warning("%s: %s; again in %g s", what, exc, pause)
                self._wait(pause)

    def _download(self, marker: dict[str, Any]) -> None:
        path = self._artefact(marker)
        for old in self.folder.glob("*.tar"):
            if old != path:
                old.unlink()
        began = time.monotonic()
        self._progress = {"downloaded": 0, "of": marker["size"]}

        def fetch() -> None:
            if path.exists() and path.stat().st_size > marker["size"]:
                path.unlink()
            if not path.exists() or path.stat().st_size < marker["size"]:
                try:
                    http_download(
                        marker["url"],
                        path,
                        max_bytes=marker["size"],
                        resume=True,
                        max_rate=self.download_rate,
                    )
                except UpdateRejected as exc:
                    raise _Transient(exc.reason) from None
            held = path.stat().st_size
            self._progress["downloaded"] = held
            if held != marker["size"]:
                raise _Transient(f"{held} of {marker['size']} bytes")
            try:
                check_sha256(path, marker["sha256"])
            except UpdateRejected as exc:
                path.unlink()  # whatever it was, it is not this artefact: from scratch
                raise _Transient(exc.reason) from None

        self._retrying("download", fetch)
        self._verify_signature(marker)
        seconds = round(time.monotonic() - began, 1)
        log.info("OS %s downloaded and verified in %s s", marker["version"], seconds)
        self._save(marker, state="write", download_s=seconds)

    def _write(self, marker: dict[str, Any]) -> None:
        began = time.monotonic()

        def progress(written: int, total: int) -> None:
            self._progress.update(written=written, of=total)

        path = self._artefact(marker)
        done = self._retrying("write", lambda: self.slots.install(path, marker, progress))
        seconds = round(time.monotonic() - began, 1)
        log.info("slot %s written (%s) in %s s", done.get("slot"), done.get("entry"), seconds)
        path.unlink(missing_ok=True)
        self._save(marker, state="staged", write_s=seconds)

    def _reboot(self, marker: dict[str, Any]) -> None:
        waited = time.monotonic()
        while not self._idle():
            self._wait(self.poll_s)
        self._save(
            marker,
            state="rebooting",
            boot_id=self.boot_id(),
            rebooted_at=time.time(),
            idle_wait_s=round(time.monotonic() - waited, 1),
        )
        log.warning("rebooting into OS %s (slot %s)", marker["version"], marker["slot"])
        self._retrying("reboot", lambda: self.slots.reboot(marker["slot"]))
        self._wait(600)  # the box goes down meanwhile; if not, the next start asks again

    def _idle(self) -> bool:
        try:
            return bool(self.is_idle())
        except Exception:
            log.exception("is_idle() failed; taken as busy")
            return False

    def _after_reboot(self, marker: dict[str, Any]) -> None:
        if self.boot_id() == marker.get("boot_id"):
            self._save(marker, state="staged")  # restarted before the reboot: ask again
            return
        slot, version = self.running()
        since = time.time() - float(marker.get("rebooted_at", time.time()))
        timing = (
            f"downloaded in {marker.get('download_s')} s, written in {marker.get('write_s')} s,"
            f" waited {marker.get('idle_wait_s')} s for an idle moment"
        )
        if slot != marker["slot"]:
            entry = self._slot_state(marker["slot"])
            attempts = f"{entry.get('entry')}: {entry.get('tries_done')} attempts"
            self._done(
                marker,
                False,
                f"OS {marker['version']} on slot {marker['slot']} did not pass its boot check"
                f" ({attempts if entry.get('entry') else entry.get('state')}); fell back to OS"
                f" {version} on slot {slot}, running again {since:.0f} s after the reboot"
                f" ({timing})",
            )
            return
        if version != marker["version"]:
            self._done(marker, False, f"slot {slot} runs OS {version}, not {marker['version']}")
            return
        while True:  # the new system: report once its boot counts as good
            state = self._slot_state(slot).get("state")
            if state == "good":
                since = time.time() - float(marker["rebooted_at"])
                self._done(
                    marker,
                    True,
                    f"updated OS {marker['from_version']} -> {version}: slot {slot} passed its"
                    f" boot check {since:.0f} s after the reboot ({timing})",
                )
                return
            if state in ("bad", "none"):
                self._done(marker, False, f"slot {slot} runs, but its boot entry is {state}")
                return
            self._wait(self.poll_s)

    def _slot_state(self, slot: str) -> dict[str, Any]:
        try:
            return dict(self.slots.status()["slots"][slot])
        except (SlotUnavailable, UpdateRejected, KeyError, TypeError) as exc:
            return {"state": "unknown", "error": str(exc)}

    def _done(self, marker: dict[str, Any], ok: bool, detail: str) -> None:
        log.log(logging.INFO if ok else logging.WARNING, "OS update: %s", detail)
        self._artefact(marker).unlink(missing_ok=True)
        self._save(marker, state="done", result={"ok": ok, "detail": detail})
        self._hand_over(marker)

    def _hand_over(self, marker: dict[str, Any]) -> None:
        result = marker["result"]
        try:
            self.report(marker.get("command_id"), bool(result["ok"]), str(result["detail"]))
        except Exception:  # the marker stays: handed over again at the next start
            log.exception("could not hand over the OS update's outcome")
            return
        with self._lock:
            self._marker.delete()
        self._progress = {}


class _Transient(Exception):
    """A step that may work when tried again (the network, a cut download)."""
