"""Release artefacts: their format, signing, verification, safe extraction and set-up.

A release artefact is a gzip'd tar (`connectbox-<version>.tar.gz`) whose members sit at the top
level (no leading folder):

    RELEASE.json        {"format": 1, "version": "1.2.0", "entry": "bin/connectbox"}
    bin/connectbox      what systemd starts (through the `current` symlink), executable
    wheels/*.whl        optional: the app and its dependencies; when present, set-up creates
                        `venv/` beside them and installs `connectbox` from them, offline
    ...                 anything else the release needs (data, docs), read-only once installed

The artefact is published with its SHA-256 and an Ed25519 signature over its exact bytes
(`sign_artefact`), and the box refuses to unpack anything that does not verify
(`verify_artefact`). `RELEASE.json` is inside the signed bytes, so the version a command names
is checked against the version the provider signed. Nothing here imports `app/`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import io
import ipaddress
import json
import mmap
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import urllib3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provisioning import http
from provisioning.version import software_version

FORMAT = 1
MANIFEST = "RELEASE.json"
ENTRY = "bin/connectbox"
DEFAULT_MAX_ARTEFACT_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_RELEASE_BYTES = 2 * 1024 * 1024 * 1024
DEFAULT_MAX_MEMBERS = 50_000
DISK_RESERVE_BYTES = 64 * 1024 * 1024
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # PEP 706; Debian backports it


class UpdateRejected(Exception):
    """An artefact or release that must not be installed; `reason` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Pythons without PEP 706 have no FilterError (and never raise it).
_FilterError: type[Exception] = getattr(tarfile, "FilterError", UpdateRejected)


def check_version(version: Any) -> str:
    """`version` if it is safe as a directory name under `releases/`, else UpdateRejected."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise UpdateRejected(f"version {version!r} is not a valid release name")
    if version.endswith((".partial", ".tmp")):
        raise UpdateRejected(f"version {version!r} ends with a reserved suffix")
    return version


# Publishing.


def make_release(source_dir: Path, version: str, out: Path) -> Path:
    """Pack `source_dir` as the release artefact of `version`; its path.

    `out` is either the artefact's path (ending in `.tar.gz`) or a folder to write
    `connectbox-<version>.tar.gz` into. `source_dir` needs `bin/connectbox` or `wheels/`.
    The tarball is reproducible when SOURCE_DATE_EPOCH is set (sorted members, fixed times and
    owners); special files and symlinks pointing outside the release are refused.
    """
    check_version(version)
    source = Path(source_dir)
    if not (source / ENTRY).is_file() and not (source / "wheels").is_dir():
        raise ValueError(f"{source} has neither {ENTRY} nor wheels/")
    out = Path(out)
    target = out if out.name.endswith(".tar.gz") else out / f"connectbox-{version}.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    manifest = json.dumps({"format": FORMAT, "version": version, "entry": ENTRY}, indent=2)

    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.type, member.mode, member.size, member.mtime = kind, mode, size, mtime
        member.uid = member.gid = 0
        member.uname = member.gname = "root"
        return member

    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as raw:
        with (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=mtime) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            data = (manifest + "\n").encode()
            tar.addfile(info(MANIFEST, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
            for path in _walk(source):
                name = path.relative_to(source).as_posix()
                if name == MANIFEST:
                    continue
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    link = os.readlink(path)
                    if posixpath.isabs(link) or _escapes(posixpath.dirname(name), link):
                        raise ValueError(f"{name} links outside the release: {link}")
                    member = info(name, tarfile.SYMTYPE, 0o777)
                    member.linkname = link
                    tar.addfile(member)
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(info(name, tarfile.DIRTYPE, 0o755))
                elif stat.S_ISREG(st.st_mode):
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    with open(path, "rb") as f:
                        tar.addfile(info(name, tarfile.REGTYPE, mode, st.st_size), f)
                else:
                    raise ValueError(f"{name} is not a regular file, folder or symlink")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)
    return target


def _walk(source: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(source, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        base = Path(folder)
        for name in dirs:
            found.append(base / name)
        found.extend(base / name for name in sorted(files) if not name.endswith(".pyc"))
    return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def sign_artefact(
    path: Path, private_key: Ed25519PrivateKey, key_id: str | None = None
) -> dict[str, Any]:
    """The `update` command fields that vouch for the artefact at `path`.

    `{"sha256": hex, "signature": base64 Ed25519 over the exact bytes, "size": bytes}`, plus
    `key_id` when given. The publisher adds `version` and `url`.
    """
    data = Path(path).read_bytes()
    signed: dict[str, Any] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
        "size": len(data),
    }
    if key_id is not None:
        signed["key_id"] = key_id
    return signed


# Verification.


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the 32-byte raw public key, the form trusted keys are configured in."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def choose_key(trusted_keys: dict[str, str], key_id: str | None) -> str:
    """The key_id to verify with: the named one, or the only trusted key when none is named."""
    if not trusted_keys:
        raise UpdateRejected("no trusted update keys are configured")
    if key_id is None:
        if len(trusted_keys) != 1:
            raise UpdateRejected(f"key_id missing and {len(trusted_keys)} keys are trusted")
        return next(iter(trusted_keys))
    if not isinstance(key_id, str) or key_id not in trusted_keys:
        raise UpdateRejected(f"artefact signed with an unknown key_id {key_id!r}")
    return key_id


def verify_artefact(
    path: Path,
    sha256: str,
    signature_b64: str,
    trusted_keys: dict[str, str],
    key_id: str | None = None,
) -> None:
    """Check the artefact's SHA-256 and Ed25519 signature; UpdateRejected(reason) otherwise.

    `trusted_keys` maps key_id to the base64 of the 32-byte raw public key (as for policies);
    `key_id` None means the only trusted key. The file is mapped, not copied, for verifying.
    """
    public, key_id, signature = _signature_parts(signature_b64, trusted_keys, key_id)
    check_sha256(path, sha256)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise UpdateRejected(f"signature does not verify with key {key_id!r}") from None


def verify_signature(
    message: bytes, signature_b64: str, trusted_keys: dict[str, str], key_id: str | None = None
) -> None:
    """Check an Ed25519 signature over `message` with a trusted key; UpdateRejected otherwise."""
    public, key_id, signature = _signature_parts(signature_b64, trusted_keys, key_id)
    try:
        public.verify(signature, message)
    except InvalidSignature:
        raise UpdateRejected(f"signature does not verify with key {key_id!r}") from None


def _signature_parts(
    signature_b64: str, trusted_keys: dict[str, str], key_id: str | None
) -> tuple[Ed25519PublicKey, str, bytes]:
    key_id = choose_key(trusted_keys, key_id)
    try:
        public = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(trusted_keys[key_id], validate=True)
        )
    except (binascii.Error, ValueError, TypeError):
        raise UpdateRejected(
            f"trusted key {key_id!r} is not a base64 32-byte Ed25519 key"
        ) from None
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise UpdateRejected("signature is not base64") from None
    if len(signature) != 64:
        raise UpdateRejected("signature is not 64 bytes")
    return public, key_id, signature


def check_sha256(path: Path, sha256: str) -> None:
    """UpdateRejected unless the file at `path` is not empty and has this SHA-256."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise UpdateRejected("sha256 is not 64 hex digits")
    size = Path(path).stat().st_size
    if size == 0:
        raise UpdateRejected("artefact is empty")
    actual = file_sha256(path)
    if not hmac.compare_digest(actual, sha256.lower()):
        raise UpdateRejected(
            f"sha256 mismatch: artefact ({size} bytes) is {actual[:12]}…, expected {sha256[:12]}…"
        )


# Download.


def check_url(url: Any) -> str:
    """`url` if it is https, or http to a loopback host (development and tests only)."""
    if not isinstance(url, str):
        raise UpdateRejected("url is missing")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        if parts.hostname == "localhost":
            return url
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return url
        except ValueError:
            pass
    raise UpdateRejected(f"url must be https (plain http only to a loopback host): {url!r}")


def http_download(
    url: str,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_ARTEFACT_BYTES,
    read_timeout_s: float = 30.0,
    total_timeout_s: float = 1800.0,
    resume: bool = False,
    max_rate: float | None = None,
) -> None:
    """Stream `url` into `dest` with timeouts and a size cap; UpdateRejected when it fails.

    The body is stored as sent (no content decoding: the signature is over the published
    bytes), fsync'd, and must be as long as the server's Content-Length said. With `resume`,
    what `dest` already holds is kept and only the rest is asked for (`Range: bytes=<held>-`):
    a 206 from there is appended, a 200 (a server without ranges) starts over, a 416 means
    there is nothing more (the caller checks size and hash). `max_rate` (bytes/s) paces the
    transfer so a big download leaves the site's line to the POS's host calls.
    """
    check_url(url)
    deadline = time.monotonic() + total_timeout_s
    headers = {"User-Agent": f"connectbox/{software_version()}", "Accept-Encoding": "identity"}
    held = dest.stat().st_size if resume and dest.exists() else 0
    if held:
        headers["Range"] = f"bytes={held}-"
    total = held
    try:
        r = http.new_pool(maxsize=1).request(
            "GET", url, headers=headers, preload_content=False,
            timeout=urllib3.Timeout(connect=10.0, read=read_timeout_s),
            retries=urllib3.Retry(total=5, connect=0, read=0, status=0, other=0, redirect=5),
        )  # fmt: skip
        with r:
            if r.status == 416 and held:
                return
            if r.status == 206 and held:
                start = _range_start(r.headers.get("Content-Range"))
                if start != held:
                    raise UpdateRejected(f"download failed: asked from byte {held}, got {start}")
            elif r.status == 200:
                total = 0
            else:
                raise UpdateRejected(f"download failed: HTTP {r.status} for {url}")
            declared = _content_length(r.headers.get("Content-Length"))
            if declared is not None:
                declared += total
                if declared > max_bytes:
                    raise UpdateRejected(f"artefact is {declared} bytes, more than {max_bytes}")
            began, fetched = time.monotonic(), 0
            with open(dest, "ab" if total else "wb") as out:
                for chunk in r.stream(256 * 1024, decode_content=False):
                    total += len(chunk)
                    if total > max_bytes:
                        raise UpdateRejected(f"artefact is larger than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise UpdateRejected(f"download took longer than {total_timeout_s:g} s")
                    out.write(chunk)
                    if max_rate:
                        fetched += len(chunk)
                        time.sleep(max(0.0, fetched / max_rate - (time.monotonic() - began)))
                out.flush()
                os.fsync(out.fileno())
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise UpdateRejected(f"download failed after {total} bytes: {_why(exc)}") from None
    if declared is not None and total != declared:
        raise UpdateRejected(f"download truncated: {total} of {declared} bytes")


def _range_start(value: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes <first>-<last>/<length>` answer."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)$", (value or "").strip())
    return int(match.group(1)) if match else None


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    text = str(exc)
    for hint in ("IncompleteRead", "Connection refused", "timed out", "Connection reset"):
        if hint in text:
            return hint
    return type(exc).__name__


# Safe extraction.


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_RELEASE_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> None:
    """Unpack the .tar.gz `archive` into the new folder `dest`, refusing anything unsafe.

    Refused (UpdateRejected): absolute names, `..`, names repeated, writing through a symlink,
    symlinks or hard links resolving outside `dest`, devices and FIFOs, more than `max_members`
    members or `max_bytes` unpacked, or more than the free disk space (minus a reserve). Modes
    are sanitised (no set-uid, no group/other write) and owners are not restored. The checks
    are done on the whole member list before anything is written; PEP 706's "data" filter is
    applied on top where Python has it.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _checked_members(tar, max_bytes, max_members)
            total = sum(m.size for m in members if m.isreg())
            free = shutil.disk_usage(dest.parent).free
            if total > free - DISK_RESERVE_BYTES:
                raise UpdateRejected(f"not enough disk space: release needs {total} bytes")
            dest.mkdir()
            # Files belong to whoever unpacks them, never to the owner the archive names: and
            # the update unit may not chown at all (its system call filter).
            tar.chown = lambda *args, **kwargs: None  # type: ignore[method-assign]
            if _HAS_DATA_FILTER:
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Pythons without PEP 706
                for member in members:
                    member.mode = _safe_mode(member)
                    member.uid, member.gid = os.geteuid(), os.getegid()
                tar.extractall(dest, members=members, numeric_owner=True)
    except UpdateRejected:
        raise
    except _FilterError as exc:
        raise UpdateRejected(f"unsafe archive member: {exc}") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # zlib.error is an OSError
        raise UpdateRejected(f"artefact is not a readable .tar.gz: {type(exc).__name__}") from None


def _safe_mode(member: tarfile.TarInfo) -> int:
    if member.isdir():
        return 0o755
    if member.issym():
        return 0o777
    return 0o755 if member.mode & 0o100 else 0o644


def _checked_members(
    tar: tarfile.TarFile, max_bytes: int, max_members: int
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    names: set[str] = set()
    files: set[str] = set()
    links: dict[str, str] = {}
    total = 0
    for member in tar:
        if len(members) >= max_members:
            raise UpdateRejected(f"archive has more than {max_members} members")
        name = _member_name(member.name)
        if name in names:
            raise UpdateRejected(f"archive lists {name!r} twice")
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise UpdateRejected(f"{name!r} would be written through a symlink")
        if member.issym():
            target = member.linkname
            if not target or posixpath.isabs(target):
                raise UpdateRejected(f"symlink {name!r} points to an absolute path")
            links[name] = target
        elif member.islnk():
            target = _member_name(member.linkname)
            if target not in files:
                raise UpdateRejected(f"hard link {name!r} to {member.linkname!r} is not allowed")
            member.linkname = target
        elif member.isreg():
            total += member.size
            if total > max_bytes:
                raise UpdateRejected(f"release unpacks to more than {max_bytes} bytes")
            files.add(name)
        elif not member.isdir():
            raise UpdateRejected(f"{name!r} is a device, FIFO or other special file")
        member.name = name
        names.add(name)
        members.append(member)
    if not members:
        raise UpdateRejected("archive is empty")
    for name in links:  # with every link known: a later link can change an earlier one's path
        if _resolve(name, links) is None:
            raise UpdateRejected(f"symlink {name!r} points outside the release")
    return members


def _member_name(raw: str) -> str:
    if not raw or "\x00" in raw or raw.startswith("/") or "\\" in raw:
        raise UpdateRejected(f"unsafe member name {raw!r} (absolute or odd)")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if not parts or ".." in parts:
        raise UpdateRejected(f"unsafe member name {raw!r} (leaves the release)")
    return "/".join(parts)


def _escapes(folder: str, link: str) -> bool:
    return posixpath.normpath(posixpath.join(folder or ".", link)).split("/")[0] == ".."


def _resolve(name: str, links: dict[str, str]) -> list[str] | None:
    """Where symlink `name` ends up inside the release, following the archive's own symlinks;
    None when it leaves the release (or loops)."""
    pending = links[name].split("/")
    done = name.split("/")[:-1]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        here = "/".join([*done, part])
        if here in links:
            hops += 1
            if hops > 40:
                return None
            pending = links[here].split("/") + pending
            continue
        done.append(part)
    return done


# Manifest and set-up.


def read_manifest(release_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((release_dir / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise UpdateRejected(f"artefact has no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise UpdateRejected(f"{MANIFEST} is not UTF-8 JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UpdateRejected(f"{MANIFEST} is not release format {FORMAT}")
    return manifest


class InstallFailed(UpdateRejected):
    """The release unpacked but its own set-up failed."""


class VenvInstaller:
    """The default set-up of an unpacked release (called with its folder, before the rename).

    When the release holds `wheels/`: `python -m venv venv`, then
    `venv/bin/python -m pip install --no-index --find-links wheels connectbox` (offline), and,
    unless the release ships its own `bin/connectbox`, a launcher that runs the venv's
    `connectbox` console script with the venv's Python (so the folder may be renamed after the
    venv was made: console scripts' `#!` lines keep their creation path, the launcher does
    not use them). Without `wheels/` there is nothing to set up.
    """

    def __init__(
        self, python: str | None = None, package: str = "connectbox", timeout_s: float = 900.0
    ) -> None:
        self.python = python or sys.executable
        self.package = package
        self.timeout_s = timeout_s

    def __call__(self, release_dir: Path) -> None:
        wheels = release_dir / "wheels"
        if not wheels.is_dir():
            return
        venv = release_dir / "venv"
        self._run([self.python, "-m", "venv", str(venv)], "creating the venv")
        self._run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                str(wheels),
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-input",
                self.package,
            ],
            f"installing {self.package} from wheels/",
        )
        script = venv / "bin" / "connectbox"
        entry = release_dir / ENTRY
        if entry.exists() or entry.is_symlink():
            return
        if not script.is_file():
            raise InstallFailed(f"the wheels installed no connectbox command ({script})")
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(
            "#!/bin/sh\n"
            "# Written by the updater: the venv's console script, run by the venv's Python.\n"
            'here=$(dirname "$(readlink -f "$0")")\n'
            'exec "$here/../venv/bin/python" "$here/../venv/bin/connectbox" "$@"\n'
        )
        entry.chmod(0o755)

    def _run(self, argv: list[str], what: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout_s, env=env
            )
        except subprocess.TimeoutExpired:
            raise InstallFailed(f"{what} took longer than {self.timeout_s:g} s") from None
        except OSError as exc:
            raise InstallFailed(f"{what} failed: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InstallFailed(f"{what} failed ({done.returncode}): {' | '.join(tail)}")
