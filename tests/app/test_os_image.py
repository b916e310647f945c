"""The OS image's root slot and variant, from the kernel command line and the build's marker."""

from __future__ import annotations

from app.os_image import os_image


def test_slot_and_variant_of_an_image(tmp_path):
    cmdline, variant = tmp_path / "cmdline", tmp_path / "variant"
    cmdline.write_text("root=PARTLABEL=cbroot-b ro console=ttyS0 connectbox.slot=b panic=10\n")
    variant.write_text("production\n")
    assert os_image(cmdline, variant) == {"slot": "b", "variant": "production"}


def test_outside_the_image_both_are_unknown(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    assert os_image(cmdline, tmp_path / "missing") == {"slot": None, "variant": None}
