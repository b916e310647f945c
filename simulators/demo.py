"""`connectbox demo`: the reference central host, the box and a simulated POS, all on loopback.

Built-in defaults only: the reference host's demo device (D-DEMO, token demo-token, site S-1001)
and the box configured to use it (trusting the host's TEST signing key). Plays every scripted
sale in both dialects, then keeps the box running for a look at the status page (unless
--once). Its data folder is temporary, removed on the way out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from app.box import Box
from app.config import (
    Choice,
    Config,
    HostConfig,
    Listen,
    NetworkConfig,
    PolicyConfig,
    PosConfig,
    StatusConfig,
    StorageConfig,
    declared,
)
from app.logs import setup_logging
from app.start_errors import StartError, cannot_listen
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64
from simulators.host.runner import start_in_thread
from simulators.host.store import DEMO_DEVICE
from simulators.pos import SCRIPTS, PosClient


def demo_config(host_url: str, pos_port: int, status_port: int, data_dir: Path) -> Config:
    return Config(
        pos=PosConfig(listen=Listen("127.0.0.1", pos_port), dialect="auto"),
        host=HostConfig(
            url=host_url,
            device_id=DEMO_DEVICE.device_id,
            site_id=DEMO_DEVICE.site_id,
            token=DEMO_DEVICE.token,
        ),
        status=StatusConfig(listen=Listen("127.0.0.1", status_port)),
        storage=StorageConfig(data_dir=data_dir),
        # The reference host signs its policy with a public TEST key; only the demo trusts it.
        policy=PolicyConfig(trusted_keys={TEST_KEY_ID: TEST_PUBLIC_KEY_B64}),
        # No mDNS from a developer's machine (or a test): it would announce on the real LAN.
        network=NetworkConfig(mdns=False),
        source="<demo>",
    )


# The demo's options for the box's settings a busy port names.
OPTIONS = {"[pos] listen": "--pos-port", "[status] listen": "--status-port"}


def run_demo(pos_port: int, status_port: int, host_port: int, once: bool = False) -> int:
    setup_logging("WARNING")
    try:
        host = start_in_thread("127.0.0.1", host_port)
    except OSError as exc:
        address = f"127.0.0.1:{host_port}"
        print(f"demo: {cannot_listen('reference host', address, exc, '--host-port').advice()}")
        return 1
    data_dir = Path(tempfile.mkdtemp(prefix="connectbox-demo-"))
    try:
        box = Box(demo_config(host.url, pos_port, status_port, data_dir))
    except StartError as exc:
        host.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"demo: cannot start the box: {exc.advice(OPTIONS.get(exc.key, exc.key))}")
        return 1
    box.start()
    print(
        f"Reference host: {host.url}   Box: POS port 127.0.0.1:{box.pos_server.port}\n"
        f"Status page: http://127.0.0.1:{box.status_port}/   (JSON: /api/status)\n\n"
        "Every sale is played in both POS dialects (how the POS frames its messages):"
    )
    dialects = declared("pos", "dialect").kind  # their meanings, as the docs give them
    for dialect in ("passport", "eps"):
        if isinstance(dialects, Choice):
            print(f"  {dialect:<9} {dialects.meanings[dialect].replace('`', '')}")
    print()
    failed = 0
    try:
        for dialect in ("passport", "eps"):
            for name, script in SCRIPTS.items():
                print(f"=== {name} ({dialect}) ===")
                try:
                    with PosClient("127.0.0.1", box.pos_server.port, dialect=dialect) as client:
                        script(client, print)
                except Exception as exc:  # the demo reports and goes on with the next sale
                    failed += 1
                    print(f"!!! {name} failed: {exc}")
                print()
        events = host.store.events() if hasattr(host.store, "events") else []
        print(f"The reference host received {len(events)} transaction events.")
        if not once:
            print(f"Box still running: http://127.0.0.1:{box.status_port}/ ; Ctrl-C to stop.")
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        logging.getLogger().setLevel(logging.ERROR)
        box.stop()
        host.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="connectbox demo", description="Reference host + box + simulated POS on loopback."
    )
    parser.add_argument("--once", action="store_true", help="exit after the scripted sales")
    parser.add_argument(
        "--pos-port", type=int, default=9000, help="the box's POS port (default %(default)s)"
    )
    parser.add_argument(
        "--status-port",
        type=int,
        default=8080,
        help="the box's status page and API (default %(default)s)",
    )
    parser.add_argument(
        "--host-port", type=int, default=8700, help="the reference host (default %(default)s)"
    )
    args = parser.parse_args(argv)
    # Stopped by SIGTERM too, the demo still stops the box and removes its data folder.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return run_demo(args.pos_port, args.status_port, args.host_port, once=args.once)
