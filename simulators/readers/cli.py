"""``connectbox reader-sim``: a virtual serial card reader for demos and technicians.

Makes a :class:`~simulators.readers.virtual.VirtualSerialReader` at ``--link`` (default
``/tmp/connectbox-reader-sim``), prints that path on standard output (configure it as a serial
reader's device), then "swipes" every line read from standard input with a CR appended. With
``--escapes`` a line may hold backslash escapes (``\\x02``, ``\\x1d``, ``\\r``...). With
``--track2 ID`` it waits for the box to open the port, swipes one track-2 loyalty card and
exits. Either way it keeps the port ``--hold`` seconds after the last swipe: closing a pty
discards what the other side has not read yet.

Exit status: 0 done, 1 no reader opened the port in time (``--track2``), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

from simulators.readers.virtual import MAGTEK_BANNER, VirtualSerialReader, track2_swipe

DEFAULT_LINK = "/tmp/connectbox-reader-sim"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectbox reader-sim",
        description="A virtual serial card reader (a pseudo-terminal) for the demo and tests.",
    )
    parser.add_argument(
        "--link",
        default=DEFAULT_LINK,
        help=f"the reader's stable path, a symlink to the pty (default {DEFAULT_LINK})",
    )
    parser.add_argument(
        "--track2",
        metavar="ID",
        help="swipe one track-2 card with this loyalty ID (1-19 digits), then exit",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="keep the port this long after the last swipe, so the box reads it before the"
        " port goes away (default 2)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --track2: how long to wait for the box to open the port (default 30)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="pause between the port opening and the swipe, beyond the box's banner window"
        " (default 1)",
    )
    parser.add_argument(
        "--banner",
        action="store_true",
        help="send a MagTek sign-on banner 150 ms after the port opens, like a real reader",
    )
    parser.add_argument(
        "--escapes",
        action="store_true",
        help="interpret backslash escapes in input lines (\\x02, \\x1d, \\t, ...)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    card = None
    if args.track2 is not None:
        try:
            card = track2_swipe(args.track2)
        except ValueError as exc:
            print(f"connectbox reader-sim: --track2: {exc}", file=sys.stderr)
            return 2
    if args.hold < 0 or args.wait < 0 or args.settle < 0:
        print("connectbox reader-sim: durations must not be negative", file=sys.stderr)
        return 2
    try:
        reader = VirtualSerialReader(args.link)
    except OSError as exc:
        print(f"connectbox reader-sim: cannot create {args.link}: {exc}", file=sys.stderr)
        return 2
    try:
        print(reader.path, flush=True)
        if card is not None:
            return _swipe_once(reader, card, args)
        return _interactive(reader, args)
    except KeyboardInterrupt:
        return 130
    finally:
        reader.close()


def _wait_and_banner(reader: VirtualSerialReader, args: argparse.Namespace, wait: float) -> bool:
    if not reader.wait_for_open(wait):
        return False
    if args.banner:
        reader.send_banner(MAGTEK_BANNER, delay_s=0.15)
    time.sleep(args.settle)
    return True


def _swipe_once(reader: VirtualSerialReader, card: bytes, args: argparse.Namespace) -> int:
    _note(f"waiting up to {args.wait:g} s for a reader to open {reader.path}")
    if not _wait_and_banner(reader, args, args.wait):
        _note("no reader opened the port: is the box running with this device configured?")
        return 1
    reader.swipe(card)
    _note(f"swiped track 2 ({len(card)} bytes); holding the port {args.hold:g} s")
    time.sleep(args.hold)
    return 0


def _interactive(reader: VirtualSerialReader, args: argparse.Namespace) -> int:
    _note("type a line to swipe it (a CR is appended); end with Ctrl-D")
    if args.banner:
        threading.Thread(target=_banner_on_open, args=(reader, args), daemon=True).start()
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if not text:
            continue
        raw = text.encode("latin-1", "replace")
        if args.escapes:
            try:
                raw = raw.decode("unicode_escape").encode("latin-1")
            except (UnicodeError, ValueError) as exc:
                _note(f"bad escape, not sent: {exc}")
                continue
        if not reader.is_open():
            _note("no reader has the port open: this swipe will be lost")
        reader.swipe(raw + b"\r")
        _note(f"swiped {len(raw) + 1} bytes")
    time.sleep(args.hold)  # closing the pty at once would flush what the box has not read yet
    return 0


def _banner_on_open(reader: VirtualSerialReader, args: argparse.Namespace) -> None:
    """Send the banner each time a reader opens the port (as a port-powered MagTek does)."""
    try:
        while reader.plugged:
            if reader.wait_for_open(1.0):
                reader.send_banner(MAGTEK_BANNER, delay_s=0.15)
                while reader.plugged and reader.is_open():
                    time.sleep(0.1)
    except OSError:
        pass  # unplugged while sending: the program is ending


def _note(text: str) -> None:
    print(f"reader-sim: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
