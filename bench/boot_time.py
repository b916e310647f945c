#!/usr/bin/env python3
"""Boot time of the development image in QEMU: power-on to the console login and to /healthz.

Boots the built image N times with the boot tests' own machinery (tests/image/qemu.py: same
QEMU command line, TCG, one vCPU, -snapshot so every boot is a first boot) and times, from
QEMU's start:
- login:   the serial console's login prompt (agetty's "login:"; the development image logs
           root in automatically);
- shell:   the root shell prompt on the console (what `Machine.shell` waits for);
- healthz: the status page's /healthz answering 200 through QEMU's port forward.
Then min/median/max over the boots. The load average before each boot is printed with it:
TCG boots slow down a lot on a busy host, which is the point of measuring.

    sudo scripts/build-image --variant development
    .venv/bin/python bench/boot_time.py -n 5                 # as the host is
    .venv/bin/python bench/boot_time.py -n 5 --burn 2        # two CPU burners alongside
    .venv/bin/python bench/boot_time.py -n 3 --uefi          # OVMF + systemd-boot, slot A

--burn N starts N busy loops (`sh -c 'while :; do :; done'`) for the run and kills them after.
The boot tests' timeouts (tests/image/qemu.py, BOOT_TIMEOUT_S and UEFI_BOOT_TIMEOUT_S) come
from this figure's worst case on a loaded machine, with margin.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.image.qemu import (  # noqa: E402
    BOOT_TIMEOUT_S,
    LOGIN_PROMPT,
    SHELL_PROMPT,
    UEFI_BOOT_TIMEOUT_S,
    Machine,
    image_env,
    need_tools,
)

MARKS = ("login", "shell", "healthz")


def boot_once(image: dict[str, str], workdir: Path, uefi: bool, timeout: float) -> dict:
    machine = Machine(image, workdir, uefi=uefi)
    seen: dict[str, float | None] = {}

    def watch(name: str, pattern: str) -> None:
        try:
            machine.wait_console(pattern, timeout)
            seen[name] = time.monotonic() - machine.started
        except AssertionError:
            seen[name] = None

    machine.start()
    watchers = [
        threading.Thread(target=watch, args=(name, pattern), daemon=True)
        for name, pattern in (("login", LOGIN_PROMPT), ("shell", SHELL_PROMPT))
    ]
    for watcher in watchers:
        watcher.start()
    try:
        try:
            seen["healthz"] = machine.wait_healthy(timeout)
        except AssertionError:
            seen["healthz"] = None
        for watcher in watchers:  # the prompt may come after /healthz answers
            watcher.join(max(0.0, machine.started + timeout - time.monotonic()))
    finally:
        machine.stop()
    return {name: seen.get(name) for name in MARKS}


def summary(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return "no boot got there"
    text = f"min {min(done):6.1f}  median {statistics.median(done):6.1f}  max {max(done):6.1f} s"
    if len(done) < len(values):
        text += f"  ({len(values) - len(done)} of {len(values)} timed out)"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image-dir",
        default=os.environ.get("CONNECTBOX_IMAGE_DIR", str(ROOT / "build" / "image")),
        help="the development image (scripts/build-image --out; default build/image)",
    )
    parser.add_argument("-n", "--boots", type=int, default=5)
    parser.add_argument("--uefi", action="store_true", help="OVMF + systemd-boot, not -kernel")
    parser.add_argument("--burn", type=int, default=0, help="CPU burners to run alongside")
    parser.add_argument("--timeout", type=float, help="per boot (default: the tests' timeout)")
    parser.add_argument("--no-host", action="store_true", help="no reference host on 127.0.0.1")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    if need_tools():
        parser.error(f"missing {need_tools()}")
    image = image_env(Path(args.image_dir))
    if image.get("CONNECTBOX_IMAGE_VARIANT") != "development":
        parser.error("needs a development image (a production image has no console login)")
    timeout = args.timeout or (UEFI_BOOT_TIMEOUT_S if args.uefi else BOOT_TIMEOUT_S)

    host = None
    if not args.no_host:  # as in the boot tests: the box reaches its host at once
        from simulators.host.runner import start_in_thread

        try:
            host = start_in_thread("127.0.0.1", int(image["CONNECTBOX_IMAGE_HOST_PORT"]))
        except OSError as exc:
            print(f"no reference host ({exc}): the box keeps retrying it", file=sys.stderr)
    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(args.burn)]
    boots = []
    try:
        with tempfile.TemporaryDirectory(prefix="boot-time-") as tmp:
            for i in range(args.boots):
                load = os.getloadavg()
                figures = boot_once(image, Path(tmp) / str(i), args.uefi, timeout)
                figures["load"] = load
                boots.append(figures)
                shown = "  ".join(
                    f"{name} {figures[name]:6.1f} s"
                    if figures[name] is not None
                    else f"{name} >{timeout:.0f} s"
                    for name in MARKS
                )
                print(
                    f"boot {i + 1}/{args.boots}: {shown}   "
                    f"(load before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
                    flush=True,
                )
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        if host is not None:
            host.stop()

    kind = "UEFI" if args.uefi else "direct kernel"
    print(f"\n{kind} boot, {args.boots} boots, {args.burn} CPU burners, {os.cpu_count()} cores:")
    for name in MARKS:
        print(f"  power-on -> {name:8} {summary([b[name] for b in boots])}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"uefi": args.uefi, "burn": args.burn, "boots": boots}, indent=1) + "\n"
        )
    return 0 if all(b["healthz"] is not None for b in boots) else 1


if __name__ == "__main__":
    sys.exit(main())
