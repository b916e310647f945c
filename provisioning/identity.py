"""Who this box is before the provider knows it: its serial number and its claim code."""

from __future__ import annotations

import sys
from pathlib import Path

# Values firmware leaves in the DMI serial when the vendor did not set one.
PLACEHOLDER_SERIALS = frozenset(
    {
        "",
        "to be filled by o.e.m.",
        "to be filled by oem",
        "default string",
        "system serial number",
        "not specified",
        "not applicable",
        "n/a",
        "none",
        "0",
        "00000000",
        "0123456789",
        "123456789",
    }
)


def _read_text(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:  # missing, or root-only (product_serial is 0400 on most kernels)
        return None


RECORDED_SERIAL = "/etc/connectbox/serial"


def device_serial(
    dmi_path: str | Path = "/sys/class/dmi/id/product_serial",
    machine_id_path: str | Path = "/etc/machine-id",
    configured: str | None = None,
    recorded_path: str | Path | None = RECORDED_SERIAL,
) -> str:
    """The serial recorded at first boot (`record_serial`) if there is one; else the DMI
    product serial unless it is empty, a firmware placeholder or unreadable; else the machine
    id; else the configured serial. ValueError when none of them is usable.

    The record matters because the DMI serial is readable by root only: the image's first-boot
    set-up (root) records it, and the service (user connectbox) reads the record."""
    if recorded_path is not None:
        recorded = _read_text(recorded_path)
        if recorded:
            return recorded.splitlines()[0].strip()
    serial = _read_text(dmi_path)
    if serial and serial.lower() not in PLACEHOLDER_SERIALS:
        return serial
    machine_id = _read_text(machine_id_path)
    if machine_id and machine_id.strip("0"):
        return machine_id
    if configured and configured.strip():
        return configured.strip()
    raise ValueError(
        f"no usable serial: {dmi_path} and {machine_id_path} are empty or unreadable and none"
        " is configured"
    )


def claim_code(
    path: str | Path = "/etc/connectbox/claim", configured: str | None = None
) -> str | None:
    """The claim code: the configured one (command line or configuration) when given, else the
    first line of `path` (written at the factory from the box label); None when there is none."""
    if configured and configured.strip():
        return configured.strip()
    text = _read_text(path)
    if not text:
        return None
    first = text.splitlines()[0].strip()
    return first or None


def record_serial(
    path: str | Path = RECORDED_SERIAL,
    dmi_path: str | Path = "/sys/class/dmi/id/product_serial",
    machine_id_path: str | Path = "/etc/machine-id",
) -> str:
    """Work the serial out (as root, who can read the DMI serial) and write it to `path`,
    atomically and world-readable; an existing record is kept. Returns the serial."""
    serial = device_serial(dmi_path, machine_id_path, recorded_path=path)
    target = Path(path)
    if _read_text(target) != serial:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(serial + "\n", encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(target)
    return serial


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m provisioning.identity", description="print this box's serial number"
    )
    parser.add_argument("--record", metavar="FILE", help="also record it in FILE (first boot)")
    args = parser.parse_args(argv)
    try:
        print(record_serial(args.record) if args.record else device_serial())
    except (OSError, ValueError) as exc:
        print(f"no serial: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
