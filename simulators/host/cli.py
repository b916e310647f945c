"""`connectbox host-sim`: the reference central host in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from app.config import parse_listen
from app.logs import setup_logging
from app.start_errors import cannot_listen
from simulators.host.runner import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="connectbox host-sim",
        description="Run the reference central host (testing). It prints the lines a box's "
        "configuration needs to use it: its demo device and its TEST signing key.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8700", help="address:port (default %(default)s)"
    )
    parser.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    parser.add_argument(
        "--policy", help="policy JSON document (default: the built-in Scan Data one)"
    )
    args = parser.parse_args(argv)
    try:
        address = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(f"--listen {exc}")
    setup_logging()
    try:
        serve(address.host, address.port, store_path=args.db, policy_path=args.policy)
    except OSError as exc:
        busy = cannot_listen("reference host", str(address), exc, "--listen")
        print(f"host-sim: {busy.advice()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
