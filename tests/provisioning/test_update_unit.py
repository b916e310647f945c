"""The privileged update unit (provisioning/update_unit.py): the service hands `update` to it and
reads the result; the unit does what `Updater` does, against real processes (the Site of
test_updates.py), and its guard mode rolls back or starts safe mode."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning import update_unit
from provisioning.update_unit import (
    RESTART_CMD,
    SAFE_MODE_CMD,
    Restarted,
    Unit,
    UnitUpdates,
    main,
    trusted_keys,
)
from provisioning.updates import MARKER_NAME
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64
from tests.provisioning.test_updates import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    world = Site(tmp_path)
    try:
        yield world
    finally:
        world.close()


def _unit(site: Site) -> Unit:
    def restart() -> None:  # what the unit's restart does: systemd restarts, the unit goes on
        site.service.restart()
        raise Restarted()

    return Unit(site.updater(restart=restart), site.root, start_cmd="true")


def test_an_update_is_applied_settled_and_reported_once(site: Site, tmp_path: Path) -> None:
    site.bootstrap("1.0.0")
    unit = _unit(site)
    request = {"action": "apply", "command_id": "c-1", "args": site.publish("1.1.0")}
    assert unit.handle(request) == 0
    assert site.service.serving() == "1.1.0"
    service = UnitUpdates(tmp_path / "no.sock", site.root)
    assert service.knows("c-1")
    [outcome] = service.done()
    assert (outcome.command_id, outcome.ok) == ("c-1", True)
    assert "1.0.0 -> 1.1.0" in outcome.detail
    assert not (site.root / MARKER_NAME).exists()  # the result file holds it now
    assert unit.handle({"action": "acknowledge", "command_id": "c-1"}) == 0
    assert service.done() == [] and not service.knows("c-1")


def test_a_release_that_fails_its_health_check_is_rolled_back(site: Site, tmp_path: Path) -> None:
    site.bootstrap("1.0.0")
    unit = _unit(site)
    unit.handle({"action": "apply", "command_id": "c-2", "args": site.publish("1.1.0", "bad")})
    [outcome] = UnitUpdates(tmp_path / "no.sock", site.root).done()
    assert not outcome.ok and "rolled back to 1.0.0" in outcome.detail
    assert site.service.serving() == "1.0.0"


def test_the_version_already_running_succeeds_at_once(site: Site, tmp_path: Path) -> None:
    site.bootstrap("1.0.0")
    restarts = site.service.restarts
    _unit(site).handle({"action": "apply", "command_id": "c-3", "args": site.publish("1.0.0")})
    [outcome] = UnitUpdates(tmp_path / "no.sock", site.root).done()
    assert outcome.ok and "already running 1.0.0" in outcome.detail
    assert site.service.restarts == restarts


def test_a_command_id_is_never_a_path(site: Site) -> None:
    unit = _unit(site)
    assert unit.handle({"action": "apply", "command_id": "../../etc/x", "args": {}}) == 2
    assert unit.handle({"action": "acknowledge", "command_id": ""}) == 2
    assert not (site.root / "results").exists()
    with pytest.raises(ValueError):  # the service refuses it before it asks the unit
        UnitUpdates(site.root / "no.sock", site.root).apply("../x", {})


def test_requests_travel_over_the_unit_socket(tmp_path: Path) -> None:
    path = tmp_path / "update.sock"
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                got.append(conn.makefile("rb").read())

        thread = threading.Thread(target=accept)
        thread.start()
        UnitUpdates(path, tmp_path).apply("c-9", {"version": "2.0.0"})
        thread.join(10)
    assert json.loads(got[0]) == {
        "action": "apply",
        "command_id": "c-9",
        "args": {"version": "2.0.0"},
    }


def test_the_trusted_keys_come_from_the_configuration_never_the_request(tmp_path: Path) -> None:
    config = tmp_path / "connectbox.toml"
    config.write_text(f'[policy]\ntrusted_keys = {{ {TEST_KEY_ID} = "{TEST_PUBLIC_KEY_B64}" }}\n')
    assert trusted_keys(config) == {TEST_KEY_ID: TEST_PUBLIC_KEY_B64}
    assert trusted_keys(tmp_path / "missing.toml") == {}


def test_guard_starts_safe_mode_when_no_update_explains_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(update_unit, "_shell", lambda command: ran.append(command) or 0)
    assert main(["--root", str(tmp_path), "--guard", "--config", str(tmp_path / "x")]) == 0
    assert ran == [SAFE_MODE_CMD]


def test_guard_rolls_back_a_release_that_cannot_start(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.bootstrap("1.0.0")

    def gone() -> None:  # switched to 1.1.0, then the process died with the service
        site.service.restart()
        raise Restarted()

    with pytest.raises(Restarted):
        site.updater(restart=gone).apply(site.publish("1.1.0", "crash"), "c-4")
    ran: list[str] = []

    def shell(command: str) -> int:
        ran.append(command)
        site.service.restart()  # what systemctl would do
        return 0

    monkeypatch.setattr(update_unit, "_shell", shell)
    health = f"http://127.0.0.1:{site.service.port}/healthz"
    argv = ["--root", str(site.root), "--guard", "--health-url", health, "--deadline", "3"]
    assert main([*argv, "--config", str(site.root / "none.toml")]) == 0
    assert ran and set(ran) == {RESTART_CMD}  # rolled back, so no safe mode
    assert site.service.serving() == "1.0.0"
    [outcome] = UnitUpdates(site.root / "no.sock", site.root).done()
    assert outcome.command_id == "c-4" and not outcome.ok


def test_a_request_whose_instance_died_is_failed_when_the_service_asks_to_resume(
    site: Site, tmp_path: Path
) -> None:
    site.bootstrap("1.0.0")
    unit = _unit(site)
    unit._store("c-5", "1.1.0", state="running")  # the box lost power while downloading
    service = UnitUpdates(tmp_path / "no.sock", site.root)
    assert service.unsettled() and service.done() == []
    assert unit.handle({"action": "resume"}) == 0
    [outcome] = service.done()
    assert outcome.command_id == "c-5" and not outcome.ok and "interrupted" in outcome.detail
    assert site.service.serving() == "1.0.0"
