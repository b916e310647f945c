#!/usr/bin/env python3
"""Card read latency: from a frame's last byte on a serial reader to the pending ID being ready.

A real pseudo-terminal (a virtual serial reader), the real SerialReader, the decoders and the
register binding, as in the box. Frames end with CR, so no idle gap is waited for (the
terminator case); the partial-frame case waits the idle gap by design and is printed apart.
Target (issue 4): under 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.readers import ReaderBinding, ReaderService  # noqa: E402
from simulators.readers.virtual import VirtualSerialReader  # noqa: E402

SWIPE = b"%B6000001234567894^LOYAL/JANE^2912101000000000?;6000001234567894=2912101000?\r"
BARCODE = b"]C0LOY-AB12CD34\r"


def measure(service: ReaderService, reader: VirtualSerialReader, frame: bytes, n: int) -> list:
    samples = []
    for _ in range(n):
        reader.swipe(frame)
        written = time.perf_counter()
        if not service.pending.wait("1", timeout=5):
            raise SystemExit("bench: a read never arrived")
        samples.append(time.perf_counter() - written)
        service.pending.take_id("1")
        time.sleep(0.02)  # readers do not swipe back to back
    return samples


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    pick = lambda p: ordered[round((len(ordered) - 1) * p / 100)] * 1000  # noqa: E731
    print(
        f"{name:<32} n={len(samples)}  p50 {pick(50):.2f} ms  p99 {pick(99):.2f} ms  "
        f"max {ordered[-1] * 1000:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reader = VirtualSerialReader(directory=tmp)
        service = ReaderService([ReaderBinding("1", path=reader.path)], discover=False)
        service.start()
        try:
            deadline = time.monotonic() + 5
            while service.states[reader.path].state != "connected":
                if time.monotonic() > deadline:
                    raise SystemExit("bench: reader did not connect")
                time.sleep(0.01)
            time.sleep(0.6)  # past the sign-on banner window
            report("magstripe swipe, CR-terminated", measure(service, reader, SWIPE, args.n))
            report("barcode, CR-terminated", measure(service, reader, BARCODE, args.n))
            report(
                "swipe without terminator (gap)",
                measure(service, reader, SWIPE.rstrip(b"\r"), max(20, args.n // 10)),
            )
        finally:
            service.stop()
            reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
