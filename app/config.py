"""The box's configuration: a TOML file, checked completely before anything starts.

Every key is declared once, as a field of its table's dataclass below: its default, its kind
(which checks it: `Whole(100, 10000)`, `Choice(...)`, ...) and its line in
`docs/configuration.md` (whose key tables `python -m app.config_doc` writes from here). The same
declarations check the provider's device config (`provider_settings`).

Every problem stops start-up with one message that names the key, e.g.
`config error: [host] deadline_ms: must be a whole number from 100 to 10000 (got 'fast')`.
Unknown keys are errors too: a misspelt key would otherwise be silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
import os
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from app.network.static import BadSetting, Ipv4Setting, parse_setting
from app.pos.tls import TlsFileError, server_context
from provisioning.api import is_loopback_host

DEFAULT_PATH = "/etc/connectbox/connectbox.toml"
SETTINGS_HELP = "connectbox config example, docs/configuration.md"

log = logging.getLogger("connectbox.config")
T = TypeVar("T")


class ConfigError(Exception):
    pass


def _fail(place: str, key: str, why: str) -> ConfigError:
    return ConfigError(f"config error: [{place}]{' ' + key if key else ''}: {why}")


# ---- kinds: how a value is checked, and its bounds as the docs give them ---------------------


class Invalid(ValueError):
    """Why a value is refused; `part` names the part of the key at fault (`trusted_keys.k1`)."""

    def __init__(self, why: str, part: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.part = part


class Kind:
    """What a key's value must be."""

    def check(self, value: Any) -> Any:
        """The value to use, or `Invalid`."""
        raise NotImplementedError

    def bounds(self) -> str:
        """The allowed values for the docs; empty where the key's own doc says them."""
        return ""


@dataclass(frozen=True)
class Whole(Kind):
    low: int
    high: int
    what: ClassVar[str] = "a whole number"
    types: ClassVar[tuple[type, ...]] = (int,)

    def check(self, value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, self.types)
            or not self.low <= value <= self.high
        ):
            low, high = _number(self.low), _number(self.high)
            raise Invalid(f"must be {self.what} from {low} to {high} (got {value!r})")
        return value

    def bounds(self) -> str:
        return f"{_number(self.low)}–{_number(self.high)}."


@dataclass(frozen=True)
class Number(Whole):
    low: float
    high: float
    what: ClassVar[str] = "a number"
    types: ClassVar[tuple[type, ...]] = (int, float)

    def check(self, value: Any) -> float:
        return float(super().check(value))


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Choice(Kind):
    """One of `choices`, in that order; `meanings` are choices with a word for the docs."""

    def __init__(self, *choices: str, **meanings: str) -> None:
        self.choices = choices + tuple(meanings)
        self.meanings = meanings

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise Invalid(f"must be one of {', '.join(self.choices)} (got {value!r})")
        return value

    def bounds(self) -> str:
        said = [
            f"`{c}` ({self.meanings[c]})" if c in self.meanings else f"`{c}`" for c in self.choices
        ]
        return "One of " + ", ".join(said) + "."


class Flag(Kind):
    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false (got {value!r})")
        return value


class Text(Kind):
    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid("must be a non-empty string")
        return value.strip()


class FilePath(Text):
    def check(self, value: Any) -> Path:
        return Path(super().check(value))


class Url(Text):
    def check(self, value: Any) -> str:
        text = super().check(value)
        parsed = urlparse(text)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise Invalid(f"must be an https:// URL (got {text!r})")
        if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
            raise Invalid("plain http:// is allowed only for a loopback host; use https://")
        return text.rstrip("/")


class Pin(Kind):
    def check(self, value: Any) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not text.isdigit() or not 4 <= len(text) <= 12:
            raise Invalid("must be 4 to 12 digits")
        return text


class ListenAddress(Kind):
    def check(self, value: Any) -> Listen:
        try:
            return parse_listen(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None


class Ipv4(Kind):
    """`"dhcp"` or a fixed address: checked by the network helper's own rules."""

    def check(self, value: Any) -> Ipv4Setting:
        try:
            return parse_setting(value)
        except BadSetting as exc:
            raise Invalid(exc.why, part=exc.part) from None

    def bounds(self) -> str:
        return (
            "Checked before anything is applied: a prefix from 8 to 30, the gateway inside the "
            "box's network, 1 to 3 DNS servers."
        )


class PublicKeys(Kind):
    """key_id -> base64 of a 32-byte raw Ed25519 public key."""

    def check(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise Invalid('must be a table like { k1 = "<base64 public key>" }')
        for key_id, encoded in value.items():
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (TypeError, ValueError, binascii.Error):
                raw = b""
            if len(raw) != 32:
                raise Invalid("must be the base64 of a 32-byte public key", part=key_id)
        return dict(value)


class MatchTable(Kind):
    keys = ("vendor_id", "product_id", "serial", "port_path", "devnode")

    def check(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not set(value) <= set(self.keys):
            raise Invalid(f"must be a table with keys from {sorted(self.keys)}")
        return {k: str(v) for k, v in value.items()}


class Formats(Kind):
    def check(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
            raise Invalid('must be a list like ["B", "A"]')
        return tuple(value)


class Bindings(Kind):
    """A list of reader bindings, each a `BindEntry` table named `[<place>.<index>]`."""

    def __init__(self, place: str, hint: str = "") -> None:
        self.place = place
        self.hint = hint

    def check(self, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid("must be a list of tables" + self.hint)
        bindings = []
        for index, entry in enumerate(value):
            place = f"{self.place}.{index}"
            bindings.append(read_table(BindEntry, entry, place).binding(place))
        return bindings


# ---- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key: declared once, as a field of its table (see `setting`)."""

    kind: Kind
    doc: str  # its line in docs/configuration.md; the kind's bounds are added to it
    required: bool = False
    name: str = ""  # its name in the file, where that is not the field's
    shown: str = ""  # the default as the docs show it, where that is not the value itself


def setting(
    default: Any, kind: Kind, doc: str, *, required: bool = False, name: str = "", shown: str = ""
) -> Any:
    """A dataclass field that is a configuration key."""
    key = {"key": Key(kind, doc, required, name, shown)}
    if isinstance(default, list | dict):
        return field(default_factory=default.copy, metadata=key)  # each instance its own
    return field(default=default, metadata=key)


def table_keys(table: type) -> dict[str, tuple[str, Key]]:
    """A table's keys by their name in the file: (the field's name, its declaration)."""
    found = {}
    for item in fields(table):
        key: Key = item.metadata["key"]
        found[key.name or item.name] = (item.name, key)
    return found


def read_table(table: type[T], raw: Any, place: str) -> T:
    """`raw` checked against `table`'s keys; the errors are named `[place] key`."""
    if not isinstance(raw, dict):
        raise _fail(place, "", "must be a table")
    keys = table_keys(table)
    for name in raw:
        if name not in keys:
            raise _fail(place, name, "unknown key" + _known(name, keys))
    values = {}
    for name, (attribute, key) in keys.items():
        if name in raw:
            values[attribute] = _check(key.kind, raw[name], place, name)
        elif key.required:
            raise _fail(place, name, "missing (required)")
    return table(**values)


def _known(name: str, known: Iterable[str]) -> str:
    """The fix for an unknown name: the declared one it was most likely meant to be, else all."""
    names = list(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(names)})"


def _check(kind: Kind, value: Any, place: str, name: str) -> Any:
    try:
        return kind.check(value)
    except Invalid as exc:
        raise _fail(place, f"{name}.{exc.part}" if exc.part else name, exc.why) from None


# ---- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class PosConfig:
    listen: Listen = setting(
        Listen("0.0.0.0", 9000),
        ListenAddress(),
        'Address and port the POS connects to. `":9000"` means all addresses; IPv6 as '
        '`"[::]:9000"`. This port (and the box\'s address) is what the technician types into '
        "the POS.",
    )
    dialect: str = setting(
        "auto",
        Choice(
            auto="decided per connection from its first bytes",
            passport="Gilbarco: 28-byte `POSLOYALTY` header",
            eps="Verifone Commander EPS: 4-byte length prefix",
        ),
        "How the POS frames its messages.",
    )
    session_timeout_s: int = setting(
        3600,
        Whole(60, 86400),
        "A transaction the POS leaves open (no Finalize or Cancel) is forgotten after this many "
        "seconds of silence.",
    )
    idle_timeout_s: int = setting(
        900,
        Whole(10, 86400),
        "A POS connection that sends nothing for this long is closed (the POS reconnects). "
        "Verifone's heartbeat is at least every 120 s.",
    )
    max_frame_bytes: int = setting(
        1024 * 1024,
        Whole(1024, 16 * 1024 * 1024),
        "Largest message accepted; a larger length in a header is treated as a broken stream and "
        "the connection is closed.",
    )
    frame_deadline_s: float = setting(
        5.0,
        Number(1.0, 60.0),
        "A message must be complete this many seconds after its first byte arrived (however "
        "slowly the rest trickles in), and an answer must be taken by the POS within this time; "
        "otherwise the connection is closed (`pos.cut_slow_frame` on the status page). Between "
        "messages only `idle_timeout_s` applies.",
    )
    max_connections: int = setting(
        64,
        Whole(1, 4096),
        "POS connections open at once. A connection beyond it is closed at once (the newest one: "
        "those already open are kept) and counted in `pos.refused_over_cap`. Each connection is a "
        "thread and a file descriptor: keep it below the service's open-file limit.",
    )
    tls_cert: Path | None = setting(
        None,
        FilePath(),
        "PEM certificate (the box's first, then any intermediates) for TLS on the POS port. With "
        "`tls_key`, the port speaks only TLS (1.2 or later), in both dialects; a POS that does not "
        "is refused. Relative paths are relative to the configuration file. Checked at start.",
    )
    tls_key: Path | None = setting(
        None,
        FilePath(),
        "PEM private key of `tls_cert`, without a passphrase (readable by the service only: "
        "mode 0640, group connectbox).",
    )


@dataclass
class HostConfig:
    url: str = setting(
        "",
        Url(),
        "Base URL of the host API, `https://…`. Plain `http://` is accepted only for a loopback "
        "host (development and tests).",
        required=True,
    )
    device_id: str = setting(
        "", Text(), "This box's device id at the host.", shown="(required with a token)"
    )
    site_id: str = setting("", Text(), "The site this box serves.", shown="(required with a token)")
    token: str = setting(
        "",
        Text(),
        "The device's bearer token. Set `token` or `token_file`, not both; neither: the box "
        "enrolls (`[provisioning]`).",
    )
    token_file: str | None = setting(
        None,
        Text(),
        "File holding the token (relative paths are relative to the configuration file). "
        "Preferred: keeps the secret out of the configuration.",
    )
    deadline_ms: int = setting(
        1500,
        Whole(100, 10000),
        "The POS gets every answer within this time. When the host has not answered by then, "
        "the POS is answered without host rewards and the request is counted as timed out.",
    )
    hedge_ms: int = setting(
        250,
        Whole(0, 10000),
        "While the host is known to be down or slow, a POS request is still sent to it, but the "
        "POS waits only this long for its answer before the offline policy decides (never longer "
        "than `deadline_ms`): the first sale after the host comes back is the host's.",
    )
    timeout_s: float = setting(
        10.0,
        Number(1.0, 120.0),
        "Longest wait for any one HTTP call to the host (a late answer after `deadline_ms` still "
        "completes in the background, up to this long).",
    )
    ca_file: str | None = setting(
        None,
        Text(),
        "Extra CA bundle to verify the host's TLS certificate with. TLS verification is always on.",
    )
    clock_helper: Path | None = setting(
        None,
        FilePath(),
        "The clock helper's socket (the image: `/run/connectbox-clock.sock`). Set: while NTP has "
        "not synchronized the clock, the box sets it from the host's `Date` through the helper, "
        "and offline decisions wait for a clock set by NTP or from the host. Not set: the clock "
        "is only checked against the host's.",
    )


@dataclass
class StatusConfig:
    listen: Listen = setting(
        Listen("0.0.0.0", 8080),
        ListenAddress(),
        "Address and port of the status page and API (`/`, `/healthz`, `/api/status`, "
        "`/metrics`). The image forwards port 80 to it.",
    )
    pin: str | None = setting(
        None,
        Pin(),
        "The site PIN (4–12 digits, as a string) that unlocks the technician actions on the "
        "status page (test the host connection, re-run discovery, test sale, restart, "
        "diagnostics bundle). Not set: the actions are disabled. Five wrong tries lock a browser "
        "out for 5 minutes.",
    )


@dataclass
class StorageConfig:
    data_dir: Path = setting(
        Path("/var/lib/connectbox"),
        FilePath(),
        "Where the box keeps its state. Created at start-up if missing.",
    )
    # At least 2 days: the daily limit per loyalty ID counts today's events, and a day can
    # last 25 hours.
    retention_days: int = setting(
        90,
        Whole(2, 3650),
        "Days the box keeps events the host already has (then deletes them, loyalty IDs "
        "included; undelivered events are never deleted).",
    )


@dataclass
class PolicyConfig:
    trusted_keys: dict[str, str] = setting(
        {},
        PublicKeys(),
        "The provider's Ed25519 public keys, by `key_id`: `{ k1 = \"<base64 of the 32-byte raw "
        'public key>" }`. A policy signed by a key not listed here is refused. With no keys, the '
        "box never decides offline (no offline discounts).",
    )
    refresh_s: int = setting(
        300,
        Whole(10, 86400),
        "How often the box fetches its config and policy from the host "
        "(`GET /v1/devices/{device_id}/config`, with `If-None-Match`).",
    )


@dataclass
class ReadersConfig:
    pending_ttl_s: int = setting(
        120,
        Whole(5, 3600),
        "A card read waits this many seconds for its register's next GetRewards, then is dropped.",
    )
    discover: bool = setting(
        True,
        Flag(),
        "Find readers at start-up and on hot-plug (pyudev; sysfs where there is no udev database).",
    )
    bindings: list[Any] = setting(  # app.readers.ReaderBinding
        [],
        Bindings("readers.bind", " ([[readers.bind]])"),
        "`[[readers.bind]]` tables, one per reader (below). See `docs/readers.md`.",
        name="bind",
    )


@dataclass
class BindEntry:
    """One `[[readers.bind]]` table as written; `binding()` makes the reader service's."""

    register_id: str = setting(
        "", Text(), "The register whose sales this reader's reads belong to.", required=True
    )
    match: dict[str, str] = setting(
        {},
        MatchTable(),
        "Which discovered reader: a table of `vendor_id`, `product_id`, `serial`, `port_path`, "
        "`devnode` (all must match). Give `match` or `path`.",
    )
    path: str | None = setting(
        None, Text(), "A device path opened directly (also virtual readers), instead of `match`."
    )
    kind: str = setting(
        "serial",
        Choice("serial", "keyboard"),
        "What the device at `path` is (discovered readers know their own kind).",
    )
    baudrate: int = setting(9600, Whole(300, 921600), "Serial line speed.")
    luhn: bool = setting(False, Flag(), "Magstripe card numbers must pass the Luhn check.")
    lrc: bool = setting(
        False, Flag(), "Every magstripe track is followed by its LRC character, checked."
    )
    require_aim: bool = setting(
        True, Flag(), "Text without sentinels must carry an AIM symbology identifier."
    )
    track1_formats: tuple[str, ...] = setting(
        ("B", "A"), Formats(), "Allowed track-1 format codes."
    )

    def binding(self, place: str) -> Any:  # app.readers.ReaderBinding
        from app.readers import ReaderBinding
        from drivers.decoding import DecodeOptions

        if not self.match and not self.path:
            raise _fail(place, "match", "give a match table or a path")
        return ReaderBinding(
            register_id=self.register_id,
            match=self.match,
            path=self.path,
            kind=self.kind,
            baudrate=self.baudrate,
            options=DecodeOptions(
                luhn=self.luhn,
                lrc=self.lrc,
                require_aim=self.require_aim,
                track1_formats=self.track1_formats,
            ),
        )


@dataclass
class NetworkConfig:
    mdns: bool | None = setting(
        None,
        Flag(),
        "Announce the box on the site network over mDNS (`_connectbox._tcp` on the POS port, "
        "`_http._tcp` on the status page's), so a technician's phone or laptop finds it. Not set: "
        "only in the Connect Box image, so that `connectbox run` on a developer's machine never "
        "announces a stray box on the office network.",
        shown="(`true` in the image)",
    )
    check_interval_s: int = setting(
        300,
        Whole(30, 86400),
        "How often the layered host check (link, gateway, DNS, TCP, TLS, HTTP, API) runs while "
        "it passes; every minute while it fails, and at once when the network changes.",
    )
    ipv4: Ipv4Setting | None = setting(
        None,
        Ipv4(),
        'The box\'s IPv4 address: `"dhcp"`, or a fixed address as a table with `address` '
        '(e.g. `"192.168.1.50/24"`), `gateway` and `dns` (a list; see "A fixed address" '
        "below). Not set: DHCP, "
        "unless a technician set a fixed address (status page, `connectbox network`). A change "
        "is applied at start, kept only if the gateway answers; the latest change wins, "
        "whoever made it.",
    )


@dataclass
class ProvisioningConfig:
    claim_code: str | None = setting(
        None,
        Text(),
        "The claim code to enroll with; else the factory's `/etc/connectbox/claim`. Used only "
        "when the box has no credentials yet (no `[host] token`).",
    )
    serial: str | None = setting(
        None,
        Text(),
        "The serial to enroll with when the hardware has none (DMI serial, else machine id).",
    )
    heartbeat_s: int = setting(
        60, Whole(5, 86400), "Seconds between heartbeats to the host (±10 % jitter)."
    )
    software_root: Path | None = setting(
        None,
        FilePath(),
        "Where releases live (`releases/<version>`, `current`, `previous`) for remote updates. "
        "Not set: `update` commands are refused.",
    )
    update_socket: Path | None = setting(
        None,
        FilePath(),
        "The privileged update unit's socket (the image: `/run/connectbox-update.sock`): `update` "
        "commands are handed to it and the service never writes `software_root` itself. Not "
        "set: the service updates itself (development).",
    )
    os_slot_socket: Path = setting(
        Path("/run/connectbox-os-slot.sock"),
        FilePath(),
        "The OS slot writer's socket (connectbox-os-slot.socket in the image): `update_os` "
        "commands write the inactive root slot through it. Absent: they are refused.",
    )


@dataclass
class LogConfig:
    level: str = setting(
        "INFO",
        Choice("DEBUG", "INFO", "WARNING", "ERROR"),
        "Logs go to stderr (journald under systemd). Loyalty IDs are always masked to their last "
        "4 characters.",
    )
    journal_sync: Path | None = setting(
        None,
        FilePath(),
        "The journal sync helper's socket (the image: `/run/connectbox-journal-sync.sock`): every "
        "warning or error asks it to write the journal to disk at once. Not set: journald's own "
        "interval.",
    )


@dataclass
class Config:
    pos: PosConfig = field(default_factory=PosConfig)
    host: HostConfig = field(default_factory=HostConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    readers: ReadersConfig = field(default_factory=ReadersConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    provisioning: ProvisioningConfig = field(default_factory=ProvisioningConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<built-in>"


def tables() -> dict[str, type]:
    """Every table of keys by its name in the file: the sections, then `readers.bind`."""
    sections = {item.name: type(getattr(Config(), item.name)) for item in fields(Config)}
    del sections["source"]
    return {**sections, "readers.bind": BindEntry}


def declared(place: str, name: str) -> Key:
    return table_keys(tables()[place])[name][1]


# ---- reading -------------------------------------------------------------------------------


def config_path(cli_path: str | None) -> str:
    return cli_path or os.environ.get("CONNECTBOX_CONFIG") or DEFAULT_PATH


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config error: no configuration file at {path}. Give one with --config PATH (or "
            "$CONNECTBOX_CONFIG); connectbox config example prints a commented one to start from, "
            "and docs/configuration.md describes every setting."
        ) from None
    except PermissionError:
        raise ConfigError(f"config error: file {path} cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path} is not valid TOML: {exc}") from None
    try:
        config = parse_config(raw, base_dir=Path(path).parent)
    except ConfigError as exc:  # which file, and where every key is explained
        raise ConfigError(f"{exc}\n  in {path}; every setting: {SETTINGS_HELP}") from None
    config.source = str(path)
    return config


def parse_config(raw: dict[str, Any], base_dir: Path = Path(".")) -> Config:
    sections = {name: table for name, table in tables().items() if "." not in name}
    for name in raw:
        if name not in sections:
            raise _fail(name, "", "unknown section" + _known(name, sections))
    config = Config(
        **{name: read_table(table, raw.get(name, {}), name) for name, table in sections.items()}
    )
    host = config.host
    if host.token and host.token_file:
        raise _fail("host", "token", "set either token or token_file, not both")
    if host.token_file:
        host.token = _read_token(base_dir / host.token_file)
    _check_tls(config.pos, base_dir)
    # Without a token the box enrolls with its claim code; with one (development, tests) it
    # needs to know who it is.
    for name in ("device_id", "site_id"):
        if host.token and not getattr(host, name):
            raise _fail("host", name, "missing (required)")
    return config


def _check_tls(pos: PosConfig, base_dir: Path) -> None:
    """Both TLS files or neither; each readable, and the key the certificate's."""
    if not pos.tls_cert and not pos.tls_key:
        return
    if not pos.tls_cert or not pos.tls_key:
        missing = "tls_key" if pos.tls_cert else "tls_cert"
        raise _fail("pos", missing, "missing: set both tls_cert and tls_key, or neither")
    pos.tls_cert, pos.tls_key = base_dir / pos.tls_cert, base_dir / pos.tls_key
    try:
        server_context(pos.tls_cert, pos.tls_key)
    except TlsFileError as exc:
        raise _fail("pos", exc.key, exc.why) from None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise _fail("host", "token_file", f"cannot read {path}: {exc.strerror}") from None
    if not token:
        raise _fail("host", "token_file", f"{path} is empty")
    return token


def parse_listen(value: Any) -> Listen:
    """'0.0.0.0:9000', '[::1]:9000' or ':9000' (all addresses)."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"must look like 0.0.0.0:9000 (got {value!r})")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    return Listen(host, int(port_text))


# ---- the provider's device config ----------------------------------------------------------

# The provider's config (host-api.md) sets some of the file's keys, under its own names; each
# is checked by the file's declaration.
PROVIDER_KEYS = {
    "heartbeat_s": ("provisioning", "heartbeat_s"),
    "retention_days": ("storage", "retention_days"),
    "pos.deadline_ms": ("host", "deadline_ms"),
    "readers": ("readers", "bind"),
    "network.ipv4": ("network", "ipv4"),
}
# What else it says that is not applied here: `site` and `policy` are the policy manager's, and
# the POS listener's dialect and port are not changed under a running POS.
PROVIDER_OTHER = ("config_version", "site", "policy", "pos.dialect", "pos.listen_port")
# A binding from the provider names only the register and the match (host-api.md).
PROVIDER_READER_KEYS = ("register_id", "match")


def provider_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The provider's device config checked like the file: the values that passed, by the
    provider's names. A bad value is logged and left out, so the value in force stays and the box
    keeps serving. Keys this box does not know are logged and ignored: a newer host may send
    more than this box knows."""
    ignored = [
        name for name in _provider_names(raw) if name not in (*PROVIDER_KEYS, *PROVIDER_OTHER)
    ]
    settings: dict[str, Any] = {}
    for name, (place, key_name) in PROVIDER_KEYS.items():
        value = _dig(raw, name)
        if value is _ABSENT:
            continue
        kind = declared(place, key_name).kind
        if name == "readers":
            value = _provider_readers(value, ignored)
            kind = Bindings("provider readers")  # the same entries, named as the provider does
        try:
            settings[name] = _check(kind, value, "provider", name)
        except ConfigError as exc:
            log.warning("%s; the value in force stays", exc)
    if ignored:
        log.info("provider config: ignored %s (unknown to this box)", ", ".join(ignored))
    return settings


_ABSENT = object()


def _dig(raw: dict[str, Any], dotted: str) -> Any:
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _provider_names(raw: dict[str, Any]) -> Iterator[str]:
    # `pos` and `network` are tables of keys; `site` and `policy` are read whole by the policy
    # manager.
    for name, value in raw.items():
        if name in ("pos", "network") and isinstance(value, dict):
            yield from (f"{name}.{key}" for key in value)
        else:
            yield name


def _provider_readers(value: Any, ignored: list[str]) -> Any:
    """The entries cut to the keys the host may send; the rest is named in `ignored`."""
    if not isinstance(value, list):
        return value
    kept: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            ignored += [f"readers.{index}.{k}" for k in entry if k not in PROVIDER_READER_KEYS]
            entry = {k: v for k, v in entry.items() if k in PROVIDER_READER_KEYS}
        kept.append(entry)
    return kept
