"""Announce the box on the site network over mDNS/DNS-SD (python-zeroconf).

Two services under one instance name, "Connect Box <suffix>" (the suffix from the device id):
`_connectbox._tcp` on the POS port, with TXT id / version / status / status_port, and
`_http._tcp` on the status page port, so a technician's phone or laptop finds the status page.
A name already taken on the network gets a "-2", "-3" … suffix (zeroconf's probing); the
`_http` service then takes the same name as `_connectbox`.

Nothing here blocks the caller for long: probing and announcing (about 3 s) and every update
run on the announcer's own thread; `close()` waits at most `close_timeout_s` for the goodbye
packets.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from typing import Any

from zeroconf import (
    InterfaceChoice,
    InterfacesType,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    Zeroconf,
)

from app.network.discovery import discover
from provisioning.backoff import NO_JITTER, backoff_delay

log = logging.getLogger("connectbox.mdns")

SERVICE_TYPE = "_connectbox._tcp.local."
HTTP_TYPE = "_http._tcp.local."
REGISTER_TIMEOUT_S = 10.0
MAX_RENAMES = 20
_CLOSE = object()
_UPDATE = object()


class _Closed(Exception):
    """close() was called while the services were being probed."""


def instance_suffix(device_id: str) -> str:
    """The last (up to) six letters and digits of the device id, upper case."""
    return re.sub(r"[^A-Za-z0-9]", "", device_id)[-6:].upper() or "BOX"


def local_addresses() -> list[str]:
    """Global addresses of the interfaces that are up (IPv4 first), from discovery."""
    facts = discover(resolvectl=None)
    found = [a for i in facts.connected for a in i.usable_addresses]
    found.sort(key=lambda a: a.family != "ipv4")
    return [a.address for a in found]


class Announcer:
    """`start()` announces in the background; `update_status()` and `update_addresses()`
    republish; `close()` withdraws. One use: a closed announcer does not start again."""

    def __init__(
        self,
        device_id: str,
        version: str,
        pos_port: int,
        status_port: int,
        addresses: list[str] | None = None,
        interfaces: InterfacesType = InterfaceChoice.All,
        *,
        status: str = "starting",
        name: str | None = None,
        ip_version: IPVersion | None = None,
        close_timeout_s: float = 3.0,
    ) -> None:
        self.device_id = device_id
        self.version = version
        self.pos_port = pos_port
        self.status_port = status_port
        self.interfaces = interfaces
        self.ip_version = ip_version
        self.close_timeout_s = close_timeout_s
        self.base_name = name or f"Connect Box {instance_suffix(device_id)}"
        self.server = f"connectbox-{instance_suffix(device_id).lower()}.local."
        self._lock = threading.Lock()
        self._status = status
        self._addresses = list(addresses) if addresses is not None else None
        self._auto_addresses: list[str] | None = None  # found at start when none were given
        self._names: dict[str, str] = {}
        self._infos: dict[str, ServiceInfo] = {}
        self._zc: Zeroconf | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._closing = threading.Event()
        self._announced = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""

    # ------------------------------------------------------------ caller side (never blocks long)

    def start(self) -> None:
        """Start announcing in the background; returns at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="mdns-announcer", daemon=True)
        self._thread.start()

    def wait_announced(self, timeout_s: float = REGISTER_TIMEOUT_S) -> bool:
        return self._announced.wait(timeout_s)

    @property
    def announced(self) -> bool:
        return self._announced.is_set() and not self._closing.is_set()

    @property
    def names(self) -> dict[str, str]:
        """Service type → the instance name in use (after any renaming)."""
        with self._lock:
            return dict(self._names)

    @property
    def status(self) -> str:
        return self._status

    def update_status(self, status: str) -> None:
        """Publish a new `status` in the TXT record (in the background)."""
        with self._lock:
            if status == self._status:
                return
            self._status = status
        self._queue.put(_UPDATE)

    def update_addresses(self, addresses: list[str] | None) -> None:
        """Announce other addresses (None: the box's current ones), e.g. after a DHCP change."""
        with self._lock:
            self._addresses = list(addresses) if addresses is not None else None
        self._queue.put(_UPDATE)

    def close(self) -> None:
        """Withdraw the services (goodbye packets) and stop; waits at most close_timeout_s."""
        self._closing.set()
        self._queue.put(_CLOSE)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.close_timeout_s)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "announced": self.announced,
                "names": dict(self._names),
                "server": self.server,
                "status": self._status,
                "addresses": list(self._current_addresses_locked() or []),
                "error": self.error,
            }

    # ------------------------------------------------------------ announcer thread

    def _current_addresses_locked(self) -> list[str] | None:
        return self._addresses if self._addresses is not None else self._auto_addresses

    def _properties(self, type_: str) -> dict[str, str]:
        if type_ == HTTP_TYPE:
            return {"path": "/", "id": self.device_id}
        return {
            "txtvers": "1",
            "id": self.device_id,
            "version": self.version,
            "status": self._status,
            "status_port": str(self.status_port),
        }

    def _info(self, type_: str, instance: str) -> ServiceInfo:
        with self._lock:
            addresses = self._current_addresses_locked() or []
            properties = self._properties(type_)
        port = self.status_port if type_ == HTTP_TYPE else self.pos_port
        return ServiceInfo(
            type_,
            f"{instance}.{type_}",
            port=port,
            properties=properties,
            server=self.server,
            parsed_addresses=addresses,
        )

    def _run(self) -> None:
        failures = 0
        try:
            while not self._closing.is_set():
                try:
                    self._open_and_register()
                    break
                except _Closed:
                    return
                except Exception as exc:  # keep trying: the network may come later
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("mDNS announcement failed (retrying): %s", self.error)
                    self._shutdown(withdraw=True)  # whatever got registered says goodbye
                    failures += 1
                    if self._closing.wait(backoff_delay(failures, 1.0, 60.0, jitter=NO_JITTER)):
                        return
            while True:
                item = self._queue.get()
                if item is _CLOSE or self._closing.is_set():
                    break
                while not self._queue.empty():  # coalesce bursts of updates
                    if self._queue.get_nowait() is _CLOSE:
                        return
                self._publish_update()
        finally:
            self._shutdown(withdraw=True)

    def _open_and_register(self) -> None:
        if self._addresses is None:
            try:
                self._auto_addresses = local_addresses()
            except Exception as exc:  # discovery trouble must not stop the announcement
                log.warning("cannot list the box's addresses for mDNS: %s", exc)
                self._auto_addresses = []
        self._zc = Zeroconf(interfaces=self.interfaces, ip_version=self.ip_version)
        zc = self._zc
        assert zc.loop is not None
        future = asyncio.run_coroutine_threadsafe(self._register_all(zc), zc.loop)
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while True:  # wait for the probing, but let close() interrupt it
            try:
                future.result(0.1)
                break
            except TimeoutError:
                if self._closing.is_set():
                    future.cancel()
                    raise _Closed from None
                if time.monotonic() > deadline:
                    future.cancel()
                    raise
        self.error = ""
        self._announced.set()
        log.info("announced over mDNS as %s", ", ".join(self.names.values()))

    async def _register_all(self, zc: Zeroconf) -> None:
        """_connectbox first; _http then takes the same (possibly renamed) instance name."""
        first = await self._register(zc, SERVICE_TYPE, self.base_name)
        second = await self._register(zc, HTTP_TYPE, self.names[SERVICE_TYPE])
        await asyncio.gather(first, second)

    async def _register(self, zc: Zeroconf, type_: str, base: str) -> Any:
        """Probe and register under `base` (renamed on a clash); returns the announcements."""
        instance = base
        for attempt in range(2, MAX_RENAMES + 2):
            info = self._info(type_, instance)
            try:
                broadcast = await zc.async_register_service(info, allow_name_change=True)
            except NonUniqueNameException:
                instance = f"{base}-{attempt}"
                continue
            with self._lock:
                self._names[type_] = info.name[: -len(type_) - 1]
                self._infos[type_] = info
            return broadcast
        raise NonUniqueNameException(f"no free name for {base} in {type_}")

    def _publish_update(self) -> None:
        zc = self._zc
        if zc is None or self._closing.is_set():
            return
        if self._addresses is None:
            try:
                self._auto_addresses = local_addresses()
            except Exception as exc:
                log.warning("cannot list the box's addresses for mDNS: %s", exc)
        for type_, name in self.names.items():
            info = self._info(type_, name)
            try:
                zc.update_service(info)
                with self._lock:
                    self._infos[type_] = info
            except Exception as exc:
                self.error = f"update failed: {type(exc).__name__}: {exc}"
                log.warning("mDNS update failed: %s", exc)

    def _shutdown(self, withdraw: bool) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            if withdraw and self._infos:
                zc.unregister_all_services()
        except Exception as exc:
            log.warning("mDNS withdrawal failed: %s", exc)
        finally:
            zc.close()
            with self._lock:
                self._infos.clear()
            self._announced.clear()
