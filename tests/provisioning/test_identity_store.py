"""Device identity (serial, claim code) and the atomic, fsync'd document store."""

from __future__ import annotations

import os
import stat

import pytest

from provisioning import store as store_module
from provisioning.identity import claim_code, device_serial, record_serial
from provisioning.store import (
    Credentials,
    CredentialStore,
    JsonDocument,
    write_json_atomic,
)


def test_serial_prefers_dmi(tmp_path):
    dmi, mid = tmp_path / "product_serial", tmp_path / "machine-id"
    dmi.write_text("CB2026-00042\n")
    mid.write_text("0123abcd" * 4 + "\n")
    assert device_serial(dmi, mid, configured="cfg") == "CB2026-00042"


@pytest.mark.parametrize("placeholder", ["", "To be filled by O.E.M.", "Default string", "  "])
def test_serial_placeholder_falls_back_to_machine_id(tmp_path, placeholder):
    dmi, mid = tmp_path / "product_serial", tmp_path / "machine-id"
    dmi.write_text(placeholder + "\n")
    mid.write_text("5f3c" * 8 + "\n")
    assert device_serial(dmi, mid) == "5f3c" * 8


def test_serial_unreadable_dmi_falls_back(tmp_path):
    mid = tmp_path / "machine-id"
    mid.write_text("abc123\n")
    assert device_serial(tmp_path / "missing", mid) == "abc123"
    unreadable = tmp_path / "product_serial"
    unreadable.write_text("SERIAL")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: the fallback is untestable here
        return
    assert device_serial(unreadable, mid) == "abc123"


def test_serial_configured_last_and_error_when_none(tmp_path):
    assert device_serial(tmp_path / "a", tmp_path / "b", configured=" CFG-1 ") == "CFG-1"
    with pytest.raises(ValueError, match="no usable serial"):
        device_serial(tmp_path / "a", tmp_path / "b")


def test_first_boot_records_the_serial_and_the_record_wins(tmp_path):
    """The image's set-up (root) records the DMI serial; the service (no DMI access) reads it."""
    dmi, mid, record = tmp_path / "product_serial", tmp_path / "machine-id", tmp_path / "serial"
    dmi.write_text("CB2026-00042\n")
    mid.write_text("5f3c" * 8 + "\n")
    assert record_serial(record, dmi, mid) == "CB2026-00042"
    assert record.read_text() == "CB2026-00042\n" and stat.S_IMODE(record.stat().st_mode) == 0o644
    dmi.write_text("REPLACED-BOARD\n")  # the record is kept: the box keeps its name
    assert record_serial(record, dmi, mid) == "CB2026-00042"
    assert device_serial(tmp_path / "missing", mid, recorded_path=record) == "CB2026-00042"
    assert device_serial(tmp_path / "missing", mid, recorded_path=tmp_path / "none") == "5f3c" * 8


def test_claim_code(tmp_path):
    path = tmp_path / "claim"
    assert claim_code(path) is None
    path.write_text("ABCD-1234\nsecond line\n")
    assert claim_code(path) == "ABCD-1234"
    assert claim_code(path, configured=" WXYZ-9876 ") == "WXYZ-9876"
    path.write_text("\n")
    assert claim_code(path, configured="") is None


def test_atomic_write_is_0600_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "doc.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert JsonDocument(path).load() == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["doc.json"]


def test_failed_write_keeps_the_old_document(tmp_path, monkeypatch):
    path = tmp_path / "doc.json"
    write_json_atomic(path, {"version": 1})

    def power_cut(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(store_module.os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        write_json_atomic(path, {"version": 2})
    monkeypatch.undo()
    assert JsonDocument(path).load() == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_corrupt_document_is_an_error_not_empty(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('{"half": ')
    with pytest.raises(ValueError, match="not a JSON document"):
        JsonDocument(path).load()


def test_credentials_round_trip(tmp_path):
    store = CredentialStore(tmp_path / "credentials.json")
    assert store.load() is None
    creds = Credentials("D-1", "tok", "S-1", pending_token="next", rotation_id="c-1")
    store.save(creds)
    assert store.load() == creds
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.path.write_text('{"device_id": "D-1"}')
    with pytest.raises(ValueError, match="lack"):
        store.load()
