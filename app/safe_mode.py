"""Safe mode (`connectbox safe-mode`): a box whose service cannot start stays reachable.

Production boxes have no login. When connectbox.service fails for good (its start limit), its
`OnFailure=` guard rolls back an update that caused it; when there was none, it starts
connectbox-safe-mode.service, which runs this from the slot's factory release (read-only, the
release that came with the OS, so what broke the service's release cannot break it). It keeps:

- the status page's port: one page saying the service cannot start and why (its last error),
  `/api/status` (`safe_mode: true`) and `/healthz`, which answers 503: nothing serves the POS;
- the heartbeat (`degraded`, `components.safe_mode`) with the provider's commands, exactly once
  (the service's own command state): `update` (to another release, e.g. back to a good one:
  the update unit does it and starts the service), `upload_logs` (the service's journal),
  `rotate_token`, `restart` (try the service again) and `update_os` (an OS update: written to
  the other slot and booted at once, since nothing serves the POS; its outcome is reported by
  whichever system runs after the reboot);
- a new try of the service every `retry_s`: a cause that went away (a full disk cleaned up)
  needs nobody.

It needs only the host's URL and the box's credentials: from the configuration, or, when that
file is what broke, from the copy the service keeps of the last configuration it started with
(`remember_config`).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from app import __version__
from app.config import Config, ConfigError, StorageConfig, load_config
from app.management import ask_os_updater, ask_update_unit, collect_unit_results, os_updater_for
from app.os_image import os_image
from provisioning.agent import DEFER, Agent
from provisioning.link import HostLink
from provisioning.redaction import redact_log_text
from provisioning.store import CREDENTIALS_FILE, CredentialStore
from provisioning.update_unit import UnitUpdates

log = logging.getLogger("connectbox.safe_mode")

GOOD_CONFIG = "last-good-config.toml"
RETRY_S = 900.0
LOG_LINES = 3000
TITLE = "Safe mode: the Connect Box service cannot start"


def remember_config(config: Config) -> None:
    """The service started with this file: keep a copy for safe mode (0600, atomic)."""
    if not os.path.isfile(config.source):
        return
    target = config.storage.data_dir / GOOD_CONFIG
    tmp = target.with_suffix(".tmp")
    try:
        shutil.copyfile(config.source, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("cannot keep a copy of the configuration for safe mode: %s", exc)


def safe_config(path: str, state_dir: Path | None = None) -> tuple[Config, str | None]:
    """The configuration, or the last one the service started with; and what was wrong."""
    try:
        return load_config(path), None
    except ConfigError as exc:
        problem = str(exc)
    copy = (state_dir or StorageConfig().data_dir) / GOOD_CONFIG
    try:
        return load_config(copy), problem
    except ConfigError:
        return Config(), problem


def service_journal(lines: int, own: bool = False) -> str:
    """The service's journal (safe mode's unit is in group systemd-journal to read it): all of
    it, or only what its processes wrote (`own`: no lines of systemd about it)."""
    unit = "_SYSTEMD_UNIT=connectbox.service" if own else "--unit=connectbox.service"
    argv = ["journalctl", unit, "-n", str(lines), "--no-pager", "-q"]
    argv += ["-o", "cat"] if own else ["-o", "short-iso"]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"journal not readable: {exc}"


class SafeMode:
    def __init__(
        self,
        config: Config,
        config_problem: str | None = None,
        *,
        journal: Callable[[int, bool], str] = service_journal,
        retry_s: float = RETRY_S,
    ) -> None:
        self.config = config
        self.config_problem = config_problem
        self.journal = journal
        self.retry_s = retry_s
        self.os = os_image()
        self.stopping = threading.Event()
        host = config.host
        self.link = HostLink(host.url, timeout_s=host.timeout_s, ca_file=host.ca_file)
        data_dir = config.storage.data_dir
        credentials = CredentialStore(data_dir / CREDENTIALS_FILE)
        known = None
        with contextlib.suppress(OSError, ValueError):
            known = credentials.load()
        if known is not None:
            self.link.use(known.device_id, known.token)
        elif config.host.token:
            self.link.use(config.host.device_id, config.host.token)
        root = config.provisioning.software_root
        socket_path = config.provisioning.update_socket
        self.unit = UnitUpdates(socket_path, root) if root and socket_path else None
        # Nothing serves the POS in safe mode: an OS update may reboot whenever it is written.
        self.os_updater = os_updater_for(config, lambda: True, lambda: self.agent)
        self.agent = Agent(
            self.link,
            data_dir,
            self.heartbeat_status,
            self.commands(),
            heartbeat_s=config.provisioning.heartbeat_s,
            software_version=self.running_version(),
            credentials=credentials,
            log_provider=lambda: self.journal(LOG_LINES, False),
            secrets=lambda: [s for s in (config.status.pin, self.link.client.token) if s],
            on_interrupted=self._interrupted,
        )

    # -- what it reports -------------------------------------------------------------------

    def running_version(self) -> str:
        """The release the service failed to run (`current`), not safe mode's own."""
        root = self.config.provisioning.software_root
        if root is not None:
            with contextlib.suppress(OSError):
                return Path(os.readlink(root / "current")).name
        return __version__

    def reason(self) -> str:
        if self.config_problem:
            return self.config_problem
        last = self.journal(1, True).strip().splitlines()  # a traceback ends with the error
        token = self.link.client.token
        text = last[-1] if last else "the service stopped without a word"
        return redact_log_text(text, tokens=[token], secrets=[])

    def status(self) -> dict[str, Any]:
        return {
            "safe_mode": True,
            "verdict": TITLE,
            "reason": self.reason(),
            "version": self.running_version(),
            "safe_mode_version": __version__,
            "os": self.os,
            "device_id": self.link.client.device_id,
            "host": self.link.snapshot(),
            "agent": self.agent.snapshot(),
            "os_update": self.os_updater.snapshot(),
        }

    def heartbeat_status(self) -> dict[str, Any]:
        return {
            "status": "degraded",
            "components": {
                "verdict": TITLE,
                "safe_mode": True,
                "reason": self.reason(),
                "os_slot": self.os["slot"],
                "os_manifest": self.os["manifest"],
            },
        }

    # -- the provider's commands -----------------------------------------------------------

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"restart": self._restart, "update": self._update, "update_os": self._update_os}

    def _restart(self, args: dict[str, Any]) -> tuple[bool, str]:
        if self.unit is None:
            return False, "no update unit on this box to start the service with"
        try:
            self.unit.send({"action": "start-service"})
        except OSError as exc:
            return False, f"the update unit cannot take it: {exc}"
        return True, "starting the service again (safe mode ends if it starts)"

    def _update(self, args: dict[str, Any]) -> Any:
        if self.unit is None:
            return False, "updates are not set up on this box"
        return ask_update_unit(self.unit, self.agent.running_command_id, args)

    def _update_os(self, args: dict[str, Any]) -> Any:
        return ask_os_updater(self.os_updater, self.agent, args)

    def _interrupted(self, entry: dict[str, Any]) -> Any:
        if entry.get("type") == "update" and self.unit and self.unit.knows(entry["command_id"]):
            return DEFER
        if entry.get("type") == "update_os" and self.os_updater.pending(entry["command_id"]):
            return DEFER
        return None

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        listen = self.config.status.listen
        server = ThreadingHTTPServer((listen.host, listen.port), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="safe-page", daemon=True).start()
        log.warning("%s (%s); status page on port %d", TITLE, self.reason(), listen.port)
        if self.link.client.token:
            self.link.start()
            self.os_updater.start()  # an OS update a reboot interrupted: finished and reported
            self.agent.start()
        waited = 0.0
        try:
            while not self.stopping.wait(5.0):
                if self.unit is not None:
                    collect_unit_results(self.unit, self.agent)
                waited += 5.0
                if waited >= self.retry_s:
                    waited = 0.0
                    log.warning("trying the service again")
                    self._restart({})
        finally:
            self.agent.stop()
            self.os_updater.stop()
            self.link.stop()
            server.shutdown()


def _handler(mode: SafeMode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path == "/healthz":
                self._send(503, "application/json", json.dumps({"ok": False, "safe_mode": True}))
            elif self.path == "/api/status":
                self._send(200, "application/json", json.dumps(mode.status()))
            elif self.path == "/":
                self._send(200, "text/html; charset=utf-8", _page(mode.status()))
            else:
                self._send(404, "text/plain", "not found\n")

        def _send(self, code: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log

    return Handler


def _page(status: dict[str, Any]) -> str:
    rows = [
        ("What is wrong", status["reason"]),
        ("What to do", "Call the support desk: the provider sees this box and can repair it."),
        ("Version", status["version"]),
        ("System slot", status["os"].get("slot") or "-"),
        ("Device", status["device_id"] or "-"),
        ("Central host", status["host"].get("state")),
    ]
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{TITLE}</title></head>"
        f"<body><h1>{html.escape(TITLE)}</h1><table>{cells}</table></body></html>\n"
    )


def main(config_path: str) -> int:
    config, problem = safe_config(config_path)
    mode = SafeMode(config, problem)
    for signum in (signal.SIGTERM, signal.SIGINT):  # the service starting again stops us
        signal.signal(signum, lambda *_: mode.stopping.set())
    mode.run()
    return 0
