"""Software update with automatic rollback (provisioning/updates.py), against real processes.

Each test has a release root in tmp_path, signed artefacts served by a local http.server on
127.0.0.1, and a small supervisor standing in for systemd: its `restart()` (re)starts
`<root>/current/bin/connectbox run` as a child process, like ExecStart through the symlink. The
test releases' `bin/connectbox` is a tiny Python script serving `/healthz` (or failing to).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning import releases
from provisioning.releases import (
    UpdateRejected,
    VenvInstaller,
    check_url,
    make_release,
    safe_extract,
    sign_artefact,
    verify_artefact,
)
from provisioning.updates import MARKER_NAME, HealthCheckFailed, Updater, main
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64, test_private_key
from tests.clock import FakeClock
from tests.imports import imports_of
from tests.ports import free_port

TRUSTED = {TEST_KEY_ID: TEST_PUBLIC_KEY_B64}
REPO = Path(__file__).resolve().parents[2]

SERVICE = '''#!{python}
"""Release {version} of the test service ({mode})."""
import http.server, os, sys

VERSION, MODE = {version!r}, {mode!r}
if MODE == "crash":
    sys.exit("release " + VERSION + ": cannot start")


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if MODE == "good" and self.path == "/healthz" else 503
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(os.environ["CB_PORT"])), Health).serve_forever()
'''


class Supervisor:
    """systemd's part: one child process started from `<root>/current/bin/connectbox run`."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.restarted_at: list[float] = []

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.restarted_at.append(time.monotonic())
        env = {**os.environ, "CB_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [str(self.root / "current" / "bin" / "connectbox"), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def answer(self) -> tuple[int, str] | None:
        try:
            reply = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
        except requests.RequestException:
            return None
        return reply.status_code, reply.text

    def health(self) -> tuple[bool, str]:
        if self.proc is None:
            return False, "not started"
        code = self.proc.poll()
        if code is not None:
            raise HealthCheckFailed(f"the service exited with status {code}")
        got = self.answer()
        if got is None:
            return False, "no answer on /healthz"
        return got[0] == 200, f"/healthz answered {got[0]} ({got[1]})"

    def serving(self, timeout_s: float = 5.0) -> str | None:
        """The version answering 200 on /healthz, waiting up to `timeout_s` for one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.answer()
            if got is not None and got[0] == 200:
                return got[1]
            time.sleep(0.05)
        return None


class ArtefactHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the artefacts folder; `/truncated/<name>` promises the whole file and sends half."""

    def do_GET(self) -> None:
        if self.path.startswith("/truncated/"):
            data = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


class Site:
    """One test's world: the root, the artefacts server, the supervised service."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "software"
        self.root.mkdir()
        self.artefacts = tmp_path / "artefacts"
        self.artefacts.mkdir()
        handler = functools.partial(ArtefactHandler, directory=str(self.artefacts))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.service = Supervisor(self.root, free_port())

    def close(self) -> None:
        self.service.stop()
        self.server.shutdown()
        self.server.server_close()

    def source(self, version: str, mode: str = "good") -> Path:
        src = self.tmp / "src" / f"{version}-{mode}"
        (src / "bin").mkdir(parents=True, exist_ok=True)
        script = src / "bin" / "connectbox"
        script.write_text(SERVICE.format(python=sys.executable, version=version, mode=mode))
        script.chmod(0o755)
        (src / "share").mkdir(exist_ok=True)
        (src / "share" / "NOTES.txt").write_text(f"release {version}\n")
        return src

    def publish(self, version: str, mode: str = "good", key: Ed25519PrivateKey | None = None):
        artefact = make_release(self.source(version, mode), version, self.artefacts)
        return self.args_for(artefact, version, key)

    def args_for(self, artefact: Path, version: str, key: Ed25519PrivateKey | None = None):
        signed = sign_artefact(artefact, key or test_private_key(), TEST_KEY_ID)
        return {
            "version": version,
            "url": f"{self.base}/{artefact.name}",
            "sha256": signed["sha256"],
            "signature": signed["signature"],
            "key_id": signed["key_id"],
        }

    def updater(self, **overrides: Any) -> Updater:
        options: dict[str, Any] = {
            "restart": self.service.restart,
            "health_check": self.service.health,
            "is_idle": lambda: True,
            "health_deadline_s": 3.0,
            "idle_timeout_s": 2.0,
            "poll_s": 0.05,
            "health_passes": 2,
        }
        options.update(overrides)
        return Updater(self.root, TRUSTED, **options)

    def bootstrap(self, version: str = "1.0.0") -> None:
        """The first release, installed by the updater itself on an empty root."""
        ok, detail = self.updater().apply(self.publish(version))
        assert ok, detail
        assert self.service.serving() == version

    def state(self) -> list[str]:
        """Everything under the root: names, symlink targets, file sizes."""
        seen = []
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            for name in sorted(dirs + files):
                path = Path(folder) / name
                rel = path.relative_to(self.root).as_posix()
                if path.is_symlink():
                    seen.append(f"{rel} -> {os.readlink(path)}")
                elif path.is_file():
                    seen.append(f"{rel} ({path.stat().st_size})")
                else:
                    seen.append(f"{rel}/")
        return sorted(seen)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    world = Site(tmp_path)
    yield world
    world.close()


def marker(site: Site) -> dict[str, Any] | None:
    path = site.root / MARKER_NAME
    return json.loads(path.read_text()) if path.exists() else None


# The update itself.


def test_good_release_is_installed_switched_to_and_reported(site: Site) -> None:
    site.bootstrap("1.0.0")
    updater = site.updater()
    ok, detail = updater.apply(site.publish("1.1.0"), command_id="c-1")
    assert ok, detail
    assert detail.startswith("updated 1.0.0 -> 1.1.0: healthy")
    assert site.service.serving() == "1.1.0"
    assert os.readlink(site.root / "current") == "releases/1.1.0"
    assert os.readlink(site.root / "previous") == "releases/1.0.0"
    assert (updater.current_version(), updater.previous_version()) == ("1.1.0", "1.0.0")
    assert sorted(p.name for p in (site.root / "releases").iterdir()) == ["1.0.0", "1.1.0"]
    assert (site.root / "releases" / "1.1.0" / "RELEASE.json").is_file()
    assert sorted(p.name for p in site.root.iterdir()) == ["current", "previous", "releases"]
    # The next update keeps only current and previous.
    ok, detail = updater.apply(site.publish("1.2.0"))
    assert ok, detail
    assert sorted(p.name for p in (site.root / "releases").iterdir()) == ["1.1.0", "1.2.0"]
    assert updater.apply(site.publish("1.2.0")) == (True, "already running 1.2.0")


@pytest.mark.parametrize("mode", ["unhealthy", "crash"])
def test_failing_release_is_rolled_back_and_the_old_one_serves(site: Site, mode: str) -> None:
    site.bootstrap("1.0.0")
    before = site.state()
    updater = site.updater()
    began = time.monotonic()
    ok, detail = updater.apply(site.publish("1.1.0", mode), command_id="c-2")
    assert not ok
    assert "1.1.0 failed its health check" in detail
    assert "rolled back to 1.0.0, healthy again" in detail
    assert site.service.serving() == "1.0.0"
    assert site.state() == before  # the bad release is gone, the links are as they were
    assert marker(site) is None
    switched, rolled_back = site.service.restarted_at[-2:]
    print(
        f"\n[{mode}] time to rollback: {detail.split('healthy again ')[1].split(' s')[0]} s"
        f" from the switch until 1.0.0 answered (restart into the bad release"
        f" {switched - began:.2f} s after apply(), rollback restart"
        f" {rolled_back - switched:.2f} s after that); detail: {detail}"
    )
    if mode == "unhealthy":
        assert "not healthy within 3 s" in detail
    else:
        assert "exited with status" in detail
        assert rolled_back - switched < 2.5  # no need to wait for the deadline


def test_a_failed_switch_is_undone(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.bootstrap("1.0.0")
    before = site.state()
    restarts = site.service.restarts
    real_replace = os.replace

    def full_disk(src: Any, dst: Any) -> None:
        if Path(dst).name == "current" and "1.1.0" in os.readlink(src):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    ok, detail = site.updater().apply(site.publish("1.1.0"))
    assert not ok
    assert detail.startswith("switching to 1.1.0 failed ([Errno 28] No space left on device)")
    monkeypatch.undo()
    assert site.state() == before
    assert site.service.restarts == restarts


def test_first_release_without_previous_cannot_roll_back(site: Site) -> None:
    ok, detail = site.updater(health_deadline_s=0.5).apply(site.publish("1.0.0", "unhealthy"))
    assert not ok
    assert "no previous release to roll back to; 1.0.0 stays" in detail
    assert os.readlink(site.root / "current") == "releases/1.0.0"


# Nothing changes when the artefact is not the one the provider signed.


def _wrong_hash(site: Site, args: dict) -> dict:
    return {**args, "sha256": hashlib.sha256(b"something else").hexdigest()}


def _bad_signature(site: Site, args: dict) -> dict:
    artefact = site.artefacts / args["url"].rsplit("/", 1)[1]
    forged = sign_artefact(artefact, Ed25519PrivateKey.generate())
    return {**args, "signature": forged["signature"]}


def _truncated(site: Site, args: dict) -> dict:
    return {**args, "url": args["url"].replace(site.base, site.base + "/truncated")}


def _unknown_key(site: Site, args: dict) -> dict:
    return {**args, "key_id": "k-elsewhere"}


def _missing(site: Site, args: dict) -> dict:
    return {**args, "url": site.base + "/no-such-artefact.tar.gz"}


def _plain_http_elsewhere(site: Site, args: dict) -> dict:
    return {**args, "url": "http://updates.example.com/connectbox-1.1.0.tar.gz"}


def _traversal(site: Site, args: dict) -> dict:
    """A tarball that is properly signed but tries to write outside its folder."""
    artefact = site.artefacts / "evil-1.1.0.tar.gz"
    good = site.artefacts / args["url"].rsplit("/", 1)[1]
    with tarfile.open(good) as src, tarfile.open(artefact, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        data = b"owned\n"
        evil = tarfile.TarInfo("bin/../../../../evil.txt")
        evil.size = len(data)
        dst.addfile(evil, io.BytesIO(data))
    return site.args_for(artefact, "1.1.0")


def _mislabelled(site: Site, args: dict) -> dict:
    """A genuine, signed 1.1.0 artefact offered as 9.9.9."""
    return {**args, "version": "9.9.9"}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_wrong_hash, "sha256 mismatch"),
        (_bad_signature, "signature does not verify"),
        (_truncated, "download"),
        (_unknown_key, "unknown key_id"),
        (_missing, "HTTP 404"),
        (_plain_http_elsewhere, "url must be https"),
        (_traversal, "unsafe member name"),
        (_mislabelled, "artefact is release '1.1.0', the command says '9.9.9'"),
    ],
)
def test_a_bad_artefact_changes_nothing(
    site: Site, tamper: Callable[[Site, dict], dict], reason: str
) -> None:
    site.bootstrap("1.0.0")
    before = site.state()
    restarts = site.service.restarts
    ok, detail = site.updater().apply(tamper(site, site.publish("1.1.0")))
    assert not ok
    assert detail.startswith("rejected: ")
    assert reason in detail
    assert site.state() == before
    assert site.service.restarts == restarts
    assert site.service.serving() == "1.0.0"
    assert not (site.tmp / "evil.txt").exists()


def test_truncated_download_is_reported_as_such(site: Site) -> None:
    site.bootstrap("1.0.0")
    ok, detail = site.updater().apply(_truncated(site, site.publish("1.1.0")))
    assert not ok
    assert "IncompleteRead" in detail or "truncated" in detail, detail


# Waiting for an idle moment.


def test_update_waits_for_an_idle_moment_then_goes_ahead(site: Site) -> None:
    site.bootstrap("1.0.0")
    idle = threading.Event()
    threading.Timer(0.6, idle.set).start()
    idle_at: list[float] = []

    def is_idle() -> bool:
        if idle.is_set() and not idle_at:
            idle_at.append(time.monotonic())
        return idle.is_set()

    ok, detail = site.updater(is_idle=is_idle, idle_timeout_s=5).apply(site.publish("1.1.0"))
    assert ok, detail
    assert site.service.restarted_at[-1] >= idle_at[0]  # nothing restarted while busy
    assert site.service.serving() == "1.1.0"


def test_update_gives_up_when_never_idle(site: Site) -> None:
    site.bootstrap("1.0.0")
    before = site.state()
    restarts = site.service.restarts
    clock = FakeClock()  # moved by the updater's own sleeps: the wait is measured exactly
    updater = site.updater(
        is_idle=lambda: False, idle_timeout_s=0.5, clock=clock.monotonic, sleep=clock.advance
    )
    began = clock.monotonic()
    ok, detail = updater.apply(site.publish("1.1.0"))
    assert not ok
    assert detail.startswith("busy: no idle moment in 0.5 s; 1.1.0 not applied")
    assert clock.monotonic() - began == pytest.approx(0.5)
    assert site.state() == before
    assert site.service.restarts == restarts


def test_a_second_update_while_one_runs_is_refused(site: Site) -> None:
    site.bootstrap("1.0.0")
    downloading, release = threading.Event(), threading.Event()

    def slow_download(url: str, dest: Path) -> None:
        downloading.set()
        release.wait(10)
        dest.write_bytes(requests.get(url, timeout=5).content)

    first = site.updater(download=slow_download)
    results: list[tuple[bool, str]] = []
    worker = threading.Thread(target=lambda: results.append(first.apply(site.publish("1.1.0"))))
    worker.start()
    assert downloading.wait(10)  # the first update runs (it is downloading)
    try:
        assert site.updater().apply(site.publish("1.2.0")) == (
            False,
            "busy: another update is running",
        )
    finally:
        release.set()
        worker.join(10)
    assert results[0][0], results


# The updater's own process going away in the middle (the service restarting itself).


class Died(Exception):
    """The updater's process ended (simulated: raised from restart(), after the restart)."""


def dying_restart(site: Site, on_calls: set[int]) -> Callable[[], None]:
    calls = 0

    def restart() -> None:
        nonlocal calls
        calls += 1
        site.service.restart()
        if calls in on_calls:
            raise Died("the service restarted, and the updater with it")

    return restart


@pytest.mark.parametrize("mode", ["good", "unhealthy"])
def test_resume_after_a_restart_between_switch_and_health_check(site: Site, mode: str) -> None:
    site.bootstrap("1.0.0")
    before = site.state()
    with pytest.raises(Died):
        site.updater(restart=dying_restart(site, {1})).apply(
            site.publish("1.1.0", mode), command_id="c-7"
        )
    left = marker(site)
    assert left is not None
    assert (left["state"], left["from"], left["to"]) == ("switched", "1.0.0", "1.1.0")
    assert os.readlink(site.root / "current") == "releases/1.1.0"

    fresh = site.updater()  # the restarted process
    assert fresh.apply(site.publish("1.2.0"))[1].startswith("busy: the update to 1.1.0")
    outcome = fresh.resume()
    assert outcome is not None
    assert outcome.command_id == "c-7"
    assert outcome.version == "1.1.0"
    if mode == "good":
        assert outcome.ok, outcome.detail
        assert outcome.detail.startswith("updated 1.0.0 -> 1.1.0")
        assert site.service.serving() == "1.1.0"
    else:
        assert not outcome.ok
        assert "rolled back to 1.0.0, healthy again" in outcome.detail
        assert site.service.serving() == "1.0.0"
        assert [line for line in site.state() if MARKER_NAME not in line] == before
    assert outcome.result() == {"ok": outcome.ok, "detail": outcome.detail}
    # Reported exactly once: the same outcome until acknowledged, then nothing.
    restarts = site.service.restarts
    assert site.updater().resume() == outcome
    assert site.service.restarts == restarts
    assert not fresh.acknowledge("c-other")
    assert fresh.acknowledge("c-7")
    assert fresh.resume() is None
    assert marker(site) is None


def test_the_marker_is_written_whole_and_readable_by_the_service(site: Site) -> None:
    """The guard (root) rewrites the marker too: the service (another user) must still read it."""
    site.bootstrap("1.0.0")
    with pytest.raises(Died):
        site.updater(restart=dying_restart(site, {1})).apply(
            site.publish("1.1.0", "good"), command_id="c-8"
        )
    assert marker(site)["state"] == "switched"
    assert (site.root / MARKER_NAME).stat().st_mode & 0o777 == 0o644
    assert not list(site.root.glob(".*.tmp"))


def test_resume_after_a_restart_in_the_middle_of_the_rollback(site: Site) -> None:
    """The rollback's own restart ends the process: the previous release's resume() confirms
    it is healthy and reports the failure with the time the rollback took."""
    site.bootstrap("1.0.0")
    with pytest.raises(Died):
        site.updater(restart=dying_restart(site, {2})).apply(
            site.publish("1.1.0", "unhealthy"), command_id="c-8"
        )
    left = marker(site)
    assert left is not None
    assert (left["state"], left["confirm"], left["result"]["ok"]) == ("done", True, False)
    assert os.readlink(site.root / "current") == "releases/1.0.0"
    outcome = site.updater().resume()
    assert outcome is not None
    assert not outcome.ok
    assert "rolled back to 1.0.0, healthy again" in outcome.detail
    assert not (site.root / "releases" / "1.1.0").exists()
    assert site.service.serving() == "1.0.0"


def test_a_release_that_keeps_dying_during_its_check_is_rolled_back(site: Site) -> None:
    site.bootstrap("1.0.0")
    with pytest.raises(Died):
        site.updater(restart=dying_restart(site, {1})).apply(site.publish("1.1.0"), "c-9")

    def dies() -> tuple[bool, str]:
        site.service.restart()  # systemd starting it again after the crash
        raise SystemExit("the new release crashed the process during its health check")

    for attempt in (1, 2, 3):
        with pytest.raises(SystemExit):
            site.updater(health_check=dies).resume()
        assert marker(site)["attempts"] == attempt
    outcome = site.updater().resume()
    assert outcome is not None and not outcome.ok
    assert "1.1.0 restarted 3 times without passing its health check" in outcome.detail
    assert site.service.serving() == "1.0.0"


def test_resume_with_nothing_pending_does_nothing(site: Site) -> None:
    site.bootstrap("1.0.0")
    restarts = site.service.restarts
    assert site.updater().resume() is None
    assert site.service.restarts == restarts


def test_guard_command_line(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.bootstrap("1.0.0")
    with pytest.raises(Died):
        site.updater(restart=dying_restart(site, {1})).apply(site.publish("1.1.0"), "c-10")
    health = f"http://127.0.0.1:{site.service.port}/healthz"
    argv = ["--root", str(site.root), "--health-url", health, "--restart-cmd", "true"]
    assert main(["status", *argv]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["current"], status["previous"]) == ("1.1.0", "1.0.0")
    assert status["pending"]["state"] == "switched"
    assert main(["resume", *argv]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert (outcome["ok"], outcome["command_id"]) == (True, "c-10")
    assert main(["acknowledge", *argv]) == 0
    assert marker(site) is None


# The default set-up: a venv from the release's wheels.


def _tiny_wheel(folder: Path, version: str) -> Path:
    """A real wheel of a `connectbox` distribution whose console script serves /healthz."""
    module = SERVICE.split("\n", 1)[1].format(version=version, mode="good")
    module = module.replace("http.server.HTTPServer(", "def main():\n    http.server.HTTPServer(")
    dist = f"connectbox-{version}.dist-info"
    files = {
        "cbtiny.py": module,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: connectbox\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nconnectbox = cbtiny:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True)
    wheel = folder / f"connectbox-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.mark.slow
def test_release_with_wheels_gets_its_own_venv(site: Site) -> None:
    site.bootstrap("1.0.0")
    src = site.tmp / "src" / "2.0.0-wheels"
    _tiny_wheel(src / "wheels", "2.0.0")
    artefact = make_release(src, "2.0.0", site.artefacts)
    ok, detail = site.updater(installer=VenvInstaller(), health_deadline_s=10).apply(
        site.args_for(artefact, "2.0.0")
    )
    assert ok, detail
    release = site.root / "releases" / "2.0.0"
    assert (release / "venv" / "bin" / "python").exists()
    assert "venv/bin/python" in (release / "bin" / "connectbox").read_text()  # the launcher
    assert site.service.serving() == "2.0.0"
    assert not list((site.root / "releases").glob("*.partial"))


# The pieces.


def test_make_release_is_reproducible_and_signed_bytes_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_src = tmp_path / "src"
    (site_src / "bin").mkdir(parents=True)
    (site_src / "bin" / "connectbox").write_text("#!/bin/sh\n")
    (site_src / "bin" / "connectbox").chmod(0o755)
    (site_src / "bin" / "cb").symlink_to("connectbox")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one = make_release(site_src, "3.0.0", tmp_path / "a")
    two = make_release(site_src, "3.0.0", tmp_path / "b" / "custom.tar.gz")
    assert one.name == "connectbox-3.0.0.tar.gz"
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("RELEASE.json"))
    assert names == ["RELEASE.json", "bin", "bin/cb", "bin/connectbox"]
    assert manifest == {"format": 1, "version": "3.0.0", "entry": "bin/connectbox"}
    signed = sign_artefact(one, test_private_key())
    verify_artefact(one, signed["sha256"], signed["signature"], TRUSTED)  # the only key
    with pytest.raises(UpdateRejected, match="key_id missing and 2 keys"):
        verify_artefact(one, signed["sha256"], signed["signature"], {**TRUSTED, "k2": "x"})
    (site_src / "bin" / "out").symlink_to("../../etc")
    with pytest.raises(ValueError, match="links outside"):
        make_release(site_src, "3.0.1", tmp_path / "c")


def _tarball(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """(kind, name, data-or-link) members: kind is file, dir, sym, hard or fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = data
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("file", "../evil.txt", "x")], "leaves the release"),
        ([("file", "bin/../../evil.txt", "x")], "leaves the release"),
        ([("file", "/tmp/evil.txt", "x")], "absolute"),
        ([("sym", "bin/etc", "/etc")], "absolute path"),
        ([("sym", "bin/up", "../..")], "points outside"),
        ([("dir", "a", ""), ("sym", "a/b", "."), ("sym", "c", "a/b/..")], None),
        ([("sym", "c", "b/.."), ("sym", "b", ".")], "points outside"),
        ([("sym", "link", "."), ("file", "link/x", "x")], "through a symlink"),
        ([("file", "a", "x"), ("file", "a", "y")], "twice"),
        ([("hard", "h", "../../etc/passwd")], "leaves the release"),
        ([("hard", "h", "missing")], "hard link"),
        ([("fifo", "pipe", "")], "special file"),
    ],
)
def test_safe_extract_refuses_escapes(tmp_path: Path, members: list, reason: str | None) -> None:
    archive = _tarball(tmp_path / "a.tar.gz", members)
    dest = tmp_path / "releases" / "x.partial"
    dest.parent.mkdir()
    if reason is None:
        safe_extract(archive, dest)  # links that stay inside are fine
        assert (dest / "c").resolve() == dest.resolve()
        return
    with pytest.raises(UpdateRejected, match=reason):
        safe_extract(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_garbage_and_bombs(tmp_path: Path) -> None:
    garbage = tmp_path / "g.tar.gz"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(UpdateRejected, match="not a readable"):
        safe_extract(garbage, tmp_path / "g")
    big = _tarball(tmp_path / "b.tar.gz", [("file", "a", "x" * 2000)])
    with pytest.raises(UpdateRejected, match="unpacks to more than 1000 bytes"):
        safe_extract(big, tmp_path / "b", max_bytes=1000)
    many = _tarball(tmp_path / "m.tar.gz", [("file", f"f{i}", "") for i in range(5)])
    with pytest.raises(UpdateRejected, match="more than 3 members"):
        safe_extract(many, tmp_path / "m", max_members=3)


def test_safe_extract_sanitises_modes(tmp_path: Path) -> None:
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("bin/tool")
        info.size, info.mode = 2, 0o6777
        tar.addfile(info, io.BytesIO(b"#!"))
    safe_extract(archive, tmp_path / "out")
    mode = (tmp_path / "out" / "bin" / "tool").stat().st_mode & 0o7777
    assert mode & 0o6000 == 0 and mode & 0o022 == 0 and mode & 0o100


def test_urls_must_be_https_except_loopback() -> None:
    assert check_url("https://cdn.example.com/a.tar.gz")
    assert check_url("http://127.0.0.1:8000/a.tar.gz")
    assert check_url("http://[::1]:8000/a.tar.gz")
    for bad in ("http://updates.example/a.tar.gz", "ftp://x/a", "file:///etc/passwd", None):
        with pytest.raises(UpdateRejected):
            check_url(bad)


@pytest.mark.parametrize("version", ["", "..", ".hidden", "a/b", "1.0.partial", "x" * 80, 7])
def test_bad_versions_are_rejected_before_anything_happens(site: Site, version: Any) -> None:
    args = {"version": version, "url": "http://127.0.0.1:1/x", "sha256": "0" * 64, "signature": "x"}
    ok, detail = site.updater().apply(args)
    assert not ok and detail.startswith("rejected: ")
    assert site.state() == []


def test_provisioning_never_imports_app_or_the_simulators() -> None:
    assert imports_of("provisioning", "app", "simulators") == []
    assert releases.__name__ == "provisioning.releases"
