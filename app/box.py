"""The Box: one object that holds every part of the running service, built once at start-up.

Parts: host client and relay (with the connectivity state), session store, the loyalty service
the POS talks to, the POS TCP server and the status web server. `start()` brings them up in
order, `stop()` takes them down in reverse; `run()` is the process's main loop under systemd.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from waitress.server import create_server

from app import __version__, systemd
from app.config import Config
from app.host.client import HostClient
from app.host.connectivity import HostConnectivity
from app.host.payload import Identity
from app.host.relay import HostRelay
from app.pos.server import PosServer
from app.pos.service import LoyaltyService
from app.pos.sessions import SessionStore
from app.status.web import create_app

log = logging.getLogger("connectbox")


class Box:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = time.time()
        self.connectivity = HostConnectivity()
        self.host_client = HostClient(
            config.host.url,
            config.host.token,
            config.host.device_id,
            timeout_s=config.host.timeout_s,
            ca_file=config.host.ca_file,
        )
        self.relay = HostRelay(self.connectivity)
        self.sessions = SessionStore(ttl_s=config.pos.session_timeout_s)
        self.service = LoyaltyService(
            Identity(config.host.device_id, config.host.site_id),
            self.host_client,
            self.relay,
            self.sessions,
            deadline_s=config.host.deadline_ms / 1000,
        )
        listen = config.pos.listen
        self.pos_server = PosServer(
            (listen.host, listen.port),
            self.service,
            dialect=config.pos.dialect,
            max_frame=config.pos.max_frame_bytes,
            idle_timeout_s=config.pos.idle_timeout_s,
        )
        status = config.status.listen
        self.status_server = create_server(
            create_app(self), host=status.host, port=status.port, threads=4, ident="connectbox"
        )
        self._status_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def status_port(self) -> int:
        return int(self.status_server.effective_port)  # type: ignore[union-attr]

    def start(self) -> None:
        self.config.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.pos_server.start()
        self._status_thread = threading.Thread(
            target=self.status_server.run, name="status-web", daemon=True
        )
        self._status_thread.start()
        log.info(
            "Connect Box %s up: POS port %s, status page on port %d, host %s",
            __version__,
            self.config.pos.listen,
            self.status_port,
            self.config.host.url,
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("stopping")
        self.pos_server.stop()
        self.status_server.close()
        self.relay.close()

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, telling systemd when ready and feeding its watchdog."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopped.set())
        self.start()
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval_s() or 5.0
        try:
            while not self._stopped.wait(interval):
                if self.pos_server.running:
                    systemd.notify("WATCHDOG=1")
        finally:
            systemd.notify("STOPPING=1")
            self._stopped.clear()
            self.stop()
        log.info("stopped")

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at),
            "device_id": self.config.host.device_id,
            "site_id": self.config.host.site_id,
            "pos": {**self.pos_server.snapshot(), "open_sessions": len(self.sessions)},
            "host": {"url": self.config.host.url, **self.connectivity.snapshot()},
            "counters": self.service.counters.snapshot(),
            "failed_events": list(self.service.failed_events),
        }
