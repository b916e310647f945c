"""`connectbox card decode [--today YYYY-MM-DD] [--luhn] [--lrc] [--no-require-aim]`.

Reads one raw frame (all bytes of standard input) and prints its verdict as one JSON object on
one line. Exit status 0 for any verdict, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date
from typing import BinaryIO, TextIO

from . import decode
from .verdict import DecodeOptions


def _day(text: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectbox card decode",
        description="Decode one raw card-reader frame from standard input; print the verdict "
        "as one JSON line.",
    )
    parser.add_argument(
        "--today", type=_day, metavar="YYYY-MM-DD", help="the date ages are computed on"
    )
    parser.add_argument("--luhn", action="store_true", help="card numbers must pass Luhn")
    parser.add_argument("--lrc", action="store_true", help="tracks carry an LRC, check it")
    parser.add_argument(
        "--no-require-aim",
        action="store_true",
        help="accept printable text without an AIM symbology identifier as the ID",
    )
    return parser


def main(
    argv: list[str] | None = None, stdin: BinaryIO | None = None, stdout: TextIO | None = None
) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # usage error (2), or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    source = stdin if stdin is not None else sys.stdin.buffer
    frame = source.read()
    if isinstance(frame, str):  # a text stream handed in by mistake
        frame = frame.encode("latin-1", errors="replace")
    options = DecodeOptions(luhn=args.luhn, lrc=args.lrc, require_aim=not args.no_require_aim)
    verdict = decode(frame, options, today=args.today)
    out = stdout if stdout is not None else sys.stdout
    out.write(json.dumps(verdict.to_json()) + "\n")
    out.flush()
    return 0
