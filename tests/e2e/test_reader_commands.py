"""The technician's reader commands through the `connectbox` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from app.readers import ReaderBinding
from app.readers_cli import list_readers_main
from simulators.readers.virtual import VirtualSerialReader
from tests.box_readers import wait_until_reading

CLI = [sys.executable, "-m", "app"]


def test_card_decode_through_connectbox():
    result = subprocess.run(
        CLI + ["card", "decode", "--today", "2026-06-15"],
        input=b";6000001234567894=2912101?\r",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "result": "id",
        "loyalty_id": "6000001234567894",
        "source": "magstripe",
        "symbology": "track2",
    }
    usage = subprocess.run(CLI + ["card"], capture_output=True, timeout=30)
    assert usage.returncode == 2 and b"connectbox card decode" in usage.stderr


def test_readers_lists_what_the_running_service_sees(reference_host, make_box, tmp_path, capsys):
    with VirtualSerialReader(directory=tmp_path) as reader:
        box = make_box(reference_host.url, readers=[ReaderBinding("1", path=reader.path)])
        wait_until_reading(box, reader.path)
        reader.swipe(b";6000001234567894=2912101?\r")
        assert box.readers.pending.wait("1", timeout=5)
        config = tmp_path / "connectbox.toml"
        config.write_text(
            f'[pos]\nlisten = "127.0.0.1:{box.pos_server.port}"\n'
            f'[host]\nurl = "{reference_host.url}"\ndevice_id = "D"\nsite_id = "S"\n'
            f'token = "t"\n[status]\nlisten = "127.0.0.1:{box.status_port}"\n'
        )
        assert list_readers_main(str(config)) == 0
    out = capsys.readouterr().out
    assert reader.path in out and "register 1" in out and "connected" in out
    assert "******7894" in out and "6000001234567894" not in out


def test_reader_sim_command_is_wired():
    result = subprocess.run(CLI + ["reader-sim", "--help"], capture_output=True, timeout=30)
    assert result.returncode == 0 and b"--track2" in result.stdout
