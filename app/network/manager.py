"""NetworkManager: the latest network facts, host check and POS candidates, kept fresh.

A background thread polls `ip -j addr` / `ip -j link` every `poll_s` seconds and re-runs
discovery (and the host check) when links or addresses change: simple and reliable, with no
netlink listener to lose events. The layered host check also runs every `check_every_s`
(more often, `recheck_failed_s`, while it fails). Whether the host is up is not decided here:
every check's result goes to `on_checked` (the host link keeps it as its diagnosis and lets
its own probe decide), and network changes go to `on_network_change` listeners (e.g. the mDNS
announcer publishes new addresses, the host link diagnoses again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from app.network.discovery import (
    RESOLV_CONF,
    NetworkFacts,
    discover,
    fingerprint,
    read_links,
    route_to,
)
from app.network.neighbours import OUI_PATH, pos_candidates
from app.network.reachability import HostCheck, check_host

log = logging.getLogger("connectbox.network")


class NetworkChecker(Protocol):
    """What the technician's actions and the `rediscover` command use of the network."""

    def refresh(self) -> NetworkFacts: ...

    def check_now(self) -> HostCheck: ...


class NetworkManager:
    def __init__(
        self,
        host_url: str,
        token_provider: Callable[[], str | None],
        device_id: str,
        *,
        ca_file: str | None = None,
        timeout_s: float = 5.0,
        poll_s: float = 5.0,
        check_every_s: float = 300.0,
        recheck_failed_s: float = 60.0,
        resolv_conf: Path | str = RESOLV_CONF,
        oui_path: Path | str = OUI_PATH,
        discover_fn: Callable[[], NetworkFacts] | None = None,
        check_fn: Callable[..., HostCheck] | None = None,
        candidates_fn: Callable[[], list[dict[str, Any]]] | None = None,
        links_fn: Callable[[], Any] | None = None,
        route_fn: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.host_url = host_url
        self.token_provider = token_provider
        self.device_id = device_id
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.check_every_s = check_every_s
        self.recheck_failed_s = recheck_failed_s
        self._discover = discover_fn or (lambda: discover(resolv_conf=resolv_conf))
        self._check = check_fn or check_host
        self._candidates = candidates_fn or (lambda: pos_candidates(oui_path))
        self._links = links_fn or (lambda: fingerprint(*read_links()))
        self._route = route_fn or (lambda url: route_to(url, timeout_s))
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._facts: NetworkFacts | None = None
        self._host_check: HostCheck | None = None
        self._candidates_list: list[dict[str, Any]] = []
        self._route_to_host: dict[str, Any] | None = None
        self._refreshed_at: float | None = None
        self._checked_at: float | None = None
        self.on_checked: Callable[[HostCheck], None] | None = None
        self._network_listeners: list[Callable[[NetworkFacts], None]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ state

    @property
    def facts(self) -> NetworkFacts | None:
        return self._facts

    @property
    def host_check(self) -> HostCheck | None:
        return self._host_check

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return list(self._candidates_list)

    def on_network_change(self, listener: Callable[[NetworkFacts], None]) -> None:
        """`listener(facts)` when a refresh finds other links, addresses, gateways or DNS."""
        self._network_listeners.append(listener)

    # ------------------------------------------------------------ on demand

    def refresh(self) -> NetworkFacts:
        """Re-run discovery, the neighbour list and the route to the host, now."""
        with self._refresh_lock:
            facts = self._discover()
            try:
                candidates = self._candidates()
            except Exception as exc:
                log.warning("neighbour list failed: %s", exc)
                candidates = []
            try:
                route = self._route(self.host_url)
            except Exception as exc:
                route = {"error": str(exc)}
            with self._lock:
                previous = self._facts
                self._facts = facts
                self._candidates_list = candidates
                self._route_to_host = route
                self._refreshed_at = time.time()
        if previous is None or _shape(previous) != _shape(facts):
            primary = facts.primary
            log.info(
                "network: %s",
                f"{primary.address}/{primary.prefix} on {primary.interface}, gateway "
                f"{primary.gateway or 'none'}, DNS {', '.join(facts.dns.servers) or 'none'}"
                if primary
                else "no address",
            )
            for listener in list(self._network_listeners):
                _call(listener, facts)
        return facts

    def check_now(self) -> HostCheck:
        """Run the layered host check now (one at a time) and hand it to `on_checked`."""
        with self._check_lock:
            facts = self._facts or self.refresh()
            try:
                token = self.token_provider()
            except Exception as exc:
                log.warning("no token for the host check: %s", exc)
                token = None
            result = self._check(
                self.host_url,
                token,
                facts,
                timeout_s=self.timeout_s,
                ca_file=self.ca_file,
                device_id=self.device_id,
            )
            with self._lock:
                previous, self._host_check = self._host_check, result
                self._checked_at = result.checked_at
        if previous is None or previous.ok != result.ok:
            if result.ok:
                log.info("layered host check: every layer passed")
            else:
                log.warning("layered host check fails (%s): %s", result.failed_layer, result.action)
        if self.on_checked is not None:
            _call(self.on_checked, result)
        return result

    def trigger(self) -> None:
        """Ask the background thread for a refresh and a check soon (returns at once)."""
        self._wake.set()

    # ------------------------------------------------------------ background

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="network", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _read_links(self) -> Any:
        try:
            return self._links()
        except Exception as exc:
            log.warning("cannot read links and addresses: %s", exc)
            return None

    def _run(self) -> None:
        last = self._read_links()
        self._safely(self.refresh)
        self._safely(self.check_now)
        next_check = time.monotonic() + self._check_interval()
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            current = self._read_links()
            changed = current is not None and current != last
            if changed:
                log.info("links or addresses changed: rediscovering")
                last = current
            if woken or changed:
                self._safely(self.refresh)
                self._safely(self.check_now)
            elif time.monotonic() >= next_check:
                self._safely(self.check_now)
            else:
                continue
            next_check = time.monotonic() + self._check_interval()

    def _check_interval(self) -> float:
        check = self._host_check
        return self.check_every_s if check is not None and check.ok else self.recheck_failed_s

    def _safely(self, step: Callable[[], Any]) -> None:
        try:
            step()
        except Exception:
            log.exception("network %s failed", getattr(step, "__name__", "step"))

    # ------------------------------------------------------------ status page

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            check = self._host_check
            return {
                "host_url": self.host_url,
                "verdict": (
                    None
                    if check is None
                    else "the central host is reachable"
                    if check.ok
                    else check.action
                ),
                "facts": self._facts.to_dict() if self._facts else None,
                "check": check.to_dict() if check else None,
                "route_to_host": self._route_to_host,
                "pos_candidates": list(self._candidates_list),
                "refreshed_at": self._refreshed_at,
                "checked_at": self._checked_at,
            }


def _shape(facts: NetworkFacts) -> tuple[Any, ...]:
    """What a listener cares about: links, addresses, gateways, DNS (not times or lifetimes)."""
    return (
        tuple(
            (i.name, i.state, i.mac, tuple((a.address, a.prefix) for a in i.addresses))
            for i in facts.interfaces
        ),
        tuple((g.address, g.interface) for g in facts.gateways),
        tuple(facts.dns.servers),
    )


def _call(listener: Callable[[Any], None], value: Any) -> None:
    try:
        listener(value)
    except Exception:
        log.exception("network listener failed")
