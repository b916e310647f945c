"""Small documents that must survive a power cut: atomic, fsync'd JSON files (mode 0600).

A write goes to a temporary file in the same directory (created 0600, so a secret is never
readable by others even for a moment), is flushed and fsync'd, replaces the old file with
`os.replace` (atomic on POSIX) and then the directory is fsync'd so the rename itself is durable.
A reader therefore sees either the old document or the new one, never a torn one.

`write_json_atomic` is the one way the box writes such a file (enrollment record, command states,
last good policy and config, the update marker); `JsonDocument` holds one document per file. Not
for data that changes often: every write rewrites the whole file (the journal is SQLite for that
reason).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FILE_MODE = 0o600
DIR_MODE = 0o700
CREDENTIALS_FILE = "credentials.json"


def write_json_atomic(path: Path | str, data: Any, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` as JSON: temp file + fsync + os.replace + fsync(dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    payload = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600 already; a caller may ask for another mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_json(path: Path | str) -> Any | None:
    """The document at `path`, or None when there is none. A corrupt file raises ValueError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON document ({exc})") from None


def fsync_dir(directory: Path) -> None:
    """Make a rename, creation or removal in `directory` durable (where the filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def lock_exclusive(
    fd: int, wait_s: float, clock: Callable[[], float] = time.monotonic, poll_s: float = 0.05
) -> bool:
    """An exclusive flock on `fd`, waiting up to `wait_s` for another holder; False if none."""
    deadline = clock() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if clock() >= deadline:
            return False
        time.sleep(poll_s)


class JsonDocument:
    """One JSON document in one file, read and replaced whole, safe across threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    def load(self, default: Any = None) -> Any:
        with self._lock:
            data = read_json(self.path)
        return default if data is None else data

    def save(self, data: Any) -> None:
        with self._lock:
            write_json_atomic(self.path, data)

    def delete(self) -> None:
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            fsync_dir(self.path.parent)


@dataclass(frozen=True)
class Credentials:
    """What enrollment gave the box. `pending_token` is a rotated token not yet confirmed;
    `rotation_id` names the rotate_token command that produced the pending (or current) token."""

    device_id: str
    token: str
    site_id: str
    pending_token: str | None = None
    rotation_id: str | None = None


class CredentialStore:
    """The enrollment record (device id, token, site id), 0600, written atomically."""

    def __init__(self, path: Path | str) -> None:
        self._doc = JsonDocument(path)

    @property
    def path(self) -> Path:
        return self._doc.path

    def load(self) -> Credentials | None:
        data = self._doc.load()
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(Credentials)}
        values = {k: v for k, v in data.items() if k in known}
        if not all(isinstance(values.get(k), str) and values[k] for k in ("device_id", "token")):
            raise ValueError(f"{self.path}: the credentials lack a device id or token")
        values.setdefault("site_id", "")
        return Credentials(**values)

    def save(self, creds: Credentials) -> None:
        self._doc.save(asdict(creds))

    def delete(self) -> None:
        self._doc.delete()
