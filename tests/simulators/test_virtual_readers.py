"""The virtual serial readers (real pseudo-terminals) and `connectbox reader-sim`, read by the
real SerialReader."""

from __future__ import annotations

import os
import threading

import pytest

from drivers.serial_reader import SerialReader
from simulators.readers.virtual import VirtualSerialReader
from tests.drivers.test_serial_reader import Capture, wait_until


def test_virtual_reader_keeps_its_path_across_replug(tmp_path):
    with VirtualSerialReader(directory=tmp_path) as virtual:
        first = virtual.slave_name
        assert os.path.realpath(virtual.path) == first
        virtual.unplug()
        assert not os.path.lexists(virtual.path)
        with pytest.raises(OSError):
            virtual.swipe(b"x")
        virtual.replug()
        assert os.path.realpath(virtual.path) == virtual.slave_name
        assert virtual.plugs == 2
        assert not virtual.is_open()
    assert not os.path.lexists(virtual.path)


def test_virtual_reader_refuses_to_replace_a_regular_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a tty")
    with pytest.raises(FileExistsError):
        VirtualSerialReader(target)


def test_reader_sim_swipes_one_track2_card(tmp_path, capsys):
    from simulators.readers import cli as reader_sim

    link = tmp_path / "sim"
    result: dict[str, int] = {}
    argv = ["--link", str(link), "--track2", "6000001234567894", "--hold", "0.3", "--wait", "10"]
    sim = threading.Thread(target=lambda: result.setdefault("rc", reader_sim.main(argv)))
    sim.start()
    capture = Capture()
    assert wait_until(lambda: os.path.islink(link))
    reader = SerialReader(str(link), capture.on_frame, capture.on_state, reopen_interval_s=0.1)
    reader.start()
    try:
        assert capture.wait_frames(1, timeout=10) == [b";6000001234567894=4912101?"]
        sim.join(10)
        assert result == {"rc": 0}
    finally:
        reader.stop()
        sim.join(10)
    assert capsys.readouterr().out.splitlines()[0] == str(link)
    assert not os.path.lexists(link)


def test_reader_sim_usage_errors(tmp_path):
    from simulators.readers import cli as reader_sim

    assert reader_sim.main(["--track2", "12AB", "--link", str(tmp_path / "x")]) == 2
    assert reader_sim.main(["--no-such-option"]) == 2
    (tmp_path / "file").write_text("")
    assert reader_sim.main(["--link", str(tmp_path / "file")]) == 2


def test_reader_sim_swipes_stdin_lines(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    link = tmp_path / "sim"
    root = Path(__file__).resolve().parents[2]
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.readers.cli",
            "--link",
            str(link),
            "--escapes",
            "--hold",
            "0.2",
        ],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    capture = Capture()
    reader = None
    try:
        assert sim.stdout.readline().decode().strip() == str(link)
        reader = SerialReader(
            str(link),
            capture.on_frame,
            capture.on_state,
            reopen_interval_s=0.1,
            banner_window_s=0.0,
        )
        reader.start()
        capture.wait_state("connected")
        sim.stdin.write(b"]C0LOY-AB12CD34\n")
        sim.stdin.flush()
        assert capture.wait_frames(1) == [b"]C0LOY-AB12CD34"]
        sim.stdin.write(b"\\x02;6000001234567894=2912?\\x03\n")
        sim.stdin.flush()
        assert capture.wait_frames(2)[1] == b"\x02;6000001234567894=2912?\x03"
        sim.stdin.close()
        assert sim.wait(10) == 0
    finally:
        if reader is not None:
            reader.stop()
        if sim.poll() is None:
            sim.kill()
            sim.wait()
