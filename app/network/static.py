"""A fixed IPv4 address for the box (or DHCP), applied through systemd-networkd.

One file for both sides, standard library only: the image installs it as the privileged helper
(`/usr/lib/connectbox/network_apply.py`, run by the system's Python as root), so the service and
the helper check a setting by the same rules.

- The service (unprivileged) and `connectbox network` check a setting and write it as a request
  into the data directory (`network-request.json`, on the data partition), then read what the
  helper did. They never touch networkd: the service has no capability to.
- The helper (connectbox-network.service: started by a path unit when the request changes, and
  once at boot) checks the request again (it trusts nothing the service wrote), writes
  `static.network` into its own directory on the data partition (/etc/connectbox/network), which
  the read-only root's /etc/systemd/network/10-connectbox-static.network links to (for DHCP the
  file is empty, which networkd skips: 20-wired.network applies), reloads networkd, keeps the new
  setting only if it works within TRIAL_S (the address is up, the gateway answers ARP); otherwise
  it puts the previous one back. What it did goes into `state.json` there.
- Outside the image (no helper installed) a request is checked and stored, and says it was not
  applied.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, Protocol

REQUEST_FILE = "network-request.json"  # in the service's data directory
STATE_DIR = Path("/etc/connectbox/network")  # the helper's (root's), on the data partition
NETWORK_FILE = "static.network"
STATE_FILE = "state.json"
HELPER = Path("/usr/lib/connectbox/network_apply.py")  # installed by the image build only
TRIAL_S = 45.0  # a new setting must work this soon (DHCP, duplicate-address probes, ARP)
MAX_REQUEST_BYTES = 16 * 1024
MAX_DNS = 3  # what resolv.conf takes
WIRED = ("en", "eth")  # the interface names 20-wired.network matches


class BadSetting(ValueError):
    """Why a setting is refused; `part` names the field at fault (address, gateway, dns)."""

    def __init__(self, why: str, part: str = "") -> None:
        super().__init__(f"{part}: {why}" if part else why)
        self.why = why
        self.part = part


@dataclass(frozen=True)
class Ipv4Setting:
    """DHCP (no address), or a fixed address with its gateway and DNS servers."""

    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()

    @property
    def mode(self) -> str:
        return "static" if self.address else "dhcp"

    def to_json(self) -> str | dict[str, Any]:
        if self.address is None:
            return "dhcp"
        return {
            "address": str(self.address),
            "gateway": str(self.gateway),
            "dns": [str(d) for d in self.dns],
        }

    def describe(self) -> str:
        if self.address is None:
            return "DHCP"
        dns = ", ".join(str(d) for d in self.dns)
        return f"fixed address {self.address}, gateway {self.gateway}, DNS {dns}"


DHCP = Ipv4Setting()


def parse_setting(raw: Any) -> Ipv4Setting:
    """`"dhcp"`, or `{"address": "A/P", "gateway": "G", "dns": ["D", ...]}`; else BadSetting."""
    if raw == "dhcp":
        return DHCP
    if not isinstance(raw, dict):
        raise BadSetting('must be "dhcp" or a table of address, gateway and dns')
    unknown = sorted(set(raw) - {"address", "gateway", "dns"})
    if unknown:
        raise BadSetting(f"unknown field {unknown[0]!r} (use address, gateway, dns)")
    address = _address(raw.get("address"))
    return Ipv4Setting(address, _gateway(raw.get("gateway"), address), _dns(raw.get("dns")))


def _ip(text: Any, part: str) -> IPv4Address:
    try:
        if not isinstance(text, str):
            raise ValueError
        return IPv4Address(text.strip())
    except ValueError:
        raise BadSetting(f"must be an IPv4 address like 192.168.1.1 (got {text!r})", part) from None


def _unusable(ip: IPv4Address) -> bool:
    return (
        ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _address(text: Any) -> IPv4Interface:
    part = "address"
    if not isinstance(text, str) or "/" not in text:
        raise BadSetting(f"must be address/prefix like 192.168.1.50/24 (got {text!r})", part)
    ip_text, _, prefix = text.strip().partition("/")
    ip = _ip(ip_text, part)
    if not prefix.isdigit() or not 8 <= int(prefix) <= 30:
        raise BadSetting(f"the prefix must be a number from 8 to 30 (got {prefix!r})", part)
    address = IPv4Interface(f"{ip}/{prefix}")
    network = address.network
    if _unusable(ip):
        raise BadSetting(f"{ip} cannot be a box's address on the site network", part)
    if ip in (network.network_address, network.broadcast_address):
        raise BadSetting(f"{ip} is the network's own or broadcast address in {network}", part)
    return address


def _gateway(text: Any, address: IPv4Interface) -> IPv4Address:
    part = "gateway"
    if text is None:
        raise BadSetting("missing: the site router's address", part)
    gateway = _ip(text, part)
    network = address.network
    if gateway not in network or gateway in (network.network_address, network.broadcast_address):
        raise BadSetting(f"{gateway} is not an address in the box's network {network}", part)
    if gateway == address.ip:
        raise BadSetting("is the box's own address", part)
    return gateway


def _dns(raw: Any) -> tuple[IPv4Address, ...]:
    part = "dns"
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_DNS:
        raise BadSetting(f"give 1 to {MAX_DNS} DNS server addresses (got {raw!r})", part)
    servers = tuple(_ip(item, part) for item in items)
    for server in servers:
        if _unusable(server):
            raise BadSetting(f"{server} cannot be a DNS server on the site network", part)
    return tuple(dict.fromkeys(servers))


def network_file(setting: Ipv4Setting) -> str:
    """The .network file of a fixed address (DHCP needs none: 20-wired.network applies).

    IPv6 configures itself as before. Duplicate address detection: an address another device
    holds (the POS's!) is never taken, so the trial fails and the previous setting returns."""
    assert setting.address is not None
    return "\n".join(
        [
            "# Written by the Connect Box network helper (connectbox network, the status page or",
            "# the provider's config). Remove it for DHCP: `connectbox network dhcp`.",
            "[Match]",
            "Name=" + " ".join(f"{prefix}*" for prefix in WIRED),
            "",
            "[Network]",
            f"Gateway={setting.gateway}",
            *(f"DNS={server}" for server in setting.dns),
            "DHCP=ipv6",
            "LinkLocalAddressing=ipv6",
            "IPv6AcceptRA=yes",
            "",
            "[Address]",
            f"Address={setting.address}",
            "DuplicateAddressDetection=ipv4",
            "",
        ]
    )


# ---- files shared by both sides -----------------------------------------------------------


def _read_json(path: Path, limit: int = MAX_REQUEST_BYTES) -> Any:
    """The JSON in `path`, or None when it is missing, not a plain file, too big or not JSON.

    O_NOFOLLOW: the helper runs as root and reads a file the service may have replaced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        try:
            return json.loads(handle.read(limit))
        except ValueError:
            return None


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write a new file beside `path` (O_EXCL: never through a link), fsync, rename over it.

    Like provisioning/store.py's, which this file cannot import: it runs alone, as root."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class State:
    """What the helper has in force (state.json), and what it last did."""

    setting: Ipv4Setting = DHCP
    source: str = ""
    applied_at: float | None = None
    handled: str = ""  # the id of the last request it finished with
    previous: Ipv4Setting = DHCP
    trial: str = ""  # the id of a request whose trial is not finished (a power cut mid-trial)
    result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        raw = _read_json(path)
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(
                setting=parse_setting(raw.get("setting", "dhcp")),
                source=str(raw.get("source", "")),
                applied_at=raw.get("applied_at"),
                handled=str(raw.get("handled", "")),
                previous=parse_setting(raw.get("previous", "dhcp")),
                trial=str(raw.get("trial", "")),
                result=dict(raw.get("result") or {}),
            )
        except (BadSetting, TypeError, ValueError):
            return cls()

    def save(self, path: Path) -> None:
        _write_json(
            path,
            {
                "format": 1,
                "setting": self.setting.to_json(),
                "source": self.source,
                "applied_at": self.applied_at,
                "handled": self.handled,
                "previous": self.previous.to_json(),
                "trial": self.trial,
                "result": self.result,
            },
        )


# ---- the service's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    ok: bool
    message: str
    request_id: str = ""


class FixedAddress:
    """The service's and the command's side: requests a setting, reads what the helper did."""

    def __init__(self, data_dir: Path, state_dir: Path = STATE_DIR, helper: Path = HELPER) -> None:
        self.request_path = Path(data_dir) / REQUEST_FILE
        self.state_path = Path(state_dir) / STATE_FILE
        self.helper = helper
        self._lock = threading.Lock()

    @property
    def managed(self) -> bool:
        """On the image: the helper is installed, so a request is applied."""
        return self.helper.is_file()

    def request(self, setting: Ipv4Setting, source: str) -> Requested:
        with self._lock:
            seen = self._request().get("seen") or {}
            return self._write(setting, source, seen)

    def configured(self, source: str, setting: Ipv4Setting) -> Requested | None:
        """A setting from the configuration (`file`, `provider`): requested only when it differs
        from what that source said last time, so the latest change wins, the technician's
        included, and a config sent again at every start does not undo it."""
        with self._lock:
            seen = self._request().get("seen") or {}
            if isinstance(seen, dict) and seen.get(source) == setting.to_json():
                return None
            return self._write(setting, source, {**seen, source: setting.to_json()})

    def _write(self, setting: Ipv4Setting, source: str, seen: Any) -> Requested:
        request_id = uuid.uuid4().hex
        body = {
            "format": 1,
            "id": request_id,
            "setting": setting.to_json(),
            "source": source,
            "at": time.time(),
            "seen": seen if isinstance(seen, dict) else {},
        }
        try:
            self.request_path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(self.request_path, body)
        except OSError as exc:
            return Requested(False, f"Not saved: cannot write {self.request_path}: {exc}")
        said = setting.describe()
        said = said[:1].upper() + said[1:]
        if not self.managed:
            return Requested(
                True,
                f"{said} saved, not applied: this machine is not a Connect Box "
                "image (no network helper), so its network is left alone.",
                request_id,
            )
        after = f" The page is then at http://{setting.address.ip}/." if setting.address else ""
        return Requested(
            True,
            f"{said} requested. The box applies it now and keeps it only if it "
            f"works within {TRIAL_S:.0f} s (its gateway answers); otherwise it goes back to the "
            f"previous setting.{after}",
            request_id,
        )

    def _request(self) -> dict[str, Any]:
        raw = _read_json(self.request_path)
        return raw if isinstance(raw, dict) else {}

    def outcome(self, request_id: str) -> Requested | None:
        """What became of a request: None while the helper is at it."""
        if not self.managed:
            return Requested(True, "not applied (no network helper)", request_id)
        state = State.load(self.state_path)
        if state.handled == request_id and not state.trial:
            return Requested(bool(state.result.get("ok")), str(state.result.get("message")))
        if self._request().get("id") != request_id:
            return Requested(False, "superseded by a newer request", request_id)
        return None

    def snapshot(self) -> dict[str, Any]:
        request = self._request()
        pending_id = str(request.get("id") or "")
        try:
            requested = parse_setting(request.get("setting", "dhcp"))
        except BadSetting:
            requested = DHCP
        if not self.managed:
            return {
                "managed": False,
                **_shown(requested),
                "source": request.get("source"),
                "at": request.get("at"),
                "pending": False,
                "result": None,
            }
        state = State.load(self.state_path)
        return {
            "managed": True,
            **_shown(state.setting),
            "source": state.source or None,
            "at": state.applied_at,
            "pending": bool(pending_id) and (pending_id != state.handled or bool(state.trial)),
            "result": state.result or None,
        }


def _shown(setting: Ipv4Setting) -> dict[str, Any]:
    return {
        "mode": setting.mode,
        "address": str(setting.address) if setting.address else None,
        "gateway": str(setting.gateway) if setting.gateway else None,
        "dns": [str(d) for d in setting.dns],
    }


# ---- the helper's side (root) -------------------------------------------------------------


class System(Protocol):
    """What the helper does to the machine (networkd and the kernel); tests give a fake."""

    def reload(self) -> None: ...

    def works(self, setting: Ipv4Setting, timeout_s: float) -> str | None:
        """None once `setting` works (within `timeout_s`), else why it does not."""
        ...


class Helper:
    def __init__(self, request_path: Path, state_dir: Path, system: System) -> None:
        self.request_path = request_path
        self.state_dir = state_dir
        self.network_path = state_dir / NETWORK_FILE
        self.state_path = state_dir / STATE_FILE
        self.system = system

    def run(self, trial_s: float = TRIAL_S) -> State:
        """Finish a trial a power cut interrupted, then handle requests until none is new."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = State.load(self.state_path)
        if state.trial:
            self._settle(state, state.trial, trial_s)
        while True:
            raw = _read_json(self.request_path)
            request_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
            if not request_id or request_id == state.handled:
                return state
            assert isinstance(raw, dict)
            self._handle(state, raw, request_id, trial_s)

    def _handle(self, state: State, raw: dict[str, Any], request_id: str, trial_s: float) -> None:
        source = str(raw.get("source", ""))[:40]
        try:
            setting = parse_setting(raw.get("setting"))
        except BadSetting as exc:
            self._done(state, request_id, False, f"refused: {exc}; the setting in force stays")
            return
        if setting == state.setting:
            state.source = source
            self._done(state, request_id, True, f"{setting.describe()} already in force")
            return
        state.previous, state.setting, state.source = state.setting, setting, source
        state.applied_at, state.trial = time.time(), request_id
        self._write_network(setting)
        state.save(self.state_path)  # before networkd sees it: a power cut is settled at boot
        log(f"applying {setting.describe()} ({source}); previous: {state.previous.describe()}")
        self.system.reload()
        self._settle(state, request_id, trial_s)

    def _settle(self, state: State, request_id: str, trial_s: float) -> None:
        """Keep the setting on trial if it works, else put the previous one back."""
        why = self.system.works(state.setting, trial_s)
        if why is None:
            self._done(state, request_id, True, f"{state.setting.describe()} in force")
            return
        tried, state.setting = state.setting, state.previous
        state.applied_at = time.time()
        self._write_network(state.setting)
        self.system.reload()
        self._done(
            state,
            request_id,
            False,
            f"{tried.describe()} not kept: {why}; back to {state.setting.describe()}",
        )

    def _write_network(self, setting: Ipv4Setting) -> None:
        # DHCP: an empty file, which networkd skips quietly (a missing one it warns about).
        write_atomically(self.network_path, network_file(setting) if setting.address else "")

    def _done(self, state: State, request_id: str, ok: bool, message: str) -> None:
        state.handled, state.trial = request_id, ""
        state.result = {"ok": ok, "message": message, "at": time.time(), "request_id": request_id}
        state.save(self.state_path)
        log(message)


def log(message: str) -> None:
    print(f"connectbox-network: {message}", file=sys.stderr, flush=True)


# Neighbour states in which the gateway has answered ARP.
ANSWERED = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"}


class Networkd:
    """The real machine: networkctl and iproute2 (as root)."""

    def reload(self) -> None:
        self._run("networkctl", "reload")
        for link in self._ip("link", "show"):
            name = str(link.get("ifname", ""))
            if name.startswith(WIRED):
                self._run("networkctl", "reconfigure", name)

    def works(self, setting: Ipv4Setting, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        flushed: set[str] = set()
        while True:
            why, gateway = self._check(setting)
            if gateway is not None:
                if gateway not in flushed:  # an answer from before this setting does not count
                    flushed.add(gateway)
                    self._run("ip", "neigh", "flush", "to", gateway, check=False)
                why = self._probe(gateway)
            if why is None or time.monotonic() >= deadline:
                return why
            time.sleep(1.0)

    def _check(self, setting: Ipv4Setting) -> tuple[str | None, str | None]:
        """(why not yet, the gateway to probe)."""
        addresses = [
            (info.get("local"), info.get("prefixlen"), bool(info.get("dynamic")))
            for link in self._ip("-4", "addr", "show")
            if str(link.get("ifname", "")).startswith(WIRED)
            for info in link.get("addr_info", [])
            if info.get("scope") == "global"
        ]
        if setting.address is not None:
            wanted = (str(setting.address.ip), setting.address.network.prefixlen, False)
            if wanted not in addresses:
                return f"{setting.address} is not up (another device may hold it)", None
        elif not any(dynamic for *_, dynamic in addresses):
            return "no address from DHCP", None
        gateways = [
            str(r["gateway"]) for r in self._ip("-4", "route", "show", "default") if "gateway" in r
        ]
        gateway = str(setting.gateway) if setting.gateway else (gateways[0] if gateways else None)
        if gateway is None or gateway not in gateways:
            return "no default route", None
        return None, gateway

    def _probe(self, gateway: str) -> str | None:
        """One datagram to the gateway makes the kernel ask for its link address (ARP)."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"", (gateway, 9))
        for entry in self._ip("neigh", "show", "to", gateway):
            if set(entry.get("state", [])) & ANSWERED:
                return None
        return f"the gateway {gateway} does not answer"

    def _ip(self, *args: str) -> list[dict[str, Any]]:
        output = self._run("ip", "-j", *args, check=False)
        try:
            found = json.loads(output) if output.strip() else []
        except ValueError:
            return []
        return found if isinstance(found, list) else []

    def _run(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0 and check:
            log(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done.stdout


def main(argv: list[str] | None = None) -> int:
    """The helper: `python3 -I network_apply.py [--request FILE] [--state-dir DIR]` as root."""
    parser = argparse.ArgumentParser(description="Apply the Connect Box's network request")
    parser.add_argument("--request", default=f"/var/lib/connectbox/{REQUEST_FILE}")
    parser.add_argument("--state-dir", default=str(STATE_DIR))
    args = parser.parse_args(argv)
    os.umask(0o022)
    state = Helper(Path(args.request), Path(args.state_dir), Networkd()).run()
    log(f"in force: {state.setting.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
