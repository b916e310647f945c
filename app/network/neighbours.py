"""Who else is on the site network: the neighbour table, labelled with each MAC's vendor.

Passive only: the kernel's neighbour (ARP/NDP) table from `ip -j neigh`, so it shows the hosts
the box has talked to or heard from (the POS connects to the box, so it is there once it has).
Vendors come from the IEEE OUI registry as Debian's `ieee-data` package ships it; vendors that
make fuel-site POS and forecourt systems are flagged as likely POS.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from app.network.discovery import DiscoveryError, load_json, run_ip

OUI_PATH = Path("/usr/share/ieee-data/oui.txt")

# (label, pattern on the normalised vendor name, pattern that rules the vendor out)
POS_VENDORS: tuple[tuple[str, str, str | None], ...] = (
    ("Gilbarco", r"\bgilbarco\b", None),
    ("Verifone", r"\bverifone\b", None),
    ("NCR", r"\bncr\b", None),
    ("Radiant Systems (NCR)", r"\bradiant systems\b", None),
    ("Dover Fueling Solutions", r"\bdover fueling\b", None),
    ("Wayne", r"\bdresser wayne\b|\bwayne fueling\b", None),
    ("Tokheim", r"\btokheim\b", None),
    ("HP", r"\bhewlett packard\b|\bhp inc\b", r"\benterprise\b|\baruba\b"),
    ("Toshiba Global Commerce", r"\btoshiba (global commerce|tec)\b", None),
    ("Diebold Nixdorf", r"\bwincor nixdorf\b|\bdiebold\b", None),
    ("Posiflex", r"\bposiflex\b", None),
    ("PAR Technology", r"\bpar technology\b", None),
    ("Ingenico", r"\bingenico\b", None),
    ("PAX", r"\bpax (computer )?technology\b", None),
    ("Hypercom", r"\bhypercom\b", None),
    ("Elo Touch", r"\belo touch\b", None),
)
_COMPILED = [
    (label, re.compile(match), re.compile(exclude) if exclude else None)
    for label, match, exclude in POS_VENDORS
]
_BASE16 = re.compile(r"^\s*([0-9A-Fa-f]{6})\s+\(base 16\)\s*(.*)$")

_cache_lock = threading.Lock()
# Per registry file version: OUI -> organisation ("" when not registered). Only the OUIs seen on
# the site are kept: the whole registry would be ~5 MB of Python objects in a small box.
_cache: dict[tuple[str, float, int], dict[str, str]] = {}


def parse_oui(text: str) -> dict[str, str]:
    """OUI (6 upper-case hex digits) → organisation, from the registry's "(base 16)" lines."""
    table = {}
    for line in text.splitlines():
        found = _BASE16.match(line)
        if found:
            table[found.group(1).upper()] = found.group(2).strip()
    return table


def load_oui(path: Path | str = OUI_PATH, wanted: set[str] | None = None) -> dict[str, str]:
    """Organisations of the `wanted` OUIs (6 upper-case hex digits; None: the whole registry),
    read from the registry at `path` and cached until the file changes."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return {}
    if wanted is None:
        return parse_oui(path.read_text(encoding="utf-8", errors="replace"))
    key = (str(path), stat.st_mtime, stat.st_size)
    with _cache_lock:
        known = _cache.setdefault(key, {})
        for old in [k for k in _cache if k[0] == key[0] and k != key]:
            del _cache[old]
        missing = wanted - known.keys()
        if missing:
            known.update(dict.fromkeys(missing, ""))
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:  # one streaming pass for everything not yet known
                    found = _BASE16.match(line)
                    if found and found.group(1).upper() in missing:
                        known[found.group(1).upper()] = found.group(2).strip()
        return {oui: known[oui] for oui in wanted if known[oui]}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def pos_vendor(vendor: str | None) -> str | None:
    """The POS maker's label when `vendor` is one, else None (case-insensitive)."""
    if not vendor:
        return None
    name = _normalise(vendor)
    for label, match, exclude in _COMPILED:
        if match.search(name) and not (exclude and exclude.search(name)):
            return label
    return None


def vendor_of(mac: str, table: dict[str, str]) -> str | None:
    digits = re.sub(r"[^0-9A-Fa-f]", "", mac).upper()
    if len(digits) < 6:
        return None
    if int(digits[0:2], 16) & 0x02:
        return "(locally administered address)"
    return table.get(digits[:6])


def parse_neighbours(neigh_json: Any) -> list[dict[str, Any]]:
    """Entries of `ip -j neigh` that have a MAC: address, MAC, state, interface."""
    entries = []
    for entry in load_json(neigh_json):
        mac = entry.get("lladdr")
        if not mac or not entry.get("dst"):
            continue
        states = [str(s).upper() for s in entry.get("state") or []]
        if "FAILED" in states or "INCOMPLETE" in states:
            continue
        entries.append(
            {
                "address": str(entry["dst"]),
                "mac": str(mac).lower(),
                "state": states[0] if states else "",
                "interface": entry.get("dev"),
            }
        )
    return entries


def label(entries: list[dict[str, Any]], table: dict[str, str]) -> list[dict[str, Any]]:
    """Add `vendor`, `pos_vendor` and `likely_pos`; likely POS first."""
    labelled = []
    for entry in entries:
        vendor = vendor_of(entry["mac"], table)
        maker = pos_vendor(vendor)
        labelled.append({**entry, "vendor": vendor, "pos_vendor": maker, "likely_pos": bool(maker)})
    labelled.sort(key=lambda e: (not e["likely_pos"], e["interface"] or "", e["address"]))
    return labelled


def pos_candidates(oui_path: Path | str = OUI_PATH, neigh_json: Any = None) -> list[dict[str, Any]]:
    """The neighbour table labelled with vendors (`neigh_json`: captured `ip -j neigh`, else
    the command runs). A missing OUI file leaves every vendor unknown; it is not an error."""
    if neigh_json is None:
        try:
            neigh_json = run_ip("neigh", "show")
        except (DiscoveryError, ValueError):
            neigh_json = []
    entries = parse_neighbours(neigh_json)
    ouis = {re.sub(r"[^0-9A-Fa-f]", "", e["mac"]).upper()[:6] for e in entries}
    return label(entries, load_oui(oui_path, ouis))
