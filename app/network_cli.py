"""`connectbox network`: show the box's IPv4 setting, set a fixed address, or go back to DHCP.

It writes the same request as the status page's form (app/network/static.py), so it works
whether or not the service runs; on the image the network helper applies it, and the command
waits for the outcome (the helper keeps a new setting only if the gateway answers).
"""

from __future__ import annotations

import argparse
import sys
import time

from app.config import Config
from app.network.static import DHCP, TRIAL_S, BadSetting, FixedAddress, parse_setting

SOURCE = "connectbox network"


def add_parser(commands: argparse._SubParsersAction) -> None:
    network = commands.add_parser(
        "network", help="show the box's IPv4 setting, set a fixed address or go back to DHCP"
    )
    network.add_argument("--config", help="the service's TOML file (its data directory)")
    actions = network.add_subparsers(dest="network_command", metavar="show|static|dhcp")
    actions.add_parser("show", help="the setting in force, the last change and the address now")
    static = actions.add_parser("static", help="a fixed address: static ADDRESS/PREFIX ...")
    static.add_argument("address", metavar="ADDRESS/PREFIX", help="e.g. 192.168.1.50/24")
    static.add_argument("--gateway", required=True, help="the site router, e.g. 192.168.1.1")
    static.add_argument(
        "--dns", action="append", required=True, help="a DNS server (repeat, or comma-separated)"
    )
    dhcp = actions.add_parser("dhcp", help="take the address from the site's DHCP server")
    for parser in (static, dhcp):
        parser.add_argument("--no-wait", action="store_true", help="do not wait for the outcome")


def network_main(args: argparse.Namespace, config: Config) -> int:
    fixed = FixedAddress(config.storage.data_dir)
    if args.network_command in (None, "show"):
        return _show(fixed)
    setting = DHCP
    if args.network_command == "static":
        dns = [server for item in args.dns for server in item.replace(",", " ").split()]
        raw = {"address": args.address, "gateway": args.gateway, "dns": dns}
        try:
            setting = parse_setting(raw)
        except BadSetting as exc:
            print(f"connectbox network: nothing changed: {exc}", file=sys.stderr)
            return 2
    requested = fixed.request(setting, SOURCE)
    print(requested.message)
    if not requested.ok or not fixed.managed or args.no_wait:
        return 0 if requested.ok else 1
    deadline = time.monotonic() + TRIAL_S + 30  # the trial, networkd's reload and a margin
    while (outcome := fixed.outcome(requested.request_id)) is None:
        if time.monotonic() > deadline:
            print("No outcome yet: see `connectbox network show`.", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(("Done: " if outcome.ok else "Not done: ") + outcome.message)
    return 0 if outcome.ok else 1


def _show(fixed: FixedAddress) -> int:
    from app.network.discovery import discover

    setting = fixed.snapshot()
    if setting["mode"] == "static":
        dns = ", ".join(setting["dns"])
        shown = f"fixed {setting['address']}, gateway {setting['gateway']}, DNS {dns}"
    else:
        shown = "DHCP"
    if setting.get("source"):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(setting.get("at") or 0))
        shown += f" (set by {setting['source']} at {at})"
    print(f"Setting:     {shown}")
    if not setting["managed"]:
        print("Applied:     no: this machine is not a Connect Box image (no network helper)")
    if setting.get("pending"):
        print("Pending:     a change is being applied")
    result = setting.get("result")
    if result:
        print(f"Last change: {'done' if result.get('ok') else 'failed'}: {result.get('message')}")
    facts = discover()
    primary = facts.primary
    if primary is None:
        print("Now:         no address")
    else:
        print(
            f"Now:         {primary.address}/{primary.prefix} on {primary.interface} "
            f"({primary.origin}), gateway {primary.gateway or 'none'}, "
            f"DNS {', '.join(facts.dns.servers) or 'none'}"
        )
    return 0
