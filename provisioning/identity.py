"""Who this box is before the provider knows it: its serial number and its claim code."""

from __future__ import annotations

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


def device_serial(
    dmi_path: str | Path = "/sys/class/dmi/id/product_serial",
    machine_id_path: str | Path = "/etc/machine-id",
    configured: str | None = None,
) -> str:
    """The DMI product serial unless it is empty, a firmware placeholder or unreadable; else
    the machine id; else the configured serial. ValueError when none of them is usable."""
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
