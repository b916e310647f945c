"""What the technician actions do. Each returns a `Result` the page shows after its redirect.

They work with `BoxControls`, the few parts of the box they need, never the Box itself:
- test the host connection now: the network's layered check when the box has one, and one real
  call of the host's config endpoint through the relay (so a success also tells the host link
  the host is back, and a refused token is noticed);
- re-run network discovery (when the box has network discovery);
- a test sale: GetRewards + FinalizeRewards through the box's own POS port, register "TEST",
  TrainingModeFlag set;
- restart the service (the process exits and systemd starts it again);
- enroll again with the claim code (after a revoked token);
- set a fixed address (from the form's address, gateway and DNS fields), or go back to DHCP:
  checked here, applied by the network helper (app/network/static.py).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from app.config import Config
from app.host.relay import HostRelay
from app.network.manager import NetworkChecker
from app.network.static import DHCP, BadSetting, FixedAddress, Ipv4Setting, parse_setting
from app.pos.client import DIALECTS, PosClientError
from app.pos.test_sale import TEST_REGISTER, play_test_sale
from app.pos.tls import pinned_context
from app.status.verdict import network_layers
from provisioning.api import HostError
from provisioning.link import HostLink


@dataclass(frozen=True)
class Result:
    ok: bool
    message: str


@dataclass(frozen=True)
class BoxControls:
    """What the technician's actions work with. The optional ones a box may lack: the action
    then says it is not available."""

    config: Config  # the POS port's address and dialect (the test sale)
    link: HostLink  # the host's state, and the client of the test call
    relay: HostRelay  # the test call goes through it, like a sale's
    pos_port: int  # where the box's own POS port listens
    network: NetworkChecker | None = None  # the layered check and rediscovery
    fixed_address: FixedAddress | None = None  # the box's IPv4 setting
    restart: Callable[[], None] | None = None
    reenroll: Callable[[], tuple[bool, str]] | None = None


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


def test_host(box: BoxControls) -> Result:
    """The layered check when the box has one; then (or else) one call of the host's config
    endpoint through the relay, which updates the host link: a host that is back resumes the
    outbox at once, a refused token is noticed."""
    if box.network is not None:
        checked = _describe_check(box.network.check_now().to_dict())
        if not checked.ok:
            return checked
        called = _relay_call(box)
        return checked if called.ok else called
    return _relay_call(box)


def _relay_call(box: BoxControls) -> Result:
    started = time.monotonic()
    client = box.link.client
    future = box.relay.submit(client.config, "technician host test")
    wait_s = client.timeout_s + 2.0
    try:
        future.result(timeout=wait_s)
    except HostError as exc:
        return Result(False, f"The central host did not answer properly: {exc}")
    except FutureTimeout:
        return Result(False, f"The central host did not answer within {wait_s:g} s.")
    return Result(True, f"The central host answered in {_ms(started)}.")


def _describe_check(check: dict[str, Any]) -> Result:
    layers = network_layers({"check": check})
    failed = next((layer for layer in layers if layer.ok is False), None)
    if failed is not None:
        detail = f": {failed.detail}" if failed.detail else ""
        action = f" {failed.action}" if failed.action else ""
        return Result(
            False, f"Host connection check: the {failed.name} check fails{detail}.{action}"
        )
    if check.get("ok") is False:
        return Result(False, "Host connection check failed; see the Central host section.")
    passed = ", ".join(layer.name for layer in layers if layer.ok and not layer.skipped)
    return Result(True, f"Host connection check passed ({passed or 'no layer applies'}).")


def refresh_network(box: BoxControls) -> Result:
    if box.network is None:
        return Result(False, "Network discovery is not available in this version of the box.")
    started = time.monotonic()
    box.network.refresh()
    return Result(True, f"Network discovery ran again ({_ms(started)}); see the Network section.")


def pos_address(box: BoxControls) -> tuple[str, int]:
    """Where the box's own POS port answers locally."""
    listen = box.config.pos.listen
    host = listen.host
    try:
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = "::1" if address.version == 6 else "127.0.0.1"
    except ValueError:
        pass
    return host, box.pos_port


def test_sale(box: BoxControls) -> Result:
    host, port = pos_address(box)
    pos = box.config.pos
    dialect = pos.dialect if pos.dialect in DIALECTS else "passport"
    try:
        tls = pinned_context(pos.tls_cert) if pos.tls_cert else None
        times = play_test_sale(host, port, dialect, timeout=5.0, tls=tls)
    except (PosClientError, OSError) as exc:  # OSError: the certificate file
        return Result(False, f"Test sale failed: {exc}")
    host_state = "online" if box.link.online else "not answering (decided offline)"
    return Result(
        True,
        f"Test sale on register {TEST_REGISTER} answered: GetRewards in {times.rewards_ms:.0f} ms, "
        f"FinalizeRewards in {times.finalize_ms:.0f} ms; central host {host_state}.",
    )


def restart(box: BoxControls) -> Result:
    if box.restart is None:
        return Result(
            False,
            "This version of the service cannot restart itself: power the box off and on.",
        )
    box.restart()
    return Result(True, "Restart requested: the service restarts now; this page returns shortly.")


def reenroll(box: BoxControls) -> Result:
    if box.reenroll is None:
        return Result(False, "This version of the service cannot enroll from the page.")
    ok, detail = box.reenroll()
    return Result(ok, detail)


def fixed_address(box: BoxControls, form: Mapping[str, str]) -> Result:
    """The form's address/prefix, gateway and DNS servers (separated by spaces or commas)."""
    field = {name: (form.get(name) or "").strip() for name in ("address", "gateway", "dns")}
    raw = {
        "address": field["address"],
        "gateway": field["gateway"] or None,
        "dns": [server for server in re.split(r"[\s,]+", field["dns"]) if server],
    }
    try:
        setting = parse_setting(raw)
    except BadSetting as exc:
        return Result(False, f"Nothing changed: {exc}.")
    return _request_address(box, setting)


def use_dhcp(box: BoxControls) -> Result:
    return _request_address(box, DHCP)


def _request_address(box: BoxControls, setting: Ipv4Setting) -> Result:
    if box.fixed_address is None:
        return Result(False, "Setting the address is not available in this version of the box.")
    done = box.fixed_address.request(setting, "status page")
    return Result(done.ok, done.message)


# Actions that read fields of the form besides the PIN.
FORM_ACTIONS: dict[str, Callable[[BoxControls, Mapping[str, str]], Result]] = {
    "network-static": fixed_address,
}

ACTIONS: dict[str, Callable[[BoxControls], Result]] = {
    "network-dhcp": use_dhcp,
    "test-host": test_host,
    "network-refresh": refresh_network,
    "test-sale": test_sale,
    "restart": restart,
    "reenroll": reenroll,
}
