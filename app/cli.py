"""The `connectbox` command: the service and its companion tools."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Protocol

from app import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connectbox", description="Connect Box loyalty host")
    parser.add_argument("--version", action="version", version=f"connectbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the box service")
    run.add_argument(
        "--config", help="TOML file (default $CONNECTBOX_CONFIG or /etc/connectbox/connectbox.toml)"
    )

    enroll = commands.add_parser("enroll", help="enroll this box with the provider (claim code)")
    enroll.add_argument(
        "--claim",
        help="the claim code from the box label (default: the "
        "configuration's, else /etc/connectbox/claim)",
    )
    enroll.add_argument("--config", help="the service's TOML file (host URL, data directory)")
    enroll.add_argument("--force", action="store_true", help="enroll again (a revoked token)")
    enroll.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")

    safe = commands.add_parser(
        "safe-mode", help="keep the status page, heartbeat and commands when `run` cannot start"
    )
    safe.add_argument("--config", help="the service's TOML file (else the last one that started)")

    readers = commands.add_parser("readers", help="list card readers, their state and last read")
    readers.add_argument("--config", help="the service's TOML file (to find its status port)")

    # Tools with their own options, handed the rest of the command line: the card tool, and the
    # commands other installed distributions add (the simulators'; none in a production image).
    commands.add_parser("card", help=CARD_HELP, add_help=False)
    added = added_commands(exclude=set(commands.choices))
    for name, command in added.items():
        commands.add_parser(name, help=command.help, add_help=False)

    args, rest = parser.parse_known_args(argv)
    if args.command == "card":
        return _card(rest)
    if args.command in added:
        return added[args.command].main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        return _run(args.config)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "safe-mode":
        from app.config import config_path
        from app.logs import setup_logging
        from app.safe_mode import main as safe_mode

        setup_logging()
        return safe_mode(config_path(args.config))
    if args.command == "readers":
        from app.readers_cli import list_readers_main

        return list_readers_main(args.config)
    return 2


CARD_HELP = "card tools: `connectbox card decode` decodes one raw frame from stdin"
COMMAND_GROUP = "connectbox.commands"


class AddedCommand(Protocol):
    """What an entry point of COMMAND_GROUP names: a one-line help and a main(argv) -> int."""

    help: str

    def main(self, argv: list[str]) -> int: ...


def added_commands(exclude: set[str]) -> dict[str, AddedCommand]:
    """The commands installed distributions add through COMMAND_GROUP, by name.

    The simulators (`connectbox-simulators`: demo, host-sim, pos-sim, reader-sim) add theirs
    this way, so a production image, which does not install them, does not offer them. One
    that fails to load is left out with a note: it must not stop `connectbox run`.
    """
    found: dict[str, AddedCommand] = {}
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if entry.name in exclude or entry.name in found:
            continue
        try:
            found[entry.name] = entry.load()
        except Exception as exc:  # whatever an add-on's import raises
            print(f"connectbox: command {entry.name} left out: {exc}", file=sys.stderr)
    return found


def _card(rest: list[str]) -> int:
    if not rest or rest[0] != "decode":
        print(
            "usage: connectbox card decode [--today YYYY-MM-DD] [--luhn] [--lrc] "
            "[--no-require-aim] < frame",
            file=sys.stderr,
        )
        return 2
    from drivers.decoding.cli import main as decode

    return decode(rest[1:])


def _run(config_arg: str | None) -> int:
    from app.config import ConfigError, config_path, load_config
    from app.logs import setup_logging

    try:
        config = load_config(config_path(config_arg))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.journal_sync)
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


if __name__ == "__main__":
    sys.exit(main())
