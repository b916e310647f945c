"""`connectbox pos-sim`: play scripted sales as a POS against a box."""

from __future__ import annotations

import argparse
import sys

from app.pos.client import DIALECTS, PosClientError
from app.pos.tls import client_context
from simulators.pos.client import PosClient
from simulators.pos.scenarios import SCRIPTS

DEFAULT_PORT = 9000
DEFAULT_CONNECT = f"127.0.0.1:{DEFAULT_PORT}"


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or HOST alone (port 9000)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r} (expected HOST:PORT)")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r} (expected HOST:PORT, port 1-65535)")
    return host, int(port_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectbox pos-sim", description="Play scripted sales as a POS against a box."
    )
    parser.add_argument(
        "--connect", default=DEFAULT_CONNECT, metavar="HOST:PORT", help="the box (%(default)s)"
    )
    parser.add_argument("--dialect", choices=DIALECTS, default="passport")
    parser.add_argument(
        "--complement-crc", action="store_true", help="send complemented CRCs (Passport)"
    )
    parser.add_argument(
        "--script",
        action="append",
        choices=list(SCRIPTS),
        metavar="NAME",
        help="a sale to play (repeatable; default: all, in order)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per answer (5)")
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="speak TLS; the box's certificate must chain to this CA file and name its address",
    )
    parser.add_argument("--list", action="store_true", help="list the scripted sales")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, script in SCRIPTS.items():
            print(f"{name:22} {(script.__doc__ or '').strip().splitlines()[0]}")
        return 0
    try:
        host, port = parse_address(args.connect)
    except ValueError as exc:
        print(f"pos-sim: {exc}", file=sys.stderr)
        return 2
    try:
        tls = client_context(args.tls_ca) if args.tls_ca else None
    except OSError as exc:
        print(f"pos-sim: cannot read the CA file {args.tls_ca}: {exc.strerror}", file=sys.stderr)
        return 2
    client = PosClient(host, port, args.dialect, args.complement_crc, args.timeout, tls)
    crc = ", complemented CRC" if args.complement_crc and args.dialect == "passport" else ""
    crc += ", TLS" if tls else ""
    try:
        with client:
            client.connect()
            print(f"Connected to the box at {client.address} ({args.dialect} framing{crc})\n")
            for name in args.script or list(SCRIPTS):
                _play(client, name)
    except PosClientError as exc:
        print(f"pos-sim: {exc}", file=sys.stderr)
        return 1
    return 0


def _play(client: PosClient, name: str) -> None:
    print(f"=== {name} ===")
    before = len(client.rtts)
    result = SCRIPTS[name](client, print)
    rtts = client.rtts[before:]
    slowest = f", slowest in {max(rtts) * 1000:.0f} ms" if rtts else ""
    print(f"({len(result.responses)} answers from the box{slowest})\n")


if __name__ == "__main__":
    sys.exit(main())
