"""OS updates over the air (provisioning/osupdate.py, osslot.py, osimage.py), without a VM.

Each test has a box in tmp_path: the two root slots are files (`dev/cbroot-a`, `dev/cbroot-b`),
the EFI system partition a folder, the kernel command line and the OS version files. The slot
writer runs for real on a Unix socket, one thread per connection (what systemd's `Accept=yes`
does with one process each); artefacts are packed and signed with osimage.py and served by a
small HTTP server with `Range`. A "reboot" is a new OsUpdater on the same state, with another
boot id and whatever slot the test says the firmware booted; systemd-bless-boot and
systemd-boot's counting are a rename of the entry.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning import osimage, osslot
from provisioning.agent import Agent
from provisioning.osupdate import MARKER_NAME, OsUpdater, SlotClient
from provisioning.releases import UpdateRejected, http_download
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64, test_private_key
from tests.provisioning.conftest import Box
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SLOT_BYTES = 8 * MIB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves a folder with `Range: bytes=N-`; a name in `cut` gets half its body once."""

    directory = "."
    cut: set[str] = set()
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.seen.append((name, self.headers.get("Range")))
        path = Path(self.directory) / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and int(match.group(1)) < len(data):
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in self.cut:
            self.cut.discard(name)
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class World:
    """One box and one artefact server."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.layout = osslot.Layout(
            esp=tmp / "esp",
            devices=tmp / "dev",
            config=tmp / "connectbox.toml",
            cmdline=tmp / "cmdline",
            os_version=tmp / "os-version",
            max_rate=64 * MIB,
            reboot=["touch", str(tmp / "rebooted")],
        )
        self.layout.devices.mkdir()
        for slot in osimage.SLOTS:
            self.device(slot).write_bytes(slot.encode() * SLOT_BYTES)
        self.layout.entries.mkdir(parents=True)
        (self.layout.entries / "connectbox-a.conf").write_text(entry("a", "1.0"))
        self.layout.config.write_text(
            f'[policy]\ntrusted_keys = {{ {TEST_KEY_ID} = "{TEST_PUBLIC_KEY_B64}" }}\n'
        )
        self.boot("a", "1.0")
        self.state = tmp / "state"
        self.socket = tmp / "os-slot.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.socket))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()
        self.files = tmp / "files"
        self.files.mkdir()
        RangeHandler.cut, RangeHandler.seen = set(), []
        handler = type("Handler", (RangeHandler,), {"directory": str(self.files)})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        serve = functools.partial(self.server.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, daemon=True).start()
        self.reports: list[tuple[str | None, bool, str]] = []
        self.idle = True

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            osslot.serve(conn, self.layout)

    def close(self) -> None:
        self.listener.close()
        self.server.shutdown()
        self.server.server_close()

    def device(self, slot: str) -> Path:
        return self.layout.device(slot)

    def boot(self, slot: str, version: str) -> None:
        """Power on into `slot`, which holds OS `version`."""
        self.layout.cmdline.write_text(f"root=PARTLABEL=cbroot-{slot} ro connectbox.slot={slot}\n")
        self.layout.os_version.write_text(version + "\n")
        self.boot_id = uuid.uuid4().hex

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.layout.entries.iterdir())

    def rename_entry(self, slot: str, new: str) -> None:
        (old,) = [n for n in self.entries() if n.startswith(f"connectbox-{slot}+")]
        os.rename(self.layout.entries / old, self.layout.entries / new)

    def artefact(self, version: str, rootfs: bytes | None = None) -> tuple[Path, bytes]:
        rootfs = rootfs if rootfs is not None else os.urandom(MIB) + bytes(2 * MIB)
        parts = self.tmp / "parts" / version
        parts.mkdir(parents=True, exist_ok=True)
        for name, data in (("rootfs", rootfs), ("vmlinuz", b"K" * 1000), ("initrd", b"I" * 900)):
            (parts / name).write_bytes(data)
        out = self.files / f"os-{version}.tar"
        osimage.pack(
            out,
            version,
            parts / "rootfs",
            parts / "vmlinuz",
            parts / "initrd",
            {s: entry(s, version) for s in osimage.SLOTS},
        )
        return out, rootfs

    def publish(self, version: str, key: Ed25519PrivateKey | None = None, **changes: Any):
        path, rootfs = self.artefact(version)
        args = osimage.sign(path, version, key or test_private_key(), TEST_KEY_ID)
        args["url"] = f"{self.base}/{path.name}"
        args.update(changes)
        return args, rootfs

    def updater(self, **options: Any) -> OsUpdater:
        options = {
            "running": lambda: osimage.running_os(self.layout.cmdline, self.layout.os_version),
            "boot_id": lambda: self.boot_id,
            "download_rate": None,
            "retry_s": (0.05, 0.05),
            "poll_s": 0.02,
            **options,
        }
        return OsUpdater(
            self.state,
            {TEST_KEY_ID: TEST_PUBLIC_KEY_B64},
            SlotClient(self.socket, timeout_s=30),
            lambda: self.idle,
            lambda *result: self.reports.append(result),
            **options,
        )

    def marker(self) -> dict[str, Any] | None:
        path = self.state / MARKER_NAME
        return json.loads(path.read_text()) if path.exists() else None


def entry(slot: str, version: str) -> str:
    script = REPO / "image" / "boot-entry"
    return subprocess.run(
        [str(script), slot, version], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    box = World(tmp_path)
    yield box
    box.close()


def staged(world: World, updater: OsUpdater, args: dict, command_id: str = "c-1") -> None:
    """apply(), then wait until the update asked for its reboot."""
    assert updater.apply(args, command_id) is None
    assert wait_for(lambda: (world.tmp / "rebooted").exists() or world.reports, 30), world.marker()
    assert not world.reports, world.reports


# The whole way: A -> B, and back when B does not come up.


def test_a_to_b_writes_the_inactive_slot_reboots_once_and_reports_from_b(world: World) -> None:
    args, rootfs = world.publish("2.0")
    updater = world.updater()
    staged(world, updater, args)
    assert world.device("b").read_bytes()[: len(rootfs)] == rootfs
    assert world.device("a").read_bytes() == b"a" * SLOT_BYTES  # the running slot: untouched
    assert world.entries() == ["connectbox-a.conf", "connectbox-b+3.conf"]
    assert (world.layout.entries / "connectbox-b+3.conf").read_text() == entry("b", "2.0")
    assert (world.layout.esp / "connectbox" / "b" / "vmlinuz").read_bytes() == b"K" * 1000
    assert not list((world.state / "os-update").iterdir())  # the download is gone once written
    assert world.marker()["state"] == "rebooting"
    updater.stop()

    world.boot("b", "2.0")  # systemd-boot tries the new entry ...
    world.rename_entry("b", "connectbox-b+2-1.conf")
    after = world.updater()
    after.start()
    assert wait_for(
        lambda: after.snapshot() is not None and after.snapshot()["state"] == "rebooting"
    )
    assert not world.reports  # ... and nothing is said before its boot counts as good
    world.rename_entry("b", "connectbox-b.conf")  # systemd-bless-boot, after the boot check
    assert wait_for(lambda: world.reports, 10)
    ((command_id, ok, detail),) = world.reports
    assert command_id == "c-1" and ok, detail
    assert detail.startswith("updated OS 1.0 -> 2.0: slot b passed its boot check")
    assert world.marker() is None
    after.stop()
    world.updater().start()  # once more: nothing left to report
    assert len(world.reports) == 1


def test_a_slot_that_does_not_come_up_falls_back_and_the_old_system_reports(world: World) -> None:
    args, _ = world.publish("2.0")
    staged(world, world.updater(), args)
    world.rename_entry("b", "connectbox-b+0-3.conf")  # three failed attempts, then slot A
    world.boot("a", "1.0")
    world.updater().start()
    assert wait_for(lambda: world.reports, 10)
    ((command_id, ok, detail),) = world.reports
    assert command_id == "c-1" and not ok
    assert "OS 2.0 on slot b did not pass its boot check" in detail
    assert "fell back to OS 1.0 on slot a" in detail and "connectbox-b+0-3.conf" in detail


def test_a_restart_before_the_reboot_asks_for_the_reboot_again(world: World) -> None:
    args, _ = world.publish("2.0")
    updater = world.updater()
    staged(world, updater, args)
    updater.stop()
    (world.tmp / "rebooted").unlink()
    world.updater().start()  # same boot id: the reboot never happened
    assert wait_for(lambda: (world.tmp / "rebooted").exists())
    assert not world.reports


def test_the_reboot_waits_for_an_idle_moment(world: World) -> None:
    world.idle = False
    args, _ = world.publish("2.0")
    updater = world.updater()
    assert updater.apply(args, "c-1") is None
    assert wait_for(lambda: (world.marker() or {}).get("state") == "staged", 30)
    assert not wait_for(lambda: (world.tmp / "rebooted").exists(), 0.5)
    world.idle = True
    assert wait_for(lambda: (world.tmp / "rebooted").exists())
    assert world.marker()["idle_wait_s"] > 0.4


# The download.


def test_a_cut_download_resumes_with_range(world: World) -> None:
    args, _ = world.publish("2.0")
    name = args["url"].rsplit("/", 1)[-1]
    RangeHandler.cut.add(name)
    staged(world, world.updater(), args)
    (first, first_range), (second, second_range) = RangeHandler.seen
    assert first == second == name and first_range is None
    assert second_range == f"bytes={args['size'] // 2}-"


def test_http_download_continues_a_partial_file_or_starts_over(world: World, tmp_path) -> None:
    data = os.urandom(300_000)
    (world.files / "blob").write_bytes(data)
    dest = tmp_path / "blob.part"
    dest.write_bytes(data[:100_000])
    http_download(f"{world.base}/blob", dest, resume=True)
    assert dest.read_bytes() == data and RangeHandler.seen[-1] == ("blob", "bytes=100000-")
    dest.write_bytes(b"x" * 10)
    http_download(f"{world.base}/blob", dest)  # not resuming: from the start
    assert dest.read_bytes() == data and RangeHandler.seen[-1] == ("blob", None)
    http_download(f"{world.base}/blob", dest, resume=True)  # all there: 200, the same again
    assert dest.read_bytes() == data


# Refusals: nothing is downloaded or written for a command that does not verify.


def _other_key(args: dict) -> dict:
    forged = osimage.sign(Path(args["_path"]), args["version"], Ed25519PrivateKey.generate(), "x")
    return {"signature": forged["signature"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda a: {"signature": "A" * 88}, "signature is not 64 bytes"),
        (_other_key, "signature does not verify with key 'test-k1'"),
        (lambda a: {"key_id": "prod-k9"}, "unknown key_id 'prod-k9'"),
        (lambda a: {"version": "0.9"}, "OS 0.9 is not newer than the running 1.0"),
        (lambda a: {"size": 0}, "size is not a positive number"),
        (lambda a: {"url": "http://example.com/os.tar"}, "url must be https"),
        (lambda a: {"sha256": "12"}, "sha256 is not 64 hex digits"),
    ],
)
def test_a_command_that_does_not_verify_is_refused_before_any_download(
    world: World, change, reason: str
) -> None:
    args, _ = world.publish("2.0")
    args["_path"] = str(world.files / "os-2.0.tar")
    args.update(change(args))
    ok, detail = world.updater().apply(args, "c-1")
    assert not ok and detail.startswith("rejected: ") and reason in detail, detail
    assert RangeHandler.seen == [] and world.marker() is None
    assert world.entries() == ["connectbox-a.conf"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"size": 100}, "download: artefact is 1"),  # ... bytes, more than 100
        ({"sha256": "0" * 64}, "download: sha256 mismatch"),
    ],
)
def test_an_artefact_unlike_its_command_is_refused_after_the_download(
    world: World, change: dict, reason: str
) -> None:
    args, _ = world.publish("2.0")
    args.update(change)
    if "sha256" in change:  # a correctly signed hash of something else
        args.update(
            osimage.sign(world.files / "os-2.0.tar", "2.0", test_private_key(), TEST_KEY_ID)
        )
        args["sha256"], args["signature"] = change["sha256"], _sign_hex(change["sha256"])
    assert world.updater().apply(args, "c-1") is None
    assert wait_for(lambda: world.reports, 30)
    ((_, ok, detail),) = world.reports
    assert not ok and detail.startswith(reason) and detail.endswith("still running OS 1.0")
    assert world.entries() == ["connectbox-a.conf"]
    assert world.device("b").read_bytes() == b"b" * SLOT_BYTES
    assert world.marker() is None and not list((world.state / "os-update").iterdir())


def _sign_hex(digest: str) -> str:
    import base64

    return base64.b64encode(test_private_key().sign(digest.encode())).decode()


def test_the_version_already_running_succeeds_without_doing_anything(world: World) -> None:
    args, _ = world.publish("2.0")
    for same in ({**args, "version": "1.0"}, {"version": "1.0", "url": "ftp://x", "size": -1}):
        assert world.updater().apply(same, "c-1") == (True, "already running OS 1.0; nothing to do")
    assert RangeHandler.seen == [] and world.marker() is None


def test_a_second_update_while_one_runs_is_busy(world: World) -> None:
    world.idle = False
    args, _ = world.publish("2.0")
    updater = world.updater()
    assert updater.apply(args, "c-1") is None
    other, _ = world.publish("3.0")
    ok, detail = updater.apply(other, "c-2")
    assert not ok and detail.startswith("busy: the update to OS 2.0 (command c-1)")
    assert updater.apply(args, "c-1") is None  # the same command again: still going


def test_without_a_slot_writer_it_is_refused(world: World) -> None:
    args, _ = world.publish("2.0")
    world.listener.close()
    world.socket.unlink()
    ok, detail = world.updater().apply(args, "c-1")
    assert not ok and "no OS slot writer on this box" in detail


# The slot writer trusts nothing the service hands it.


def _install(world: World, args: dict, path: Path) -> dict:
    with open(path, "rb") as f:
        return osslot.install(world.layout, args, f.fileno())


def test_the_slot_writer_checks_the_signature_itself(world: World) -> None:
    args, _ = world.publish("2.0", key=Ed25519PrivateKey.generate())
    with pytest.raises(UpdateRejected, match="signature does not verify"):
        _install(world, args, world.files / "os-2.0.tar")
    assert world.device("b").read_bytes() == b"b" * SLOT_BYTES


def test_the_slot_writer_writes_only_the_inactive_slot(world: World) -> None:
    args, _ = world.publish("2.0")
    with pytest.raises(UpdateRejected, match="slot a is not the inactive slot"):
        _install(world, {**args, "slot": "a"}, world.files / "os-2.0.tar")
    world.layout.cmdline.write_text("root=/dev/sda1 ro\n")  # not booted from a slot
    with pytest.raises(UpdateRejected, match="the running slot is unknown"):
        _install(world, args, world.files / "os-2.0.tar")
    assert world.device("a").read_bytes() == b"a" * SLOT_BYTES
    assert world.device("b").read_bytes() == b"b" * SLOT_BYTES


def test_a_changed_artefact_never_gets_a_boot_entry(world: World) -> None:
    args, _ = world.publish("2.0")
    path = world.files / "os-2.0.tar"
    data = bytearray(path.read_bytes())
    data[-2000] ^= 1  # in the gzip'd root filesystem, after the signed hash was taken
    path.write_bytes(bytes(data))
    with pytest.raises(UpdateRejected):
        _install(world, args, path)
    assert world.entries() == ["connectbox-a.conf"]
    assert list((world.layout.esp / "connectbox" / "b").iterdir()) == []


def test_an_interrupted_write_leaves_no_entry_and_is_done_again_after_a_restart(
    world: World,
) -> None:
    args, rootfs = world.publish("2.0")
    (world.layout.entries / "connectbox-b.conf").write_text(entry("b", "0.5"))  # an old OS
    world.layout.max_rate, world.layout.sync_bytes = MIB, 256 * 1024  # a write of a moment
    path = world.files / "os-2.0.tar"
    request = {"action": "install", **{k: args[k] for k in ("version", "sha256", "signature")}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn, open(path, "rb") as f:
        conn.connect(str(world.socket))
        socket.send_fds(conn, [(json.dumps(request) + "\n").encode()], [f.fileno()])
        assert b'"written"' in conn.recv(4096)  # writing ... and the service dies
    boot = world.layout.esp / "connectbox" / "b"
    assert wait_for(lambda: not list(boot.iterdir()), 10)  # stopped, its kernel removed
    assert world.entries() == ["connectbox-a.conf"]  # the old OS's entry went first
    world.layout.max_rate = 64 * MIB
    # Its marker said "write", its download was complete: the next start writes again.
    _marker(world, args, "write", attempts=1)
    shutil.copy(path, world.state / "os-update" / f"{args['sha256']}.tar")
    updater = world.updater()
    updater.start()
    assert wait_for(lambda: (world.tmp / "rebooted").exists(), 30), world.reports
    updater.stop()
    assert world.marker()["attempts"] == 2 and world.marker()["state"] == "rebooting"
    assert world.entries() == ["connectbox-a.conf", "connectbox-b+3.conf"]
    assert world.device("b").read_bytes()[: len(rootfs)] == rootfs
    assert RangeHandler.seen == []  # nothing downloaded again


def _marker(world: World, args: dict, state: str, attempts: int) -> None:
    (world.state / "os-update").mkdir(parents=True)
    marker = {**args, "command_id": "c-1", "from_version": "1.0", "from_slot": "a", "slot": "b",
              "state": state, "attempts": attempts}  # fmt: skip
    (world.state / MARKER_NAME).write_text(json.dumps(marker))


def test_a_write_interrupted_too_often_is_given_up(world: World) -> None:
    args, _ = world.publish("2.0")
    _marker(world, args, "write", attempts=3)
    world.updater().start()
    assert wait_for(lambda: world.reports, 10)
    ((_, ok, detail),) = world.reports
    assert not ok and detail.startswith("interrupted 3 times")


def test_reboot_only_into_the_inactive_slot_with_attempts_left(world: World) -> None:
    with pytest.raises(UpdateRejected, match="has no boot entry with attempts left"):
        osslot.reboot(world.layout, {"slot": "b"})
    with pytest.raises(UpdateRejected, match="not the inactive slot"):
        osslot.reboot(world.layout, {"slot": "a"})
    assert not (world.tmp / "rebooted").exists()


def test_status_reads_the_boot_entries(world: World) -> None:
    (world.layout.entries / "connectbox-b+0-3.conf").write_text(entry("b", "2.0"))
    assert SlotClient(world.socket).status() == {
        "done": True,
        "ok": True,
        "running": {"slot": "a", "version": "1.0"},
        "slots": {
            "a": {"state": "good", "entry": "connectbox-a.conf", "version": "1.0", "tries_done": 0},
            "b": {
                "state": "bad",
                "entry": "connectbox-b+0-3.conf",
                "version": "2.0",
                "tries_done": 3,
            },  # fmt: skip
        },
    }


# Exactly once, with the real agent and host, across a restart.


def test_the_result_reaches_the_host_once_across_a_restart(world: World, host, box: Box) -> None:
    args, _ = world.publish("2.0")
    command_id = host.store.queue_command(box.creds.device_id, "update_os", args)

    def run(updater: OsUpdater) -> Agent:
        agent = Agent(
            box.link,
            box.data_dir,
            lambda: {},
            {"update_os": lambda a: _defer(updater.apply(a, agent.running_command_id))},
            on_interrupted=lambda e: _defer(None) if updater.pending(e["command_id"]) else None,
        )
        updater.report = lambda cid, ok, detail: agent.complete(cid, ok, detail, "update_os")
        return agent

    updater = world.updater()
    agent = run(updater)
    agent.heartbeat_now()
    assert wait_for(lambda: (world.tmp / "rebooted").exists(), 30)
    updater.stop()
    world.boot("b", "2.0")
    world.rename_entry("b", "connectbox-b.conf")
    updater = world.updater()
    agent = run(updater)
    agent.heartbeat_now()  # the command was "started": deferred, not "interrupted"
    updater.start()
    assert wait_for(lambda: _result(host, command_id) is not None, 10)
    agent.heartbeat_now()
    agent.heartbeat_now()
    assert _result(host, command_id)["ok"] is True
    posts = [c for c in host.recorder.snapshot() if c.path.endswith(f"/{command_id}/result")]
    assert [c.status for c in posts] == [200]


def _defer(outcome: Any) -> Any:
    from provisioning.agent import DEFER

    return DEFER if outcome is None else outcome


def _result(host, command_id: str) -> dict | None:
    return {c["command_id"]: c["result"] for c in host.store.commands()}[command_id]


# The artefact.


def test_artefact_is_reproducible_and_lists_its_parts(world: World) -> None:
    first, rootfs = world.artefact("2.0", rootfs=b"\0" * MIB)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    again, _ = world.artefact("2.0", rootfs=b"\0" * MIB)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest
    stream = osimage.ArtefactStream(open(first, "rb"))  # noqa: SIM115
    size, reader = stream.member(osimage.MANIFEST, osimage.MAX_MANIFEST_BYTES)
    manifest = osimage.parse_manifest(reader.read(size))
    assert manifest.version == "2.0"
    assert manifest.files["rootfs"] == {"size": MIB, "sha256": hashlib.sha256(rootfs).hexdigest()}
    for name in (osimage.KERNEL, osimage.INITRD, osimage.ROOTFS):
        stream.member(name, 10 * MIB)
    assert stream.finish() == digest


def test_a_boot_entry_must_boot_its_own_slot() -> None:
    osimage.check_entry(entry("b", "2.0"), "b")
    with pytest.raises(UpdateRejected):
        osimage.check_entry(entry("a", "2.0"), "b")
    with pytest.raises(UpdateRejected):
        osimage.check_entry(entry("b", "2.0").replace("cbroot-b", "cbdata"), "b")


@pytest.mark.parametrize(
    ("older", "newer"),
    [("1.0", "2.0"), ("2027.1", "2027.1.1"), ("2027.9", "2027.10"), ("0.1.0", "0.1.0.1")],
)
def test_os_versions_go_forward(older: str, newer: str) -> None:
    assert osimage.newer(newer, older) and not osimage.newer(older, newer)
    assert not osimage.newer(older, older)


def test_keygen_and_pack_from_the_command_line(world: World, tmp_path: Path, capsys) -> None:
    key = tmp_path / "slot.key"
    assert osimage.main(["keygen", str(key)]) == 0
    public = capsys.readouterr().out.strip()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    parts = tmp_path / "p"
    parts.mkdir()
    for name in ("rootfs", "vmlinuz", "initrd", "a.conf", "b.conf"):
        (parts / name).write_text(entry(name[0], "3.0") if name.endswith(".conf") else name)
    out = tmp_path / "os.tar"
    argv = ["pack", "--version", "3.0", "--rootfs", str(parts / "rootfs"), "--kernel",
            str(parts / "vmlinuz"), "--initrd", str(parts / "initrd"), "--entry",
            f"a={parts / 'a.conf'}", "--entry", f"b={parts / 'b.conf'}", "--key", str(key),
            "--key-id", "ci", "--out", str(out)]  # fmt: skip
    assert osimage.main(argv) == 0
    args = json.loads((tmp_path / "os.tar.json").read_text())
    assert args["size"] == out.stat().st_size and args["key_id"] == "ci"
    from provisioning.releases import verify_signature

    verify_signature(args["sha256"].encode(), args["signature"], {"ci": public}, "ci")


def test_a_power_cut_after_the_entry_was_written_boots_the_new_slot_which_is_not_written_again(
    world: World,
) -> None:
    args, _ = world.publish("2.0")
    updater = world.updater()
    staged(world, updater, args)
    updater.stop()
    marker = {**world.marker(), "state": "write"}  # it never heard the write had finished
    (world.state / MARKER_NAME).write_text(json.dumps(marker))
    world.boot("b", "2.0")  # systemd-boot found connectbox-b+3.conf: slot B runs
    world.rename_entry("b", "connectbox-b.conf")
    world.updater().start()
    assert wait_for(lambda: world.reports, 10)
    ((_, ok, detail),) = world.reports
    assert ok and detail.startswith("updated OS 1.0 -> 2.0: slot b passed its boot check"), detail
    assert world.device("a").read_bytes() == b"a" * SLOT_BYTES  # the old slot: untouched
    assert world.entries() == ["connectbox-a.conf", "connectbox-b.conf"]
