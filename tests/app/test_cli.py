"""The `connectbox` command as a new user meets it: every start-up error names what is wrong and
the fix, every subcommand has its --help, and the README's table lists every subcommand."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.box import announces
from app.cli import build_parser, main
from app.config import parse_config
from tests.boxproc import CLI, write_config
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "http://127.0.0.1:9"  # never contacted: these boxes do not get as far as starting


def connectbox(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`connectbox ARGS` as a process (it sets up logging, binds ports, may run the demo)."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd or ROOT, check=False
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# ---- start-up errors ---------------------------------------------------------------------


def test_no_configuration_says_how_to_get_one(tmp_path):
    missing = tmp_path / "connectbox.toml"
    done = connectbox("run", "--config", str(missing))
    assert done.returncode == 2
    assert f"no configuration file at {missing}" in done.stderr
    for fix in ("--config PATH", "connectbox config example", "docs/configuration.md"):
        assert fix in done.stderr


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            ("[pos]\n", "[pos]\nlisen = ':9000'\n"),
            "[pos] lisen: unknown key (did you mean listen?)",
        ),
        (("[status]", "[stauts]"), "[stauts]: unknown section (did you mean status?)"),
        (("[pos]\n", "[pos]\nzzz = 1\n"), "[pos] zzz: unknown key (known: listen, dialect,"),
    ],
)
def test_a_typo_names_the_key_it_meant_and_the_file(tmp_path, change, said):
    config = write_config(tmp_path, HOST, 9000, 8080)
    config.write_text(config.read_text().replace(*change))
    done = connectbox("run", "--config", str(config))
    assert done.returncode == 2
    assert said in done.stderr
    assert f"in {config}; every setting: connectbox config example" in done.stderr


def test_a_bad_value_names_the_key_and_what_it_takes(tmp_path):
    config = write_config(tmp_path, HOST, 9000, 8080, extra='deadline_ms = "fast"')
    done = connectbox("run", "--config", str(config))
    assert done.returncode == 2
    assert (
        "config error: [host] deadline_ms: must be a whole number from 100 to 10000 "
        "(got 'fast')" in done.stderr
    )


@pytest.mark.parametrize("listener", ["POS", "status"])
def test_a_busy_port_names_the_listener_the_port_and_the_key(tmp_path, busy_port, listener):
    pos_port, status_port = (
        (busy_port, free_port()) if listener == "POS" else (free_port(), busy_port)
    )
    config = write_config(tmp_path, HOST, pos_port, status_port)
    done = connectbox("run", "--config", str(config))
    assert done.returncode == 1
    key = "[pos] listen" if listener == "POS" else "[status] listen"
    assert done.stderr.strip().splitlines()[-1] == (
        f"cannot start: the {listener} listener cannot open 127.0.0.1:{busy_port}: port "
        f"{busy_port} is in use (another program, or another connectbox, listens there). Stop "
        f"the other program, or choose another port with {key} in {config}."
    )


def test_an_unusable_data_directory_names_its_key(tmp_path):
    config = write_config(tmp_path, HOST, free_port(), free_port())
    (tmp_path / "data").write_text("a file where the folder should be")
    done = connectbox("run", "--config", str(config))
    assert done.returncode == 1
    assert f"cannot start: cannot use the data directory {tmp_path / 'data'}" in done.stderr
    assert f"with [storage] data_dir in {config}." in done.stderr


@pytest.mark.parametrize("option", ["--pos-port", "--status-port", "--host-port"])
def test_the_demo_names_the_option_for_a_busy_port(busy_port, option):
    ports = {name: str(free_port()) for name in ("--pos-port", "--status-port", "--host-port")}
    ports[option] = str(busy_port)
    done = connectbox("demo", "--once", *[part for pair in ports.items() for part in pair])
    assert done.returncode == 1
    assert f"cannot open 127.0.0.1:{busy_port}: port {busy_port} is in use" in done.stdout
    assert done.stdout.rstrip().endswith(f"choose another port with {option}.")


def test_host_sim_names_its_option_for_a_busy_port(busy_port):
    done = connectbox("host-sim", "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == 1
    assert f"port {busy_port} is in use" in done.stdout and "with --listen" in done.stdout


def test_mdns_announces_by_default_only_in_the_image():
    assert parse_config({"host": {"url": "https://h.example"}}).network.mdns is None
    assert not announces(None, {"slot": None, "variant": None})  # a developer's machine
    assert announces(None, {"slot": "a", "variant": "production"})
    assert announces(True, {"slot": None, "variant": None})
    assert not announces(False, {"slot": "a", "variant": "production"})


# ---- help and the README -----------------------------------------------------------------


def exit_code(argv: list[str]) -> int | str | None:
    """What `connectbox ARGV` exits with (argparse's --help exits; some tools return)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def subcommands() -> list[str]:
    return list(build_parser()[1])


@pytest.mark.parametrize(
    "argv",
    [[name, "--help"] for name in subcommands()]
    + [["config", "example", "--help"], ["config", "check", "--help"], ["card", "decode", "-h"]],
    ids=" ".join,
)
def test_every_subcommand_has_help(capsys, argv):
    assert exit_code(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: connectbox {' '.join(a for a in argv if a[0] != '-')}")
    assert "options:" in out and len(out.splitlines()) > 3


def test_every_demo_option_is_explained(capsys):
    assert exit_code(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--pos-port", "--status-port", "--host-port"):
        assert re.search(rf"{option} \S+\s+\S", out), f"{option} has no help text"


def test_the_readme_lists_every_subcommand():
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"^\| `connectbox ([a-z-]+)", readme, re.M)
    assert sorted(set(listed)) == sorted(subcommands())
