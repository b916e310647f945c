"""Software updates with automatic rollback: the heartbeat's `update` command.

Layout under `root` (`/opt/connectbox` or `/var/lib/connectbox/software` in the image):

    releases/<version>/          one self-contained release each (see `provisioning.releases`)
    releases/<version>.partial/  a release being unpacked and set up (never started)
    current -> releases/<v>      what systemd starts: ExecStart=<root>/current/bin/connectbox run
    previous -> releases/<v>     the release before, kept for rolling back
    update-in-progress.json      the marker: an update switched to and not yet settled, or
                                 settled and its result not yet collected (see below)

`Updater.apply(args)` handles `update` with args `{version, url, sha256, signature[, key_id]}`:

1. download `url` into a temp file under `root` (urllib3, streamed, timeouts, size cap);
2. check its SHA-256 and its Ed25519 signature over the exact bytes with a trusted key
   (`key_id` from the args, else `default_key_id`, else the only trusted key). A bad artefact
   changes nothing: the temp file goes, no folder is left, `current` is untouched;
3. unpack it safely into `releases/<version>.partial`, check `RELEASE.json` names `version`,
   run the release's set-up (`installer`; by default a venv from its `wheels/`), check
   `bin/connectbox` is executable, then rename it to `releases/<version>`;
4. wait for an idle moment (`is_idle()`, no POS transaction open), polled for up to
   `idle_timeout_s`; otherwise the installed release is removed and the answer is
   "busy: no idle moment";
5. write the marker (JSON, atomic, fsync'd), point `previous` at the running release and
   `current` at the new one (a temp symlink renamed over the old one), then call `restart()`;
6. poll `health_check()` until it passes `health_passes` times in a row or `health_deadline_s`
   runs out (`health_check` may raise HealthCheckFailed to give up at once). Healthy: the update
   is committed. Not: `current` goes back to the previous release, `previous` back to what it
   was, `restart()` again, and the answer says why and how long the rollback took (from the
   switch until the previous release passed its health check again). Releases other than
   `current` and `previous` are then removed.

Resume contract (the updater usually lives in the service it replaces, so `restart()` ends
the process that called `apply()`, which then never returns):

- The service calls `Updater.resume()` once at start-up, after it has started the parts its
  health check looks at (POS listener, outbox), in the background. With no marker it returns
  None at once. Otherwise it finishes the job: health check, then commit or roll back (a
  rollback restarts the service again; the previous release's `resume()` then confirms it is
  healthy and adds the timing). An update the service restarted into more than
  `max_resume_attempts` times without passing is rolled back without another check.
- It returns an `UpdateOutcome` (command_id, version, ok, detail) for the command that started
  the update. The marker keeps that outcome until `acknowledge(command_id)`: the agent stores or
  posts the result (host-api: exactly once per command, also after a reboot), then
  acknowledges. Every `resume()` before that returns the same outcome again without doing
  anything twice, so a crash between settling and reporting loses nothing; the agent removes
  duplicates by command_id.
- `apply()` refuses a new update ("busy") while a marker is there.
- An exception from `restart()` is taken as the process going away: it propagates from
  `apply()`/`resume()` with the marker in place, and the next `resume()` finishes.
- `apply()` and `resume()` take an exclusive lock on `root` (flock), so a guard process
  (`python -m provisioning.updates resume --health-url ...`, e.g. from the `previous` release in
  an `OnFailure=` unit when the new release cannot even start) and the service never both act.

Production restart: let the service exit with its restart code (systemd's `Restart=` starts
`current` again), or `systemctl --no-block restart connectbox`. Nothing here imports `app/`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provisioning.releases import (
    DEFAULT_MAX_ARTEFACT_BYTES,
    DEFAULT_MAX_RELEASE_BYTES,
    ENTRY,
    UpdateRejected,
    VenvInstaller,
    check_version,
    choose_key,
    http_download,
    make_release,
    read_manifest,
    safe_extract,
    sign_artefact,
    verify_artefact,
)
from provisioning.store import fsync_dir, lock_exclusive, write_json_atomic

__all__ = [
    "HealthCheckFailed",
    "MARKER_NAME",
    "UpdateOutcome",
    "UpdateRejected",
    "Updater",
    "make_release",
    "sign_artefact",
    "verify_artefact",
]

log = logging.getLogger(__name__)

MARKER_NAME = "update-in-progress.json"
MARKER_FORMAT = 1
MARKER_MODE = 0o644  # the guard (root) may write it and the service must still read it


class HealthCheckFailed(Exception):
    """Raised by a health check that knows waiting longer will not help (the process died)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UpdateOutcome:
    """How an update ended, for the result of the command that asked for it."""

    command_id: str | None
    version: str
    ok: bool
    detail: str

    def result(self) -> dict[str, Any]:
        """The body of `POST .../commands/{command_id}/result`."""
        return {"ok": self.ok, "detail": self.detail}


class Updater:
    def __init__(
        self,
        root: Path,
        trusted_keys: dict[str, str],
        restart: Callable[[], None],
        health_check: Callable[[], tuple[bool, str]],
        is_idle: Callable[[], bool],
        download: Callable[[str, Path], None] | None = None,
        *,
        installer: Callable[[Path], None] | None = None,
        health_deadline_s: float = 90.0,
        idle_timeout_s: float = 600.0,
        poll_s: float = 1.0,
        health_passes: int = 3,
        default_key_id: str | None = None,
        max_artefact_bytes: int = DEFAULT_MAX_ARTEFACT_BYTES,
        max_release_bytes: int = DEFAULT_MAX_RELEASE_BYTES,
        max_resume_attempts: int = 3,
        lock_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = Path(root)
        self.releases = self.root / "releases"
        self.marker_path = self.root / MARKER_NAME
        self.trusted_keys = dict(trusted_keys)
        self.restart = restart
        self.health_check = health_check
        self.is_idle = is_idle
        self.download = download
        self.installer = installer if installer is not None else VenvInstaller()
        self.health_deadline_s = health_deadline_s
        self.idle_timeout_s = idle_timeout_s
        self.poll_s = poll_s
        self.health_passes = max(1, health_passes)
        self.default_key_id = default_key_id
        self.max_artefact_bytes = max_artefact_bytes
        self.max_release_bytes = max_release_bytes
        self.max_resume_attempts = max_resume_attempts
        self.lock_wait_s = 2 * health_deadline_s + 60 if lock_wait_s is None else lock_wait_s
        self._clock = clock
        self._sleep = sleep

    # What is installed.

    def current_version(self) -> str | None:
        return self._version_of("current")

    def previous_version(self) -> str | None:
        return self._version_of("previous")

    def pending(self) -> dict[str, Any] | None:
        """The marker of an unsettled or unreported update, if any."""
        return self._read_marker()

    # The command.

    def apply(self, args: dict[str, Any], command_id: str | None = None) -> tuple[bool, str]:
        """Handle an `update` command: (ok, detail) for its result. See the module docstring."""
        try:
            version, url, sha256, signature, key_id = self._parse(args)
        except UpdateRejected as exc:
            return False, f"rejected: {exc.reason}"
        with self._lock(0.0) as locked:
            if not locked:
                return False, "busy: another update is running"
            marker = self._read_marker()
            if marker is not None:
                return False, (
                    f"busy: the update to {marker.get('to')} (command {marker.get('command_id')})"
                    " is not settled or its result not collected: resume() first"
                )
            current_link = self.root / "current"
            if current_link.exists() and not current_link.is_symlink():
                return False, f"rejected: {current_link} is not a symlink"
            self._prune()
            current = self.current_version()
            if version == current:
                return True, f"already running {version}"
            began = self._clock()
            try:
                self._install(version, url, sha256, signature, key_id)
            except UpdateRejected as exc:
                log.warning("update to %s rejected: %s", version, exc.reason)
                return False, f"rejected: {exc.reason}; nothing changed, still running {current}"
            installed = self._clock()
            if not self._wait_idle():
                self._remove_tree(self.releases / version)
                return False, (
                    f"busy: no idle moment in {self.idle_timeout_s:g} s; {version} not applied,"
                    f" still running {current}"
                )
            prepared = (
                f"downloaded and installed in {installed - began:.1f} s,"
                f" idle after {self._clock() - installed:.1f} s"
            )
            marker = {
                "format": MARKER_FORMAT,
                "command_id": command_id,
                "from": current,
                "to": version,
                "previous_before": self.previous_version(),
                "state": "switching",
                "created_at": time.time(),
                "prepared": prepared,
                "attempts": 0,
                "result": None,
            }
            try:
                self._switch(marker)
            except OSError as exc:  # disk full, read-only file system: nothing restarted yet
                self._undo_switch(marker)
                return False, f"switching to {version} failed ({exc}); still running {current}"
            log.info("switched to %s (%s); restarting", version, prepared)
            self.restart()
            outcome = self._settle(marker)
            self._remove_marker()
            return outcome.ok, outcome.detail

    def resume(self) -> UpdateOutcome | None:
        """Finish an update the process was restarted in the middle of; None if there is none.

        Raises TimeoutError when another process holds the update lock longer than
        `lock_wait_s` (try again later). See the module docstring for the contract.
        """
        if not self.marker_path.exists():
            return None
        with self._lock(self.lock_wait_s) as locked:
            if not locked:
                raise TimeoutError("another process is settling the update")
            marker = self._read_marker()
            if marker is None:
                return None
            state = marker.get("state")
            log.info("resuming the update to %s (state %s)", marker.get("to"), state)
            if state == "done":
                if marker.get("confirm"):
                    return self._confirm_rollback(marker)
                self._prune()
                return self._outcome(marker)
            if state == "rolling_back":
                return self._rollback(marker, marker.get("reason") or "an interrupted rollback")
            current = self.current_version()
            if current != marker["to"]:
                self._point("previous", marker.get("previous_before"))
                detail = (
                    f"the update to {marker['to']} was interrupted before the switch;"
                    f" still running {current}"
                )
                return self._done(marker, False, detail)
            marker.setdefault("switched_at", time.time())
            marker["attempts"] = int(marker.get("attempts", 0)) + 1
            marker["state"] = "switched"
            self._write_marker(marker)
            if marker["attempts"] > self.max_resume_attempts:
                reason = (
                    f"{marker['to']} restarted {marker['attempts'] - 1} times"
                    " without passing its health check"
                )
                return self._rollback(marker, reason)
            return self._settle(marker)

    def acknowledge(self, command_id: str | None = None) -> bool:
        """Forget a settled update's outcome once the agent has it safe. True if removed."""
        with self._lock(self.lock_wait_s) as locked:
            marker = self._read_marker() if locked else None
            if marker is None or marker.get("state") != "done" or marker.get("confirm"):
                return False
            if command_id is not None and marker.get("command_id") != command_id:
                return False
            self._remove_marker()
            return True

    # Steps.

    def _parse(self, args: Any) -> tuple[str, str, str, str, str]:
        if not isinstance(args, dict):
            raise UpdateRejected("update args are not an object")
        version = check_version(args.get("version"))
        url, sha256, signature = args.get("url"), args.get("sha256"), args.get("signature")
        for name, value in (("url", url), ("sha256", sha256), ("signature", signature)):
            if not isinstance(value, str) or not value:
                raise UpdateRejected(f"{name} is missing")
        key_id = choose_key(self.trusted_keys, args.get("key_id", self.default_key_id))
        return version, url, sha256, signature, key_id

    def _install(self, version: str, url: str, sha256: str, signature: str, key_id: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=self.root)
        os.close(fd)
        artefact = Path(name)
        partial = self.releases / f"{version}.partial"
        try:
            self._download(url, artefact)
            verify_artefact(artefact, sha256, signature, self.trusted_keys, key_id)
            log.info("artefact for %s verified (key %s)", version, key_id)
            self.releases.mkdir(exist_ok=True)
            self._remove_tree(partial)
            safe_extract(artefact, partial, max_bytes=self.max_release_bytes)
            artefact.unlink()
            named = read_manifest(partial).get("version")
            if named != version:
                raise UpdateRejected(f"artefact is release {named!r}, the command says {version!r}")
            try:
                self.installer(partial)
            except UpdateRejected:
                raise
            except Exception as exc:
                raise UpdateRejected(f"set-up of {version} failed: {exc}") from None
            self._check_entry(partial)
            os.sync()  # the release is on disk before anything can point at it
            final = self.releases / version
            if final.exists() or final.is_symlink():
                aside = self.releases / f".trash-{version}-{uuid.uuid4().hex[:8]}"
                final.rename(aside)
                self._remove_tree(aside)
            partial.rename(final)
            fsync_dir(self.releases)
        except OSError as exc:
            raise UpdateRejected(f"install of {version} failed: {exc}") from None
        finally:
            artefact.unlink(missing_ok=True)
            self._remove_tree(partial)

    def _download(self, url: str, dest: Path) -> None:
        if self.download is None:
            http_download(url, dest, max_bytes=self.max_artefact_bytes)
            return
        try:
            self.download(url, dest)
        except UpdateRejected:
            raise
        except Exception as exc:
            raise UpdateRejected(f"download failed: {exc}") from None
        if dest.stat().st_size > self.max_artefact_bytes:
            raise UpdateRejected(f"artefact is larger than {self.max_artefact_bytes} bytes")

    @staticmethod
    def _check_entry(release: Path) -> None:
        entry = release / ENTRY
        resolved = entry.resolve()
        if (
            not resolved.is_relative_to(release.resolve())
            or not resolved.is_file()
            or not os.access(resolved, os.X_OK)
        ):
            raise UpdateRejected(f"release has no executable {ENTRY}")

    def _wait_idle(self) -> bool:
        deadline = self._clock() + self.idle_timeout_s
        while True:
            try:
                if self.is_idle():
                    return True
            except Exception:
                log.exception("is_idle() failed; taken as busy")
            left = deadline - self._clock()
            if left <= 0:
                return False
            self._sleep(min(self.poll_s, left))

    def _switch(self, marker: dict[str, Any]) -> None:
        self._write_marker(marker)  # before anything points elsewhere
        if marker["from"] is not None:
            self._point("previous", marker["from"])
        self._point("current", marker["to"])
        marker.update(state="switched", switched_at=time.time())
        self._write_marker(marker)

    def _undo_switch(self, marker: dict[str, Any]) -> None:
        try:
            self._point("current", marker["from"])
            self._point("previous", marker["previous_before"])
            self._remove_marker()
            self._remove_tree(self.releases / marker["to"])
        except OSError:
            log.exception("could not undo the switch to %s; resume() will", marker["to"])

    def _poll_health(self) -> tuple[bool, str, float]:
        """(healthy, what the check said, seconds waited)."""
        began = self._clock()
        deadline = began + self.health_deadline_s
        passes, last = 0, "no answer yet"
        while True:
            try:
                ok, detail = self.health_check()
            except HealthCheckFailed as exc:
                return False, exc.reason, self._clock() - began
            except Exception as exc:
                ok, detail = False, f"health check raised {type(exc).__name__}: {exc}"
            if ok:
                passes += 1
                if passes >= self.health_passes:
                    return True, detail, self._clock() - began
            else:
                passes, last = 0, detail
            if self._clock() >= deadline:
                return (
                    False,
                    f"not healthy within {self.health_deadline_s:g} s: {last}",
                    (self._clock() - began),
                )
            self._sleep(self.poll_s)

    def _settle(self, marker: dict[str, Any]) -> UpdateOutcome:
        healthy, detail, waited = self._poll_health()
        if not healthy:
            log.warning("%s failed its health check: %s", marker["to"], detail)
            return self._rollback(marker, detail)
        note = f"healthy {waited:.1f} s after the restart"
        if marker.get("prepared"):
            note += f"; {marker['prepared']}"
        return self._done(marker, True, f"updated {marker['from']} -> {marker['to']}: {note}")

    def _rollback(self, marker: dict[str, Any], reason: str) -> UpdateOutcome:
        to, back = marker["to"], marker["from"]
        if back is None or not (self.releases / back).is_dir():
            detail = (
                f"{to} failed its health check ({reason}) and there is no previous release"
                f" to roll back to; {to} stays"
            )
            return self._done(marker, False, detail)
        marker.update(state="rolling_back", reason=reason)
        self._write_marker(marker)
        self._point("current", back)
        before = marker.get("previous_before")
        self._point("previous", before if before != to else None)
        marker.update(
            state="done",
            confirm=True,
            rollback_at=time.time(),
            result={"ok": False, "detail": f"{to} failed its health check ({reason})"},
        )
        self._write_marker(marker)  # a restart that ends this process is reported from here
        log.warning("rolled back to %s; restarting", back)
        self.restart()
        return self._confirm_rollback(marker)

    def _confirm_rollback(self, marker: dict[str, Any]) -> UpdateOutcome:
        back = marker["from"]
        healthy, detail, _ = self._poll_health()
        now = time.time()
        since_switch = now - marker.get("switched_at", marker["rollback_at"])
        since_rollback = now - marker["rollback_at"]
        if healthy:
            extra = (
                f"; rolled back to {back}, healthy again {since_switch:.1f} s after the switch"
                f" ({since_rollback:.1f} s after the rollback began)"
            )
        else:
            extra = f"; rolled back to {back}, which is not healthy either: {detail}"
        marker["result"]["detail"] += extra
        marker.update(confirm=False, rollback_s=round(since_switch, 3))
        self._write_marker(marker)
        self._prune()
        return self._outcome(marker)

    def _done(self, marker: dict[str, Any], ok: bool, detail: str) -> UpdateOutcome:
        marker.update(state="done", confirm=False, result={"ok": ok, "detail": detail})
        self._write_marker(marker)
        self._prune()
        log.info("update to %s settled: ok=%s %s", marker["to"], ok, detail)
        return self._outcome(marker)

    @staticmethod
    def _outcome(marker: dict[str, Any]) -> UpdateOutcome:
        result = marker.get("result") or {}
        return UpdateOutcome(
            command_id=marker.get("command_id"),
            version=str(marker.get("to")),
            ok=bool(result.get("ok")),
            detail=str(result.get("detail", "")),
        )

    # Files.

    def _version_of(self, name: str) -> str | None:
        try:
            target = PurePosixPath(os.readlink(self.root / name))
        except OSError:
            return None
        return target.name if target.parent.name == "releases" else None

    def _point(self, name: str, version: str | None) -> None:
        """Make `root/name` a symlink to `releases/<version>` atomically (None: remove it)."""
        link = self.root / name
        if version is None:
            if link.is_symlink():
                link.unlink()
                fsync_dir(self.root)
            return
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(f"releases/{version}", tmp)
        os.replace(tmp, link)
        fsync_dir(self.root)

    def _prune(self) -> None:
        """Remove leftovers of interrupted work and releases neither current nor previous."""
        for leftover in self.root.glob(".download-*"):
            leftover.unlink(missing_ok=True)
        for leftover in self.root.glob(".*.tmp"):
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink(missing_ok=True)
        if not self.releases.is_dir():
            return
        current = self.current_version()
        keep = {current, self.previous_version()}
        for entry in self.releases.iterdir():
            if entry.name.endswith(".partial") or entry.name.startswith(".trash-"):
                self._remove_tree(entry)
            elif current is not None and entry.name not in keep:
                log.info("removing release %s", entry.name)
                self._remove_tree(entry)

    @staticmethod
    def _remove_tree(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.marker_path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError):
            aside = self.marker_path.with_suffix(".corrupt")
            log.error("update marker unreadable; moved to %s", aside)
            os.replace(self.marker_path, aside)
            return None
        return marker if isinstance(marker, dict) else None

    def _write_marker(self, marker: dict[str, Any]) -> None:
        write_json_atomic(self.marker_path, marker, mode=MARKER_MODE)

    def _remove_marker(self) -> None:
        self.marker_path.unlink(missing_ok=True)
        fsync_dir(self.root)

    @contextlib.contextmanager
    def _lock(self, wait_s: float) -> Iterator[bool]:
        """An exclusive flock on `root` itself (no lock file to leave behind)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not lock_exclusive(fd, wait_s, self._clock):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# The guard: `python -m provisioning.updates {status,resume,acknowledge} --root ...`.


def http_health(url: str) -> Callable[[], tuple[bool, str]]:
    from provisioning import http

    pool = http.new_pool(maxsize=1)

    def check() -> tuple[bool, str]:
        try:
            reply = http.exchange(pool, "GET", url, headers={}, timeout_s=3.0)
        except http.HttpFailure as exc:
            return False, f"{url}: {exc}"
        return reply.status_code == 200, f"{url}: HTTP {reply.status_code}"

    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.updates",
        description="Settle or inspect a software update (the guard of provisioning/updates.py).",
    )
    parser.add_argument("command", choices=["status", "resume", "acknowledge"])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--health-url", default="http://127.0.0.1:8080/healthz")
    parser.add_argument("--restart-cmd", default="systemctl --no-block restart connectbox")
    parser.add_argument("--deadline", type=float, default=90.0)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    def restart() -> None:
        subprocess.run(shlex.split(opts.restart_cmd), check=True, timeout=120)

    updater = Updater(
        opts.root,
        {},
        restart,
        http_health(opts.health_url),
        lambda: True,
        health_deadline_s=opts.deadline,
    )
    if opts.command == "status":
        status = {
            "current": updater.current_version(),
            "previous": updater.previous_version(),
            "pending": updater.pending(),
        }
        print(json.dumps(status, indent=2))
        return 0
    if opts.command == "acknowledge":
        return 0 if updater.acknowledge() else 1
    outcome = updater.resume()
    print(json.dumps(None if outcome is None else outcome.__dict__))
    return 0 if outcome is None or outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
