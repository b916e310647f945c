"""OS update artefacts (the `update_os` command): their format, packing, signing and reading.

The slot artefact `connectbox-os-<version>.tar` is an uncompressed POSIX tar, so that the box
reads it once, front to back, while it writes the slot. Its members, in this order:

    OS.json          {"format": 1, "version": "2027.1",
                      "entries": {"a": "<systemd-boot entry>", "b": "..."},
                      "kernel": {"size": N, "sha256": hex}, "initrd": {"size": N, "sha256": hex},
                      "rootfs": {"size": <bytes unpacked>, "sha256": <hex of the unpacked image>}}
    vmlinuz          the new system's kernel
    initrd.img       its initrd
    rootfs.img.gz    its root filesystem (ext4, shrunk to its contents), gzip'd

`entries` are the new system's own boot entries for either slot (image/boot-entry), so a new
OS brings its own kernel command line. The provider publishes the file with its `size`,
`sha256` (of the whole file) and `signature`, Ed25519 over that sha256 hex string
(host-api.md), signed with a key the box trusts for its policy (`[policy] trusted_keys`).

`python -m provisioning.osimage pack ...` is what `scripts/build-image --slot-key` runs;
`keygen` makes a throw-away signing key for tests. Nothing here imports `app/`.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning.releases import UpdateRejected, check_version, file_sha256, public_key_b64

FORMAT = 1
MANIFEST = "OS.json"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOTFS = "rootfs.img.gz"
MEMBERS = (MANIFEST, KERNEL, INITRD, ROOTFS)
SLOTS = ("a", "b")
MAX_MANIFEST_BYTES = 256 * 1024
MAX_BOOT_FILE_BYTES = 96 * 1024 * 1024  # a kernel or an initrd: the ESP is 128 MiB
CHUNK = 1024 * 1024
# Where the running slot says what it is (scripts/build-image writes it; the kernel command
# line of its boot entry says which slot it booted from).
OS_VERSION_FILE = Path("/usr/lib/connectbox/os-version")
CMDLINE = Path("/proc/cmdline")


def running_os(
    cmdline: Path = CMDLINE, version_file: Path = OS_VERSION_FILE
) -> tuple[str | None, str | None]:
    """(slot "a"/"b", OS version) of the running system; None where it does not say."""
    slot = None
    for word in read_text(cmdline).split():
        if word.startswith("connectbox.slot="):
            slot = word.split("=", 1)[1] or None
    return slot, read_text(version_file).strip() or None


def read_text(path: Path) -> str:
    """The file's text, or "" when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders OS versions the way systemd-boot orders the entries' `version` for the usual
    forms (`2027.1` < `2027.1.1` < `2027.2` < `2027.10`): runs of digits compare as numbers,
    other runs as text, the separators do not count."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts)


def newer(version: str, than: str) -> bool:
    return version_key(version) > version_key(than)


# Building.


def pack(
    out: Path,
    version: str,
    rootfs: Path,
    kernel: Path,
    initrd: Path,
    entries: dict[str, str],
) -> Path:
    """Write the artefact of `version` to `out` (reproducible: fixed times and owners)."""
    check_version(version)
    if sorted(entries) != list(SLOTS):
        raise ValueError("boot entries for slots a and b are needed")
    for slot, entry in entries.items():
        check_entry(entry, slot)
    out.parent.mkdir(parents=True, exist_ok=True)
    packed = out.with_name(out.name + ".rootfs.gz")
    with (
        open(rootfs, "rb") as src,
        open(packed, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        for block in iter(lambda: src.read(CHUNK), b""):
            gz.write(block)
    manifest = {
        "format": FORMAT,
        "version": version,
        "entries": entries,
        "kernel": _describe(kernel),
        "initrd": _describe(initrd),
        "rootfs": _describe(rootfs),
    }
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(MANIFEST, len(data)), io.BytesIO(data))
            for name, path in ((KERNEL, kernel), (INITRD, initrd), (ROOTFS, packed)):
                with open(path, "rb") as f:
                    tar.addfile(_info(name, path.stat().st_size), f)
        os.replace(tmp, out)
    finally:
        packed.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def _info(name: str, size: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = size, 0o644, 0
    member.uname = member.gname = "root"
    return member


def sign(path: Path, version: str, private_key: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    """The `update_os` args that vouch for the artefact at `path` (all but `url`)."""
    digest = file_sha256(path)
    return {
        "version": version,
        "size": path.stat().st_size,
        "sha256": digest,
        "signature": base64.b64encode(private_key.sign(digest.encode("ascii"))).decode("ascii"),
        "key_id": key_id,
    }


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def check_entry(entry: str, slot: str) -> None:
    """A boot entry must boot the slot it is written for, nothing else (UpdateRejected)."""
    lines = {line.split(" ", 1)[0]: line for line in entry.splitlines() if line.strip()}
    wanted = {
        "linux": f"linux /connectbox/{slot}/vmlinuz",
        "initrd": f"initrd /connectbox/{slot}/initrd.img",
    }
    options = lines.get("options", "").split()
    if (
        any(lines.get(key) != line for key, line in wanted.items())
        or f"root=PARTLABEL=cbroot-{slot}" not in options
        or f"connectbox.slot={slot}" not in options
        or len(entry) > 4096
        or not all(c.isprintable() or c == "\n" for c in entry)
    ):
        raise UpdateRejected(f"the artefact's boot entry for slot {slot} does not boot slot {slot}")


# Reading (the slot writer's single pass).


@dataclass
class Manifest:
    version: str
    entries: dict[str, str]
    files: dict[str, dict[str, Any]]  # kernel, initrd, rootfs: {"size", "sha256"}


def parse_manifest(data: bytes) -> Manifest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise UpdateRejected(f"{MANIFEST} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UpdateRejected(f"{MANIFEST} is not OS artefact format {FORMAT}")
    version = check_version(doc.get("version"))
    entries = doc.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(entries.get(s), str) for s in SLOTS):
        raise UpdateRejected(f"{MANIFEST} lacks the boot entries")
    files: dict[str, dict[str, Any]] = {}
    for name in ("kernel", "initrd", "rootfs"):
        spec = doc.get(name)
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("size"), int)
            or spec["size"] <= 0
            or not re.fullmatch(r"[0-9a-f]{64}", str(spec.get("sha256")))
        ):
            raise UpdateRejected(f"{MANIFEST}: {name} has no size and sha256")
        files[name] = spec
    return Manifest(version, {s: entries[s] for s in SLOTS}, files)


class ArtefactStream:
    """Reads an artefact once, front to back, hashing every byte it reads: the caller trusts
    nothing it got from here until `finish()` returned the signed sha256."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        # A stream ("r|"): no seeking back, so every byte is hashed exactly once. It holds no
        # file of its own (the caller owns `raw`), hence no context manager.
        self._tar = tarfile.open(fileobj=self, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
        self._members: Iterator[tarfile.TarInfo] = iter(self._tar)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        return data

    def member(self, name: str, max_bytes: int) -> tuple[int, IO[bytes]]:
        """The next member, which must be `name`: (size, a reader of its bytes)."""
        try:
            info = next(self._members)
        except (StopIteration, tarfile.TarError, EOFError, OSError, zlib.error):
            raise UpdateRejected(f"the artefact ends before {name}") from None
        if info.name != name or not info.isreg():
            raise UpdateRejected(f"the artefact has {info.name!r} where {name} belongs")
        if info.size > max_bytes:
            raise UpdateRejected(f"{name} is {info.size} bytes, more than {max_bytes}")
        reader = self._tar.extractfile(info)
        assert reader is not None
        return info.size, reader

    def finish(self) -> str:
        """Read to the end; the sha256 hex of every byte of the artefact."""
        while self.read(CHUNK):
            pass
        return self._digest.hexdigest()


def copy_checked(
    reader: IO[bytes], write: Callable[[bytes], None], spec: dict[str, Any], what: str
) -> None:
    """Copy a kernel or initrd, checking it against the manifest's size and sha256."""
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: reader.read(CHUNK), b""):
        digest.update(block)
        size += len(block)
        write(block)
    if size != spec["size"] or digest.hexdigest() != spec["sha256"]:
        raise UpdateRejected(f"{what} does not match the artefact's {MANIFEST}")


def gunzip_blocks(reader: IO[bytes], limit: int) -> Iterator[bytes]:
    """The unpacked bytes of a gzip member, in blocks; UpdateRejected past `limit` bytes."""
    inflate = zlib.decompressobj(wbits=31)
    out = 0
    for block in iter(lambda: reader.read(CHUNK), b""):
        data = inflate.decompress(block, CHUNK * 4)
        while data:
            out += len(data)
            if out > limit:
                raise UpdateRejected(f"the root filesystem unpacks to more than {limit} bytes")
            yield data
            data = inflate.decompress(inflate.unconsumed_tail, CHUNK * 4)
    if not inflate.eof:
        raise UpdateRejected("the root filesystem's gzip stream is cut short")


# The command line (scripts/build-image, scripts/test-image).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.osimage", description="OS update artefacts (update_os)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack and sign a slot artefact")
    p.add_argument("--version", required=True)
    p.add_argument("--rootfs", type=Path, required=True)
    p.add_argument("--kernel", type=Path, required=True)
    p.add_argument("--initrd", type=Path, required=True)
    p.add_argument("--entry", action="append", default=[], metavar="SLOT=FILE", required=True)
    p.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    p.add_argument("--key-id", required=True)
    p.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("keygen", help="a new signing key (PEM, 0600); prints its public key")
    k.add_argument("out", type=Path)
    opts = parser.parse_args(argv)
    if opts.command == "keygen":
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(opts.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        print(public_key_b64(key))
        return 0
    entries = {}
    for item in opts.entry:
        slot, _, path = item.partition("=")
        entries[slot] = Path(path).read_text()
    key = load_private_key(opts.key)
    artefact = pack(opts.out, opts.version, opts.rootfs, opts.kernel, opts.initrd, entries)
    args = sign(artefact, opts.version, key, opts.key_id)
    side = artefact.with_name(artefact.name + ".json")
    side.write_text(json.dumps(args, indent=1) + "\n")
    print(json.dumps(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
