"""The OS image's root slot, version and variant, from the kernel command line and the build's
markers."""

from __future__ import annotations

from app.os_image import os_image


def test_slot_version_and_variant_of_an_image(tmp_path):
    cmdline, variant = tmp_path / "cmdline", tmp_path / "variant"
    cmdline.write_text("root=PARTLABEL=cbroot-b ro console=ttyS0 connectbox.slot=b panic=10\n")
    variant.write_text("production\n")
    (tmp_path / "os-version").write_text("2027.1\n")
    assert os_image(cmdline, variant, tmp_path / "os-version") == {
        "slot": "b",
        "version": "2027.1",
        "variant": "production",
    }


def test_outside_the_image_all_are_unknown(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    missing = tmp_path / "missing"
    assert os_image(cmdline, missing, missing) == {"slot": None, "version": None, "variant": None}
