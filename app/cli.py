"""The `connectbox` command: the service and its companion tools."""

from __future__ import annotations

import argparse
import sys

from app import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connectbox", description="Connect Box loyalty host")
    parser.add_argument("--version", action="version", version=f"connectbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the box service")
    run.add_argument(
        "--config", help="TOML file (default $CONNECTBOX_CONFIG or /etc/connectbox/connectbox.toml)"
    )

    demo = commands.add_parser("demo", help="reference host + box + simulated POS on loopback")
    demo.add_argument("--once", action="store_true", help="exit after the scripted sales")
    demo.add_argument("--pos-port", type=int, default=9000)
    demo.add_argument("--status-port", type=int, default=8080)
    demo.add_argument("--host-port", type=int, default=8700)

    host = commands.add_parser("host-sim", help="run the reference central host")
    host.add_argument(
        "--listen", default="127.0.0.1:8700", help="address:port (default %(default)s)"
    )
    host.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    host.add_argument("--policy", help="policy JSON document (default: the built-in Scan Data one)")

    enroll = commands.add_parser("enroll", help="enroll this box with the provider (claim code)")
    enroll.add_argument(
        "--claim",
        help="the claim code from the box label (default: the "
        "configuration's, else /etc/connectbox/claim)",
    )
    enroll.add_argument("--config", help="the service's TOML file (host URL, data directory)")
    enroll.add_argument("--force", action="store_true", help="enroll again (a revoked token)")
    enroll.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")

    readers = commands.add_parser("readers", help="list card readers, their state and last read")
    readers.add_argument("--config", help="the service's TOML file (to find its status port)")

    # Tools with their own options, handed the rest of the command line.
    for name, summary in PASSTHROUGH_HELP.items():
        commands.add_parser(name, help=summary, add_help=False)

    args, rest = parser.parse_known_args(argv)
    if args.command in PASSTHROUGH_HELP:
        return _passthrough(args.command, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        return _run(args.config)
    if args.command in ("demo", "host-sim") and not _has_simulators():
        print(
            f"connectbox {args.command}: the simulators are not part of this (production) image",
            file=sys.stderr,
        )
        return 2
    if args.command == "demo":
        from app.demo import run_demo

        return run_demo(args.pos_port, args.status_port, args.host_port, once=args.once)
    if args.command == "host-sim":
        return _host_sim(args.listen, args.db, args.policy)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "readers":
        from app.readers_cli import list_readers_main

        return list_readers_main(args.config)
    return 2


def _has_simulators() -> bool:
    """A production image leaves out the reference host (its TEST key) and the demo."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("app.demo", "app.host.reference"))


PASSTHROUGH_HELP = {
    "pos-sim": "play scripted sales as a POS",
    "reader-sim": "a virtual serial card reader on a pseudo-terminal",
    "card": "card tools: `connectbox card decode` decodes one raw frame from stdin",
}


def _passthrough(command: str, rest: list[str]) -> int:
    if command == "pos-sim":
        from app.pos.simulator import main as tool
    elif command == "reader-sim":
        from drivers.reader_sim import main as tool
    else:
        if not rest or rest[0] != "decode":
            print(
                "usage: connectbox card decode [--today YYYY-MM-DD] [--luhn] [--lrc] "
                "[--no-require-aim] < frame",
                file=sys.stderr,
            )
            return 2
        from drivers.decoding.cli import main as tool

        rest = rest[1:]
    return tool(rest)


def _run(config_arg: str | None) -> int:
    from app.config import ConfigError, config_path, load_config
    from app.logs import setup_logging

    try:
        config = load_config(config_path(config_arg))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(config.log.level)
    from app.box import Box

    try:
        box = Box(config)
    except OSError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    box.run()
    # Non-zero on a requested restart, so systemd's Restart= policy starts the service again.
    return 75 if box.restart_requested else 0


def _enroll(args: argparse.Namespace) -> int:
    """`connectbox enroll`: the service's own enrollment, from a shell, with its config."""
    from app.config import ConfigError, config_path, load_config
    from provisioning.cli import enroll_main

    try:
        config = load_config(config_path(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    argv = ["--url", config.host.url, "--data-dir", str(config.storage.data_dir)]
    claim = args.claim or config.provisioning.claim_code
    argv += ["--claim", claim] if claim else []
    argv += ["--serial", config.provisioning.serial] if config.provisioning.serial else []
    argv += ["--ca-file", config.host.ca_file] if config.host.ca_file else []
    argv += ["--force"] if args.force else []
    argv += ["--wait", str(args.wait)] if args.wait else []
    return enroll_main(argv)


def _host_sim(listen: str, db: str, policy: str | None) -> int:
    from app.config import parse_listen
    from app.host.reference.server import serve
    from app.logs import setup_logging

    setup_logging()
    address = parse_listen(listen)
    serve(address.host, address.port, store_path=db, policy_path=policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
