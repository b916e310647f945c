"""`connectbox readers`: what the running service sees, or else what is plugged in right now."""

from __future__ import annotations

import contextlib
import time

from app.config import ConfigError, config_path, load_config
from provisioning import http


def list_readers_main(config_arg: str | None) -> int:
    port = 8080  # no readable config: try the default port, then local discovery
    with contextlib.suppress(ConfigError):
        port = load_config(config_path(config_arg)).status.listen.port
    try:
        url = f"http://127.0.0.1:{port}/api/status"
        status = http.exchange(http.new_pool(), "GET", url, headers={}, timeout_s=3).json()
    except (http.HttpFailure, ValueError):
        return _list_plugged_in()
    readers = status.get("readers") or []
    if not readers:
        print("The service sees no card reader (none bound in [readers], or none plugged in).")
    for reader in readers:
        when = reader.get("last_read_at")
        ago = f"{time.time() - when:.0f} s ago" if when else "never"
        print(
            f"{reader['devnode']}  register {reader['register_id']}  {reader['state']}"
            f"{' (' + reader['detail'] + ')' if reader.get('detail') else ''}"
            f"  reads {reader.get('reads', 0)}, last {ago}: {reader.get('last_verdict') or '-'}"
        )
    return 0


def _list_plugged_in() -> int:
    from drivers.discovery import KNOWN_VENDORS, list_readers

    print("The service is not running; readers plugged in now:")
    devices = list_readers()
    if not devices:
        print("  none found")
    for device in devices:
        vendor = KNOWN_VENDORS.get((device.vendor_id or "").lower(), "unknown vendor")
        print(
            f"  {device.devnode}  {device.kind}  {device.vendor_id}:{device.product_id} "
            f"({vendor})  serial {device.serial or '-'}  port {device.port_path or '-'}"
        )
    return 0
