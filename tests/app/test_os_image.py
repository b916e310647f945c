"""The OS image's root slot, version, variant and manifest hash, from the kernel command line
and the build's files."""

from __future__ import annotations

import hashlib

from app.os_image import os_image


def test_slot_version_variant_and_manifest_of_an_image(tmp_path):
    cmdline, variant, manifest = tmp_path / "cmdline", tmp_path / "variant", tmp_path / "manifest"
    cmdline.write_text("root=PARTLABEL=cbroot-b ro console=ttyS0 connectbox.slot=b panic=10\n")
    variant.write_text("production\n")
    manifest.write_text("deb systemd 252.38-1~deb12u1\npy flask 3.1.0\n")
    (tmp_path / "os-version").write_text("2027.1\n")
    assert os_image(cmdline, variant, tmp_path / "os-version", manifest) == {
        "slot": "b",
        "version": "2027.1",
        "variant": "production",
        "manifest": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }


def test_outside_the_image_all_are_unknown(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    missing = tmp_path / "missing"
    assert os_image(cmdline, missing, missing, missing) == {
        "slot": None,
        "version": None,
        "variant": None,
        "manifest": None,
    }
