"""`connectbox enroll`: enroll this box with the provider from the command line.

The app's CLI maps its configuration to these options (`--url` the host, `--data-dir` where the
credentials are kept); a technician types the claim code from the box label:

    connectbox enroll --claim ABCD-1234

Exit status 0 when the box is enrolled (or already was), 1 when the claim code was refused or
the host could not be reached, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from provisioning.api import HostError
from provisioning.enrollment import ClaimRejected, Enroller
from provisioning.identity import claim_code, device_serial
from provisioning.store import CREDENTIALS_FILE, Credentials, CredentialStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectbox enroll",
        description="Enroll this box with the provider's host using the claim code on its label.",
    )
    parser.add_argument("--url", required=True, help="the provider's host, e.g. https://...")
    parser.add_argument("--data-dir", required=True, type=Path, help="the box's state directory")
    parser.add_argument("--claim", help="claim code (default: the one in --claim-file)")
    parser.add_argument("--claim-file", default="/etc/connectbox/claim", help=argparse.SUPPRESS)
    parser.add_argument("--serial", help="serial to use when the hardware has none")
    parser.add_argument("--ca-file", help="CA bundle for the host's certificate")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying this long while the host cannot be reached (default: one attempt)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="enroll again even if the box already has credentials (after a revoked token)",
    )
    return parser


def enroll_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = CredentialStore(args.data_dir / CREDENTIALS_FILE)
    try:
        existing = store.load()
    except ValueError as exc:
        print(f"The stored credentials are damaged ({exc}); use --force to enroll again.")
        return 1
    if existing is not None and not args.force:
        print(
            f"Already enrolled as device {existing.device_id} at site {existing.site_id}"
            f" (credentials in {store.path}). Use --force to enroll again."
        )
        return 0
    code = claim_code(args.claim_file, args.claim)
    if not code:
        print("No claim code: pass --claim with the code printed on the box label.")
        return 1
    try:
        serial = device_serial(configured=args.serial)
        enroller = Enroller(
            args.url, store, serial, code, timeout_s=args.timeout, ca_file=args.ca_file
        )
    except ValueError as exc:
        print(f"Cannot enroll: {exc}")
        return 2
    try:
        creds = _enroll_waiting(enroller, args.wait) if args.wait > 0 else enroller.enroll_once()
    except ClaimRejected as exc:
        print(f"Enrollment refused: {exc}.")
        return 1
    except HostError as exc:
        print(f"Enrollment failed: {exc}. Check the network and the host address, then retry.")
        return 1
    print(
        f"Enrolled: this box is device {creds.device_id} at site {creds.site_id}."
        f" Credentials saved in {store.path}."
    )
    return 0


def _enroll_waiting(enroller: Enroller, seconds: float) -> Credentials:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    try:
        creds = enroller.run(stop, reenroll=True)  # stored ones were handled by the caller
    finally:
        timer.cancel()
    if creds is not None:
        return creds
    if enroller.state == "claim_rejected":
        raise ClaimRejected(enroller.last_error or "claim code refused", 403)
    raise HostError(enroller.last_error or f"no enrollment within {seconds:g} s")


if __name__ == "__main__":
    sys.exit(enroll_main())
