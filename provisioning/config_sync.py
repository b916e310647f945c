"""The device config from the host: fetched with its ETag, checked, kept, applied.

`GET /v1/devices/{id}/config` with `If-None-Match: <stored ETag>`: a 304 changes nothing. A new
config goes through `validate(config)` (None means good, else the reason it is refused):

- refused: the last good config stays (and stays applied); the refusal is recorded in `refused`
  and shown by `snapshot()`, which the agent puts in the next heartbeat. The ETag is not stored,
  so the next sync fetches and judges the host's config again;
- accepted: it is persisted as the last good config (atomically, with its ETag) and then
  `apply(config)` is called.

`start()` applies the stored last good config first (the box works the same way after a restart
with the host away), then syncs every `interval_s` (±10 % jitter). `sync_now()` is the
`sync_config` command's handler: it returns `(ok, detail)`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from provisioning.api import HostClient, HostError
from provisioning.store import JsonDocument

log = logging.getLogger("connectbox.config")

CONFIG_FILE = "config.json"


class ConfigSync:
    def __init__(
        self,
        client: HostClient,
        state_dir: Path | str,
        validate: Callable[[dict[str, Any]], str | None],
        apply: Callable[[dict[str, Any]], None],
        interval_s: float = 300,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        self.validate = validate
        self.apply = apply
        self.interval_s = float(interval_s)
        self.paused = paused or (lambda: False)
        """E.g. `lambda: agent.revoked`: no calls with a token the host refused."""
        self._doc = JsonDocument(Path(state_dir) / CONFIG_FILE)
        stored = self._doc.load({})
        stored = stored if isinstance(stored, dict) else {}
        self.etag: str | None = stored.get("etag")
        self.last_good: dict[str, Any] | None = (
            stored["config"] if isinstance(stored.get("config"), dict) else None
        )
        self.accepted_at: str | None = stored.get("accepted_at")
        self.refused: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.last_sync_at: float | None = None
        self.last_result: str | None = None
        self._sync_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # Start and stop.

    def start(self, sync: bool = True) -> None:
        """Apply the stored last good config, then sync in the background (if `sync`)."""
        self.apply_stored()
        if sync and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="config-sync", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def set_interval(self, seconds: float) -> None:
        self.interval_s = float(seconds)
        self._wake.set()

    def apply_stored(self) -> bool:
        """`apply(last good config)` when one is stored; True when it was applied."""
        if self.last_good is None:
            return False
        try:
            self.apply(self.last_good)
        except Exception as exc:
            log.exception("applying the stored config failed")
            self._record(error=f"applying the stored config failed: {exc}")
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_now()
            except Exception:
                log.exception("config sync failed")
            self._wake.wait(self.interval_s * random.uniform(0.9, 1.1))
            self._wake.clear()

    # One sync.

    def sync_now(self) -> tuple[bool, str]:
        with self._sync_lock:
            return self._sync()

    def _sync(self) -> tuple[bool, str]:
        if self.paused():
            return False, "config sync paused (the host refused this box's token)"
        self.last_sync_at = time.time()
        try:
            config, etag = self.client.config(self.etag)
        except HostError as exc:
            self._record(error=f"cannot fetch the config: {exc}")
            log.warning("config sync: %s", exc)
            return False, f"cannot fetch the config: {exc}"
        if config is None:  # 304: the host's config is our last good one
            self._record(result="unchanged", refused=None)
            return True, f"config {_version(self.last_good)} unchanged"
        version = _version(config)
        reason = self._judge(config)
        if reason is not None:
            refused = {"config_version": version, "etag": etag, "reason": reason, "at": _now()}
            kept = _version(self.last_good) if self.last_good else "none"
            self._record(result="refused", refused=refused)
            log.error("config %s refused (%s); keeping config %s", version, reason, kept)
            return False, f"config {version} refused: {reason}; keeping config {kept}"
        accepted_at = _now()
        self._doc.save({"etag": etag, "config": config, "accepted_at": accepted_at})
        with self._lock:
            self.etag, self.last_good, self.accepted_at = etag, config, accepted_at
        self._record(result="applied", refused=None)
        try:
            self.apply(config)
        except Exception as exc:
            log.exception("applying config %s failed", version)
            self._record(error=f"applying config {version} failed: {exc}")
            return False, f"config {version} stored but applying it failed: {exc}"
        log.info("config %s applied", version)
        return True, f"config {version} applied"

    def _judge(self, config: Any) -> str | None:
        if not isinstance(config, dict):
            return "the config is not a JSON object"
        try:
            return self.validate(config)
        except Exception as exc:  # a validator bug refuses, it never applies a doubtful config
            log.exception("config validation failed")
            return f"validation failed: {type(exc).__name__}: {exc}"

    _UNSET: Any = object()

    def _record(
        self, result: str | None = None, error: str | None = None, refused: Any = _UNSET
    ) -> None:
        with self._lock:
            if result is not None:
                self.last_result = result
                self.last_error = None
            if error is not None:
                self.last_error = error
            if refused is not ConfigSync._UNSET:
                self.refused = refused

    # Status page and heartbeat.

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if self.refused is not None:
                state = "refused"
            elif self.last_error is not None:
                state = "error"
            elif self.last_good is not None:
                state = "ok"
            else:
                state = "none"
            return {
                "state": state,
                "config_version": _version(self.last_good) if self.last_good else None,
                "etag": self.etag,
                "accepted_at": self.accepted_at,
                "last_sync_at": _iso(self.last_sync_at),
                "last_result": self.last_result,
                "last_error": self.last_error,
                "refused": dict(self.refused) if self.refused else None,
                "interval_s": self.interval_s,
            }


def _version(config: dict[str, Any] | None) -> Any:
    return config.get("config_version") if isinstance(config, dict) else None


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")
