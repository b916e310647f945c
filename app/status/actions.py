"""What the technician actions do. Each returns a `Result` the page shows after its redirect.

- test the host connection now: the network's layered check when the box has one, and one real
  call of the host's config endpoint through the relay (so a success also tells the box the host
  is back, and a refused token is noticed);
- re-run network discovery (when the box has network discovery);
- a test sale: GetRewards + FinalizeRewards through the box's own POS port, register "TEST",
  TrainingModeFlag set;
- restart the service (`Box.request_restart()`: the process exits and systemd starts it again).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from app.pos.client import DIALECTS, PosClientError
from app.pos.test_sale import TEST_REGISTER, play_test_sale
from app.status.verdict import network_layers
from provisioning.api import HostError


@dataclass(frozen=True)
class Result:
    ok: bool
    message: str


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


def test_host(box: Any) -> Result:
    """The layered check when the box has one; then (or else) one call of the host's config
    endpoint through the relay, which updates the box's own view of the host: a host that is
    back resumes the outbox at once, a refused token is noticed."""
    network = getattr(box, "network", None)
    if network is not None and callable(getattr(network, "check_now", None)):
        checked = _describe_check(_as_dict(network.check_now()))
        if not checked.ok:
            return checked
        called = _relay_call(box)
        return checked if called.ok else called
    return _relay_call(box)


def _relay_call(box: Any) -> Result:
    started = time.monotonic()
    future = box.relay.submit(box.host_client.config, "technician host test")
    wait_s = float(getattr(box.host_client, "timeout_s", 10.0)) + 2.0
    try:
        future.result(timeout=wait_s)
    except HostError as exc:
        return Result(False, f"The central host did not answer properly: {exc}")
    except FutureTimeout:
        return Result(False, f"The central host did not answer within {wait_s:g} s.")
    return Result(True, f"The central host answered in {_ms(started)}.")


def _as_dict(check: Any) -> Any:
    if callable(getattr(check, "to_dict", None)):
        return check.to_dict()
    if dataclasses.is_dataclass(check) and not isinstance(check, type):
        return dataclasses.asdict(check)
    return check


def _describe_check(check: Any) -> Result:
    layers = network_layers({"check": check})
    failed = next((layer for layer in layers if layer.ok is False), None)
    if failed is not None:
        detail = f": {failed.detail}" if failed.detail else ""
        action = f" {failed.action}" if failed.action else ""
        return Result(
            False, f"Host connection check: the {failed.name} check fails{detail}.{action}"
        )
    if isinstance(check, dict) and check.get("ok") is False:
        return Result(False, "Host connection check failed; see the Central host section.")
    passed = ", ".join(layer.name for layer in layers if layer.ok and not layer.skipped)
    return Result(True, f"Host connection check passed ({passed or 'no layer applies'}).")


def refresh_network(box: Any) -> Result:
    network = getattr(box, "network", None)
    refresh = getattr(network, "refresh", None)
    if not callable(refresh):
        return Result(False, "Network discovery is not available in this version of the box.")
    started = time.monotonic()
    refresh()
    return Result(True, f"Network discovery ran again ({_ms(started)}); see the Network section.")


def pos_address(box: Any) -> tuple[str, int]:
    """Where the box's own POS port answers locally."""
    listen = box.config.pos.listen
    host = listen.host
    try:
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = "::1" if address.version == 6 else "127.0.0.1"
    except ValueError:
        pass
    return host, box.pos_server.port


def test_sale(box: Any) -> Result:
    host, port = pos_address(box)
    dialect = box.config.pos.dialect if box.config.pos.dialect in DIALECTS else "passport"
    try:
        times = play_test_sale(host, port, dialect, timeout=5.0)
    except PosClientError as exc:
        return Result(False, f"Test sale failed: {exc}")
    host_state = "online" if box.link.online else "not answering (decided offline)"
    return Result(
        True,
        f"Test sale on register {TEST_REGISTER} answered: GetRewards in {times.rewards_ms:.0f} ms, "
        f"FinalizeRewards in {times.finalize_ms:.0f} ms; central host {host_state}.",
    )


def restart(box: Any) -> Result:
    request_restart: Callable[[], Any] | None = getattr(box, "request_restart", None)
    if not callable(request_restart):
        return Result(
            False,
            "This version of the service cannot restart itself: power the box off and on.",
        )
    request_restart()
    return Result(True, "Restart requested: the service restarts now; this page returns shortly.")


def reenroll(box: Any) -> Result:
    management = getattr(box, "management", None)
    if management is None:
        return Result(False, "This version of the service cannot enroll from the page.")
    ok, detail = management.reenroll()
    return Result(ok, detail)


ACTIONS: dict[str, Callable[[Any], Result]] = {
    "test-host": test_host,
    "network-refresh": refresh_network,
    "test-sale": test_sale,
    "restart": restart,
    "reenroll": reenroll,
}
