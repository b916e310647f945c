"""The `connectbox` command: the service and its companion tools."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from app import __version__

if TYPE_CHECKING:
    from app.config import Config


CONFIG_HELP = "TOML file (default $CONNECTBOX_CONFIG, else /etc/connectbox/connectbox.toml)"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, AddedCommand | None]]:
    """The `connectbox` parser, and every command by name: the one an installed distribution
    adds, or None for the box's own."""
    parser = argparse.ArgumentParser(prog="connectbox", description="Connect Box loyalty host")
    parser.add_argument("--version", action="version", version=f"connectbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the box service",
        description="Run the box service until SIGTERM or Ctrl-C.",
        epilog="No configuration yet? connectbox config example prints a commented one; "
        "docs/configuration.md describes every setting.",
    )
    run.add_argument("--config", metavar="PATH", help=CONFIG_HELP)

    config = commands.add_parser(
        "config",
        help="print a commented example configuration, or check one",
        description="The configuration file: an example written from the declarations the "
        "service checks it with, or a check of a file with the settings in effect.",
    )
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "example",
        help="print a commented example (every key, its default and meaning)",
        description="Print a commented example configuration: every key with its default and "
        "meaning. Start from it: connectbox config example > connectbox.toml",
    )
    check = actions.add_parser(
        "check",
        help="check a file; print the settings in effect (secrets masked)",
        description="Check a configuration file as connectbox run does, then print the "
        "settings in effect, defaults included (token, PIN and claim code masked).",
    )
    check.add_argument("path", nargs="?", metavar="PATH", help=CONFIG_HELP)

    enroll = commands.add_parser("enroll", help="enroll this box with the provider (claim code)")
    enroll.add_argument(
        "--claim",
        help="the claim code from the box label (default: the "
        "configuration's, else /etc/connectbox/claim)",
    )
    enroll.add_argument(
        "--config", metavar="PATH", help="the service's TOML file (host URL, data directory)"
    )
    enroll.add_argument("--force", action="store_true", help="enroll again (a revoked token)")
    enroll.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")

    safe = commands.add_parser(
        "safe-mode", help="keep the status page, heartbeat and commands when `run` cannot start"
    )
    safe.add_argument("--config", help="the service's TOML file (else the last one that started)")

    readers = commands.add_parser("readers", help="list card readers, their state and last read")
    readers.add_argument(
        "--config", metavar="PATH", help="the service's TOML file (to find its status port)"
    )

    from app.network_cli import add_parser as add_network

    add_network(commands)

    # Tools with their own options, handed the rest of the command line: the card decoder, and
    # the commands other installed distributions add (the simulators'; none in a production
    # image).
    card = commands.add_parser("card", help=CARD_HELP, description=CARD_HELP, usage=CARD_USAGE)
    card_actions = card.add_subparsers(dest="action", required=True, metavar="ACTION")
    card_actions.add_parser("decode", help=DECODE_HELP, add_help=False)
    added = added_commands(exclude=set(commands.choices))
    for name, command in added.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser, {name: added.get(name) for name in commands.choices}


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "card":
        from drivers.decoding.cli import main as decode

        return decode(rest)
    added = commands.get(args.command)
    if added is not None:
        return added.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        return _run(args.config)
    if args.command == "config":
        return _config(args.action, getattr(args, "path", None))
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
    if args.command == "network":
        from app.network_cli import network_main

        config = _load(args.config)
        return 2 if config is None else network_main(args, config)
    return 2


CARD_HELP = "card tools: decode one raw card-reader frame (connectbox card decode --help)"
DECODE_HELP = "decode one raw reader frame from stdin into a JSON verdict"
CARD_USAGE = (
    "connectbox card decode [--today YYYY-MM-DD] [--luhn] [--lrc] [--no-require-aim] < frame"
)
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


def _load(config_arg: str | None) -> Config | None:
    """The configuration `run` would use; None (the error said on stderr) when it is bad."""
    from app.config import ConfigError, config_path, load_config

    try:
        return load_config(config_path(config_arg))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _run(config_arg: str | None) -> int:
    from app.logs import setup_logging

    config = _load(config_arg)
    if config is None:
        return 2
    setup_logging(config.log.level, config.log.journal_sync)
    from app.box import Box
    from app.start_errors import StartError

    try:
        box = Box(config)
    except StartError as exc:
        print(f"cannot start: {exc.advice(f'{exc.key} in {config.source}')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    box.run()
    # Non-zero on a requested restart, so systemd's Restart= policy starts the service again.
    return 75 if box.restart_requested else 0


def _config(action: str, path: str | None) -> int:
    from app.config_doc import effective, example

    if action == "example":
        print(example(), end="")
        return 0
    config = _load(path)
    if config is None:
        return 2
    print(effective(config), end="")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    """`connectbox enroll`: the service's own enrollment, from a shell, with its config."""
    from provisioning.cli import enroll_main

    config = _load(args.config)
    if config is None:
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
