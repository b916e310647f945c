"""The box's configuration: a TOML file, checked completely before anything starts.

Every problem stops start-up with one message that names the key, e.g.
`config error: [host] deadline_ms: must be a whole number from 100 to 10000`.
Unknown keys are errors too: a misspelt key would otherwise be silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from provisioning.api import is_loopback_host

DEFAULT_PATH = "/etc/connectbox/connectbox.toml"
DIALECTS = ("auto", "passport", "eps")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class PosConfig:
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 9000))
    dialect: str = "auto"
    session_timeout_s: int = 3600
    idle_timeout_s: int = 900
    max_frame_bytes: int = 1024 * 1024
    frame_deadline_s: float = 5.0  # a frame must be complete this long after its first byte
    max_connections: int = 64  # POS connections at once; the newest beyond is refused


@dataclass
class HostConfig:
    url: str = ""
    device_id: str = ""
    site_id: str = ""
    token: str = ""
    deadline_ms: int = 1500
    hedge_ms: int = 250
    timeout_s: float = 10.0
    ca_file: str | None = None


@dataclass
class StatusConfig:
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 8080))
    pin: str | None = None  # the site PIN for technician actions; None disables them


@dataclass
class StorageConfig:
    data_dir: Path = Path("/var/lib/connectbox")


@dataclass
class PolicyConfig:
    trusted_keys: dict[str, str] = field(default_factory=dict)
    refresh_s: int = 300


@dataclass
class ReadersConfig:
    bindings: list[Any] = field(default_factory=list)  # app.readers.ReaderBinding
    pending_ttl_s: int = 120
    discover: bool = True


@dataclass
class NetworkConfig:
    mdns: bool = True
    check_interval_s: int = 300


@dataclass
class ProvisioningConfig:
    claim_code: str | None = None  # else /etc/connectbox/claim (written at the factory)
    serial: str | None = None  # else the DMI serial, else the machine id
    heartbeat_s: int = 60
    software_root: Path | None = None  # releases/ and current/ for updates; None: no updates


@dataclass
class LogConfig:
    level: str = "INFO"


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


# ---- reading --------------------------------------------------------------------------------


def config_path(cli_path: str | None) -> str:
    return cli_path or os.environ.get("CONNECTBOX_CONFIG") or DEFAULT_PATH


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config error: file {path} not found") from None
    except PermissionError:
        raise ConfigError(f"config error: file {path} cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path} is not valid TOML: {exc}") from None
    config = parse_config(raw, base_dir=Path(path).parent)
    config.source = str(path)
    return config


def parse_config(raw: dict[str, Any], base_dir: Path = Path(".")) -> Config:
    sections = {
        "pos",
        "host",
        "status",
        "storage",
        "policy",
        "readers",
        "network",
        "provisioning",
        "log",
    }
    for name in raw:
        if name not in sections:
            raise ConfigError(f"config error: [{name}]: unknown section")
    reader = _Reader(raw)
    config = Config()
    pos = reader.section(
        "pos",
        {
            "listen",
            "dialect",
            "session_timeout_s",
            "idle_timeout_s",
            "max_frame_bytes",
            "frame_deadline_s",
            "max_connections",
        },
    )
    config.pos = PosConfig(
        listen=pos.listen("listen", config.pos.listen),
        dialect=pos.choice("dialect", DIALECTS, "auto"),
        session_timeout_s=pos.integer("session_timeout_s", 3600, 60, 86400),
        idle_timeout_s=pos.integer("idle_timeout_s", 900, 10, 86400),
        max_frame_bytes=pos.integer("max_frame_bytes", 1024 * 1024, 1024, 16 * 1024 * 1024),
        frame_deadline_s=pos.number("frame_deadline_s", 5.0, 1.0, 60.0),
        max_connections=pos.integer("max_connections", 64, 1, 4096),
    )
    host = reader.section(
        "host",
        {
            "url",
            "device_id",
            "site_id",
            "token",
            "token_file",
            "deadline_ms",
            "hedge_ms",
            "timeout_s",
            "ca_file",
        },
    )
    token = host.token(base_dir)
    # Without a token the box enrolls with its claim code; with one (development, tests) it
    # needs to know who it is.
    config.host = HostConfig(
        url=host.url("url"),
        device_id=host.string("device_id") if token else host.optional_string("device_id") or "",
        site_id=host.string("site_id") if token else host.optional_string("site_id") or "",
        token=token,
        deadline_ms=host.integer("deadline_ms", 1500, 100, 10000),
        hedge_ms=host.integer("hedge_ms", 250, 0, 10000),
        timeout_s=host.number("timeout_s", 10.0, 1.0, 120.0),
        ca_file=host.optional_string("ca_file"),
    )
    status = reader.section("status", {"listen", "pin"})
    config.status = StatusConfig(
        listen=status.listen("listen", config.status.listen), pin=status.pin("pin")
    )
    storage = reader.section("storage", {"data_dir"})
    config.storage = StorageConfig(
        data_dir=Path(storage.string("data_dir", str(config.storage.data_dir)))
    )
    policy = reader.section("policy", {"trusted_keys", "refresh_s"})
    config.policy = PolicyConfig(
        trusted_keys=policy.public_keys("trusted_keys"),
        refresh_s=policy.integer("refresh_s", 300, 10, 86400),
    )
    readers = reader.section("readers", {"pending_ttl_s", "discover", "bind"})
    config.readers = ReadersConfig(
        bindings=readers.bindings("bind"),
        pending_ttl_s=readers.integer("pending_ttl_s", 120, 5, 3600),
        discover=readers.boolean("discover", True),
    )
    network = reader.section("network", {"mdns", "check_interval_s"})
    config.network = NetworkConfig(
        mdns=network.boolean("mdns", True),
        check_interval_s=network.integer("check_interval_s", 300, 30, 86400),
    )
    prov = reader.section("provisioning", {"claim_code", "serial", "heartbeat_s", "software_root"})
    root = prov.optional_string("software_root")
    config.provisioning = ProvisioningConfig(
        claim_code=prov.optional_string("claim_code"),
        serial=prov.optional_string("serial"),
        heartbeat_s=prov.integer("heartbeat_s", 60, 5, 86400),
        software_root=Path(root) if root else None,
    )
    log = reader.section("log", {"level"})
    config.log = LogConfig(level=log.choice("level", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"))
    return config


class _Reader:
    def __init__(self, raw: dict[str, Any], name: str = "") -> None:
        self.raw = raw
        self.name = name

    def section(self, name: str, allowed: set[str]) -> _Reader:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"config error: [{name}]: must be a table")
        for key in value:
            if key not in allowed:
                raise ConfigError(f"config error: [{name}] {key}: unknown key")
        return _Reader(value, name)

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"config error: [{self.name}] {key}: {why}")

    def string(self, key: str, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if value is None:
            raise self.fail(key, "missing (required)")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if key in self.raw else None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number from {low} to {high} (got {value!r})")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(key, f"must be a number from {low:g} to {high:g} (got {value!r})")
        return float(value)

    def pin(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not text.isdigit() or not 4 <= len(text) <= 12:
            raise self.fail(key, "must be 4 to 12 digits")
        return text

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false (got {value!r})")
        return value

    def bindings(self, key: str) -> list[Any]:
        """`[[readers.bind]]`: which reader serves which register, and how to decode it."""
        from app.readers import ReaderBinding
        from drivers.decoding import DecodeOptions

        entries = self.raw.get(key, [])
        if not isinstance(entries, list):
            raise self.fail(key, "must be a list of tables ([[readers.bind]])")
        allowed = {
            "register_id",
            "match",
            "path",
            "kind",
            "baudrate",
            "luhn",
            "lrc",
            "require_aim",
            "track1_formats",
        }
        match_keys = {"vendor_id", "product_id", "serial", "port_path", "devnode"}
        result = []
        for index, entry in enumerate(entries):
            where = _Reader(entry if isinstance(entry, dict) else {}, f"readers.bind.{index}")
            if not isinstance(entry, dict):
                raise where.fail("", "must be a table")
            for name in entry:
                if name not in allowed:
                    raise where.fail(name, "unknown key")
            match = entry.get("match", {})
            if not isinstance(match, dict) or not set(match) <= match_keys:
                raise where.fail("match", f"must be a table with keys from {sorted(match_keys)}")
            path = where.optional_string("path")
            if not match and not path:
                raise where.fail("match", "give a match table or a path")
            formats = entry.get("track1_formats", ["B", "A"])
            if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
                raise where.fail("track1_formats", 'must be a list like ["B", "A"]')
            result.append(
                ReaderBinding(
                    register_id=where.string("register_id"),
                    match={k: str(v) for k, v in match.items()},
                    path=path,
                    kind=where.choice("kind", ("serial", "keyboard"), "serial"),
                    baudrate=where.integer("baudrate", 9600, 300, 921600),
                    options=DecodeOptions(
                        luhn=where.boolean("luhn", False),
                        lrc=where.boolean("lrc", False),
                        require_aim=where.boolean("require_aim", True),
                        track1_formats=tuple(formats),
                    ),
                )
            )
        return result

    def public_keys(self, key: str) -> dict[str, str]:
        """key_id -> base64 of a 32-byte raw Ed25519 public key."""
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, 'must be a table like { k1 = "<base64 public key>" }')
        for key_id, encoded in value.items():
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (TypeError, ValueError, binascii.Error):
                raw = b""
            if len(raw) != 32:
                raise self.fail(f"{key}.{key_id}", "must be the base64 of a 32-byte public key")
        return dict(value)

    def listen(self, key: str, default: Listen) -> Listen:
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            return parse_listen(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def url(self, key: str) -> str:
        value = self.string(key)
        parsed = urlparse(value)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise self.fail(key, f"must be an https:// URL (got {value!r})")
        if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
            raise self.fail(key, "plain http:// is allowed only for a loopback host; use https://")
        return value.rstrip("/")

    def token(self, base_dir: Path) -> str:
        if "token" in self.raw and "token_file" in self.raw:
            raise self.fail("token", "set either token or token_file, not both")
        if "token_file" in self.raw:
            path = base_dir / self.string("token_file")
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise self.fail("token_file", f"cannot read {path}: {exc.strerror}") from None
            if not token:
                raise self.fail("token_file", f"{path} is empty")
            return token
        if "token" not in self.raw:
            return ""  # not enrolled yet: the box enrolls with its claim code
        return self.string("token")


def parse_listen(value: Any) -> Listen:
    """'0.0.0.0:9000', '[::1]:9000' or ':9000' (all addresses)."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"must look like 0.0.0.0:9000 (got {value!r})")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    return Listen(host, int(port_text))
