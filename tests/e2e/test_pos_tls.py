"""TLS on the POS port ([pos] tls_cert, tls_key): a sale in both dialects over real TCP with a
CA made for the test, a plain-TCP POS refused cleanly, a handshake bounded by the frame
deadline, and the configuration's checks of the files."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.box import Box
from app.config import ConfigError, parse_config
from app.pos.tls import client_context
from app.status import actions
from simulators import pos as sim
from tests.tlsca import TlsFiles, make_tls_files
from tests.waiting import wait_for


@pytest.fixture
def tls_files(tmp_path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_box(box_with, tls_files) -> Callable[..., Box]:
    """A started box with TLS on its POS port (and the [pos] settings the test adds)."""
    return lambda **pos: box_with(tls_cert=tls_files.cert, tls_key=tls_files.key, **pos)


@pytest.mark.parametrize("dialect", ["passport", "eps"])
def test_a_tls_sale_in_either_dialect(tls_box, tls_files, reference_host, dialect):
    box = tls_box()
    tls = client_context(tls_files.ca)
    with sim.PosClient("127.0.0.1", box.pos_server.port, dialect, tls=tls) as pos:
        result = sim.tobacco_phone_sale(pos, lambda line: None)
    assert result.discount > 0
    assert any(e["event"] == "finalize" for e in reference_host.store.events())
    assert wait_for(lambda: box.status()["pos"]["past_peers"])  # the box saw the POS hang up
    snapshot = box.status()["pos"]
    assert snapshot["tls"] is True and snapshot["tls_refused"] == 0
    assert snapshot["past_peers"][-1]["dialect"] == dialect


def test_a_plain_tcp_pos_is_refused_cleanly_and_tls_still_served(tls_box, tls_files, caplog):
    caplog.set_level(logging.WARNING, logger="connectbox.pos")
    box = tls_box()
    port = box.pos_server.port
    with sim.PosClient("127.0.0.1", port) as plain, pytest.raises(sim.PosClientError) as refused:
        plain.send(sim.online_status(sim.SHARED_COUNTER.next()))
    assert "closed the connection" in str(refused.value) or "lost" in str(refused.value)
    assert wait_for(lambda: box.pos_server.tls_refused == 1)
    assert "TLS handshake failed" in caplog.text
    with sim.PosClient("127.0.0.1", port, tls=client_context(tls_files.ca)) as pos:
        assert pos.send(sim.online_status(sim.SHARED_COUNTER.next())).prompt_for_loyalty


def test_a_client_that_does_not_trust_the_box_gets_a_clear_error(tls_box, tmp_path):
    box = tls_box()
    stranger = client_context(make_tls_files(tmp_path / "other").ca)  # another CA
    pos = sim.PosClient("127.0.0.1", box.pos_server.port, tls=stranger)
    with pytest.raises(sim.PosClientError, match="TLS handshake with the box"):
        pos.connect()
    assert not pos.connected


def test_a_stalled_handshake_does_not_hold_the_only_slot(tls_box, tls_files):
    # The default 5 s: long enough for the honest client's handshake on a loaded machine (with
    # 1 s and 3 s, the full suite beside two busy loops made the box cut that one too).
    box = tls_box(frame_deadline_s=5.0, max_connections=1)
    port = box.pos_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        assert stalled.recv(1024) == b"", "the box kept a stalled handshake open"
        cut_after = time.monotonic() - started
    # Not before the frame deadline; the upper bound only bounds a failure.
    assert 4.9 <= cut_after < 15.0, f"cut {cut_after:.2f} s after the first byte"
    assert wait_for(lambda: box.pos_server.tls_refused == 1)
    # The slot is free once the stalled connection's thread has ended (not just its entry in
    # the snapshot): waiting on the count the cap checks, or a loaded machine lets the honest
    # client in first and it is refused over the cap.
    assert wait_for(lambda: box.pos_server._open == 0)
    with sim.PosClient("127.0.0.1", port, tls=client_context(tls_files.ca)) as pos:
        assert pos.send(sim.online_status(sim.SHARED_COUNTER.next())).prompt_for_loyalty


def test_the_technician_test_sale_and_the_simulator_speak_tls(tls_box, tls_files):
    box = tls_box()
    result = actions.test_sale(box.controls)
    assert result.ok, result.message
    argv = ["--connect", f"127.0.0.1:{box.pos_server.port}", "--tls-ca", str(tls_files.ca)]
    assert sim.main([*argv, "--script", "sale_without_loyalty"]) == 0
    assert box.pos_server.tls_refused == 0


# ---- the configuration's checks ------------------------------------------------------------


def _config(tmp_path: Path, **pos: str) -> None:
    raw = {"host": {"url": "https://host.example.com"}, "pos": pos}
    parse_config(raw, base_dir=tmp_path)


def test_good_files_pass_relative_to_the_configuration(tmp_path, tls_files):
    raw = {"host": {"url": "https://host.example.com"}, "pos": {"tls_cert": "tls/box.pem"}}
    raw["pos"]["tls_key"] = "tls/box.key"
    config = parse_config(raw, base_dir=tmp_path)
    assert config.pos.tls_cert == tls_files.cert and config.pos.tls_key == tls_files.key


@pytest.mark.parametrize(
    ("pos", "error"),
    [
        ({"tls_cert": "tls/box.pem"}, "[pos] tls_key: missing"),
        ({"tls_key": "tls/box.key"}, "[pos] tls_cert: missing"),
        ({"tls_cert": "nope.pem", "tls_key": "tls/box.key"}, "[pos] tls_cert: cannot read"),
        ({"tls_cert": "tls/box.pem", "tls_key": "nope.key"}, "[pos] tls_key: cannot read"),
        ({"tls_cert": "tls/box.key", "tls_key": "tls/box.key"}, "[pos] tls_cert: "),
        ({"tls_cert": "tls/box.pem", "tls_key": "tls/box.pem"}, "[pos] tls_key: "),
        ({"tls_cert": "tls/box.pem", "tls_key": "other/box.key"}, "is not the key of"),
    ],
)
def test_bad_files_name_the_key(tmp_path, tls_files, pos, error):
    make_tls_files(tmp_path / "other")
    with pytest.raises(ConfigError) as failed:
        _config(tmp_path, **pos)
    assert str(failed.value).startswith("config error: ")
    assert error in str(failed.value)
