"""The simulators are a distribution of their own: nothing in the box imports them, and the
`connectbox` command offers their commands only where they are installed."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint

import pytest

from app import cli
from tests.imports import ROOT, imports_of

SIMULATOR_COMMANDS = {"demo", "host-sim", "pos-sim", "reader-sim"}


def _project(path: str) -> dict:
    with open(ROOT / path, "rb") as handle:
        return tomllib.load(handle)["project"]


def test_the_service_never_imports_the_simulators():
    # drivers/ and provisioning/ are checked with their own tests (neither app/ nor these).
    assert imports_of("app", "simulators") == []


def test_the_simulators_are_the_same_release_as_the_box():
    box, simulators = _project("pyproject.toml"), _project("simulators/pyproject.toml")
    assert simulators["name"] == "connectbox-simulators"
    assert simulators["version"] == box["version"]
    assert f"connectbox=={box['version']}" in simulators["dependencies"]
    commands = simulators["entry-points"][cli.COMMAND_GROUP]
    assert set(commands) == SIMULATOR_COMMANDS


def test_the_development_install_offers_every_simulator_command(capsys):
    added = cli.added_commands(exclude=set())
    assert set(added) >= SIMULATOR_COMMANDS
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SIMULATOR_COMMANDS)


def test_without_the_simulators_connectbox_does_not_offer_them(monkeypatch, capsys):
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "card" in out
    assert not [name for name in SIMULATOR_COMMANDS if name in out]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--once"])
    assert exit_.value.code == 2
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def test_a_command_that_fails_to_load_is_left_out_with_a_note(monkeypatch, capsys):
    broken = EntryPoint("broken-sim", "simulators.no_such_module:COMMAND", cli.COMMAND_GROUP)
    pos_sim = EntryPoint("pos-sim", "simulators.commands:POS_SIM", cli.COMMAND_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken, pos_sim])
    assert set(cli.added_commands(exclude=set())) == {"pos-sim"}
    assert "command broken-sim left out" in capsys.readouterr().err


def test_an_added_command_gets_the_rest_of_the_command_line(capsys):
    assert cli.main(["pos-sim", "--list"]) == 0
    assert "tobacco_phone_sale" in capsys.readouterr().out
