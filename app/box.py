"""The Box: one object that holds every part of the running service, built once at start-up.

Parts: the host link (the one door to the host: token, client, state) and the relay, the
journal and its outbox, the signed policy and the offline engine, session store, the loyalty
service the POS talks to, the POS TCP server, the status (app/status/source.py) and its web
server, remote management. The Box builds each part once and hands it only the few
collaborators it needs (never the Box itself). `start()` brings them up in order, `stop()` takes
them down in reverse; `run()` is the process's main loop under systemd.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app import __version__, systemd
from app.clock import ClockKeeper
from app.config import Config, Listen
from app.host.payload import Identity
from app.host.relay import HostRelay
from app.journal import Journal
from app.management import RemoteManagement
from app.network.manager import NetworkManager
from app.network.mdns import Announcer
from app.network.static import FixedAddress
from app.offline.engine import OfflineEngine
from app.offline.policy import PolicyManager
from app.os_image import os_image
from app.outbox import Outbox
from app.pos.server import PosServer
from app.pos.service import LoyaltyService
from app.pos.sessions import SessionStore
from app.pos.tls import server_context
from app.readers import ReaderService
from app.retention import Retention
from app.safe_mode import remember_config
from app.start_errors import StartError, cannot_listen
from app.status.actions import BoxControls
from app.status.listener import StatusListener
from app.status.source import StatusSource
from app.status.verdict import verdict
from app.status.web import create_app
from provisioning.link import HostLink

log = logging.getLogger("connectbox")
HOUSEKEEPING_S = 5.0
LAST_HOST_CONTACT = "host_last_ok_at"  # journal state key, read by the offline engine


@contextmanager
def _listener(name: str, key: str, listen: Listen) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise cannot_listen(f"{name} listener", str(listen), exc, key) from exc


def announces(mdns: bool | None, image: dict[str, Any]) -> bool:
    """[network] mdns; not set: only in the Connect Box image, never from a developer's
    machine (it would announce a stray box on the office network)."""
    return mdns if mdns is not None else bool(image.get("slot") or image.get("variant"))


class Box:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.link = HostLink(
            config.host.url,
            timeout_s=config.host.timeout_s,
            ca_file=config.host.ca_file,
            fast_s=config.host.deadline_ms / 1000,
        )
        self.host_client = self.link.client
        self.relay = HostRelay(self.link, hedge_s=config.host.hedge_ms / 1000)
        data_dir = config.storage.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.journal = Journal(data_dir / "journal.db")
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StartError(
                f"cannot use the data directory {data_dir}: {reason}",
                "Choose a folder this user can write (or run as the connectbox user)",
                "[storage] data_dir",
            ) from exc
        self.outbox = Outbox(self.journal, self.link)
        self.retention = Retention(self.journal, days=config.storage.retention_days)
        # The clock, set from the host's `Date` while NTP cannot reach it (app/clock.py).
        self.clock = ClockKeeper(self.host_client, config.host.clock_helper)
        self.policies = PolicyManager(
            self.host_client,
            config.policy.trusted_keys,
            config.host.site_id,
            data_dir / "policy.json",
            paused=lambda: self.link.unauthorized,
            clock_check=self.clock.problem,
        )
        self.clock.on_step = self.policies.note_skew
        self.engine = OfflineEngine(
            self.policies, self.journal, last_contact=lambda: self.link.last_ok
        )
        self.readers = ReaderService(
            config.readers.bindings,
            config.readers.pending_ttl_s,
            config.readers.discover,
            policy=self.policies.current,
        )
        self.network = NetworkManager(
            config.host.url,
            lambda: self.host_client.token,
            config.host.device_id,
            ca_file=config.host.ca_file,
            check_every_s=config.network.check_interval_s,
        )
        self.fixed_address = FixedAddress(data_dir)
        self.announcer: Announcer | None = None
        self.sessions = SessionStore(ttl_s=config.pos.session_timeout_s)
        self.service = LoyaltyService(
            Identity(config.host.device_id, config.host.site_id),
            self.host_client,
            self.relay,
            self.sessions,
            self.journal,
            self.outbox,
            self.engine,
            self.readers.pending,
            deadline_s=config.host.deadline_ms / 1000,
        )
        self.link.diagnose = self.network.check_now
        self.network.on_checked = self.link.take_diagnosis
        self.network.on_network_change(lambda facts: self.link.diagnose_soon())
        self._stopped = threading.Event()
        self._housekeeping: threading.Thread | None = None
        listen = config.pos.listen
        pos = config.pos
        tls = server_context(pos.tls_cert, pos.tls_key) if pos.tls_cert and pos.tls_key else None
        with self._closing_on_error(), _listener("POS", "[pos] listen", listen):
            self.pos_server = PosServer(
                (listen.host, listen.port),
                self.service,
                dialect=config.pos.dialect,
                max_frame=config.pos.max_frame_bytes,
                idle_timeout_s=config.pos.idle_timeout_s,
                frame_deadline_s=config.pos.frame_deadline_s,
                max_connections=config.pos.max_connections,
                # Long enough for a request waiting on the host to be answered at its deadline.
                drain_s=config.host.deadline_ms / 1000 + 2.0,
                tls=tls,
            )
        self.status_source = StatusSource(
            started_at=time.time(),
            os_image=os_image(),  # the root slot it booted from does not change while it runs
            pos=self.pos_server,
            sessions=self.sessions,
            service=self.service,
            link=self.link,
            outbox=self.outbox,
            journal=self.journal,
            retention=self.retention,
            policies=self.policies,
            readers=self.readers,
            network=self.network,
            fixed_address=self.fixed_address,
            # Both are made after this source because they read it: looked up when read.
            announcer=lambda: self.announcer,
            management=lambda: self.management.snapshot(),
        )
        self.management = RemoteManagement(
            config,
            self.link,
            self.policies,
            status=self.status_source,
            network=self.network,
            fixed_address=self.fixed_address,
            service=self.service,
            readers=self.readers,
            outbox=self.outbox,
            retention=self.retention,
            use_identity=self._use_identity,
            restart=self.request_restart,
            idle=lambda: len(self.sessions) == 0,
            stopping=self._stopped,
        )
        self.controls = BoxControls(
            config=config,
            link=self.link,
            relay=self.relay,
            pos_port=self.pos_server.port,
            network=self.network,
            fixed_address=self.fixed_address,
            restart=self.request_restart,
            reenroll=self.management.reenroll,
        )
        status = config.status.listen
        app = create_app(self.status_source, self.controls)
        with self._closing_on_error(), _listener("status", "[status] listen", status):
            self.status_server = StatusListener(app, status.host, status.port)
        self._closed = False
        self.restart_requested = False

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        """A box that cannot be built releases what it opened (the POS port, the journal)."""
        try:
            yield
        except BaseException:
            if hasattr(self, "pos_server"):
                self.pos_server.server_close()
            self.journal.close()
            raise

    @property
    def status_port(self) -> int:
        return self.status_server.port

    def _start_host_parts(self) -> None:
        """What talks to the host with the device token: only once the box is enrolled."""
        self.policies.start(self.config.policy.refresh_s)
        self.outbox.start()

    def start(self) -> None:
        if self.config.network.ipv4 is not None:  # applied when it changed since last time
            self.fixed_address.configured("file", self.config.network.ipv4)
        self.management.start(self._start_host_parts)
        self._housekeeping = threading.Thread(
            target=self._housekeep, name="housekeeping", daemon=True
        )
        self._housekeeping.start()
        self.link.start()
        self.readers.start()
        self.service.settle_unsettled()  # requests kept before a crash, before any POS talks
        self.pos_server.start()
        self.network.start()
        if announces(self.config.network.mdns, self.status_source.os_image):
            self.announcer = Announcer(
                self.config.host.device_id, __version__, self.pos_server.port, self.status_port
            )
            self.announcer.start()
            self.network.on_network_change(lambda facts: self.announcer.update_addresses(None))
        self.status_server.start()
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
        if self.announcer is not None:
            self.announcer.close()  # withdraw the mDNS announcement first
        # The listeners first: no new POS connection or page request from here on.
        self.pos_server.stop_accepting()
        self.status_server.stop()
        self.pos_server.stop()  # requests being handled finish (bounded), then all hang up
        self.network.stop()
        self.link.stop()
        self.readers.stop()
        self.management.stop()
        self.outbox.stop()
        self.policies.stop()
        self.relay.close()
        if self._housekeeping is not None:
            self._housekeeping.join(HOUSEKEEPING_S)  # it reads the journal
        self._save_last_host_contact()
        self._closed = True
        self.journal.close()

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, telling systemd when ready and feeding its watchdog."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopped.set())
        self.start()
        systemd.notify("READY=1")
        remember_config(self.config)  # what safe mode uses if the file breaks later
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

    def request_restart(self) -> None:
        """Leave `run()` shortly (after the caller's answer is out); systemd starts us again."""
        log.warning("restart requested")
        self.restart_requested = True
        threading.Timer(0.5, self._stopped.set).start()

    def _use_identity(self, identity: Identity) -> None:
        """Who the box is now (configured, stored, or just enrolled): the parts that say so."""
        self.service.identity = identity
        self.policies.site_id = identity.site_id
        self.network.device_id = identity.device_id

    def _housekeep(self) -> None:
        while not self._stopped.wait(HOUSEKEEPING_S):
            self._save_last_host_contact()
            self.clock.tick()
            self.retention.tick()  # bounded: a few short transactions at most
            if self.announcer is not None:  # the verdict in the mDNS TXT record
                found = verdict(self.status_source.status())
                self.announcer.update_status("online" if found.ok else found.key)

    def _save_last_host_contact(self) -> None:
        """Keep the last time the host answered durable: offline hours count from it."""
        last_ok = self.link.last_ok
        if last_ok is None or self._closed:
            return
        saved = self.journal.get_state(LAST_HOST_CONTACT)
        if saved is None or float(saved) < last_ok - 1:
            self.journal.set_state(LAST_HOST_CONTACT, repr(last_ok))

    def status(self) -> dict[str, Any]:
        """The one snapshot everyone reads (built by app/status/source.py)."""
        return self.status_source.status()
