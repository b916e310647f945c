"""What a production image holds, read from outside (no boot): no test key, token or claim code,
no simulators (their distribution is not installed, so `connectbox` offers none of their
commands), no login, a locked root, the provider's host in the factory configuration.

Runs in the image stage, which builds a production image and sets
CONNECTBOX_PRODUCTION_IMAGE_DIR (scripts/test-image); by hand:

    sudo scripts/build-image --out build/image-production --host-url https://host.example.com \
        --trusted-key k1=<base64 of a 32-byte Ed25519 public key>
    CONNECTBOX_PRODUCTION_IMAGE_DIR=build/image-production \
        .venv/bin/python -m pytest tests/image/test_contents.py

Files are read with debugfs (e2fsprogs) straight from the partition images.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from provisioning import osimage
from provisioning.releases import file_sha256, verify_signature
from simulators.host.keys import TEST_PUBLIC_KEY_B64
from tests.image.qemu import MIB, Disk, image_env

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.environ.get("CONNECTBOX_PRODUCTION_IMAGE_DIR"),
    reason="reads a built production image: runs in the image stage (scripts/test-image)",
)


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    env = image_env(Path(os.environ["CONNECTBOX_PRODUCTION_IMAGE_DIR"]))
    assert env["CONNECTBOX_IMAGE_VARIANT"] == "production"
    return env


@pytest.fixture(scope="module")
def data_partition(image, tmp_path_factory) -> Path:
    disk = Disk(Path(image["CONNECTBOX_IMAGE_DISK"]))
    part = disk.partitions["cbdata"]
    out = tmp_path_factory.mktemp("data") / "data.ext4"
    subprocess.run(
        ["dd", f"if={disk.path}", f"of={out}", "bs=1M", f"skip={part.start // MIB}",
         f"count={part.size // MIB}", "conv=sparse", "status=none"],
        check=True,
    )  # fmt: skip
    return out


def _cat(filesystem: str | Path, path: str) -> str | None:
    done = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(filesystem)], capture_output=True, text=True
    )
    if done.returncode != 0 or "File not found" in done.stderr:
        return None
    return done.stdout


def _ls(filesystem: str | Path, path: str) -> list[str]:
    """The names in a directory (debugfs `ls -p`: /inode/mode/uid/gid/name/size/ a line)."""
    done = subprocess.run(
        ["debugfs", "-R", f"ls -p {path}", str(filesystem)], capture_output=True, text=True
    )
    names = [line.split("/")[5] for line in done.stdout.splitlines() if line.count("/") >= 6]
    return [name for name in names if name not in (".", "..")]


def test_no_test_key_token_or_simulator_anywhere_on_the_disk(image):
    needles = [
        TEST_PUBLIC_KEY_B64.encode(),
        b"test-k1",
        b"demo-token",
        b"D-DEMO",
        b"c0ec7b0c5e0d7e57",  # the reference host's published private seed
        b"simulators/host/keys.py",  # in the simulators' RECORD, had their wheel been installed
    ]
    with (
        open(image["CONNECTBOX_IMAGE_DISK"], "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as disk,
    ):
        found = [n.decode() for n in needles if disk.find(n) != -1]
    assert found == []


def test_the_factory_release_installs_connectbox_without_its_simulators(image):
    slot = image["CONNECTBOX_IMAGE_SLOT"]
    venv = f"/usr/lib/connectbox/releases/{image['CONNECTBOX_IMAGE_VERSION']}/venv"
    [python] = [name for name in _ls(slot, f"{venv}/lib") if name.startswith("python3")]
    site = f"{venv}/lib/{python}/site-packages"
    names = _ls(slot, site)
    assert {"app", "drivers", "provisioning"} <= set(names)
    assert f"connectbox-{image['CONNECTBOX_IMAGE_VERSION']}.dist-info" in names
    assert "simulators" not in names
    assert not [name for name in names if name.lower().startswith("connectbox_simulators")]
    # No installed distribution adds `connectbox` commands (the simulators add demo, host-sim,
    # pos-sim and reader-sim that way): the production CLI offers none of them.
    for dist_info in (name for name in names if name.endswith(".dist-info")):
        entry_points = _cat(slot, f"{site}/{dist_info}/entry_points.txt") or ""
        assert "[connectbox.commands]" not in entry_points, dist_info


def test_factory_configuration_names_the_provider_and_holds_no_credentials(data_partition):
    config = _cat(data_partition, "/etc/connectbox/connectbox.toml")
    assert config is not None and 'url = "https://' in config
    assert "token" not in config and "device_id" not in config and "claim_code" not in config
    assert _cat(data_partition, "/etc/connectbox/claim") is None  # written at the factory


def test_no_login_and_a_locked_root(image):
    slot = image["CONNECTBOX_IMAGE_SLOT"]
    assert _cat(slot, "/usr/lib/connectbox/variant") == "production\n"
    shadow = _cat(slot, "/etc/shadow")
    assert shadow is not None
    root = next(line for line in shadow.splitlines() if line.startswith("root:"))
    assert root.split(":")[1].startswith("!")
    assert _cat(slot, "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf") is None
    # No getty on the serial console either (systemd would start one on the kernel console).
    mask = subprocess.run(
        ["debugfs", "-R", "stat /etc/systemd/system/serial-getty@ttyS0.service", slot],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert 'Fast link dest: "/dev/null"' in mask
    assert _cat(slot, "/usr/sbin/sshd") is None


def test_the_slot_records_its_manifest_and_runs_exactly_the_locked_python_packages(image):
    slot = image["CONNECTBOX_IMAGE_SLOT"]
    manifest = _cat(slot, "/usr/lib/connectbox/manifest.txt")
    assert manifest is not None
    debs = [line for line in manifest.splitlines() if line.startswith("deb ")]
    assert any(line.startswith("deb systemd ") for line in debs) and len(debs) > 100
    installed = {
        name.lower(): version
        for name, version in (
            line.removeprefix("python ").split("==")
            for line in manifest.splitlines()
            if line.startswith("python ")
        )
    }
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            locked[name.lower()] = version
    assert {name: installed.get(name) for name in locked} == locked
    assert installed.get("connectbox") == image["CONNECTBOX_IMAGE_VERSION"]
    assert "connectbox-simulators" not in installed


def test_the_software_root_is_root_s_and_the_helpers_are_configured(image, data_partition):
    listing = subprocess.run(
        ["debugfs", "-R", "ls -p /", str(data_partition)], capture_output=True, text=True
    ).stdout
    [software] = [line for line in listing.splitlines() if "/software/" in line]
    assert software.split("/")[3:5] == ["0", "0"]  # uid, gid: root's, not the service's
    config = _cat(data_partition, "/etc/connectbox/connectbox.toml") or ""
    for socket_path in ("connectbox-update", "connectbox-clock", "connectbox-journal-sync"):
        assert f'"/run/{socket_path}.sock"' in config


def test_the_slot_artefact_is_signed_with_a_key_the_image_trusts(image, data_partition):
    if not image.get("CONNECTBOX_IMAGE_OS_ARTEFACT"):
        pytest.skip("built without --slot-key: no slot artefact")
    artefact = Path(image["CONNECTBOX_IMAGE_OS_ARTEFACT"])
    args = json.loads(artefact.with_name(artefact.name + ".json").read_text())
    version = image["CONNECTBOX_IMAGE_OS_VERSION"]
    assert args["version"] == version and args["size"] == artefact.stat().st_size
    assert args["sha256"] == file_sha256(artefact)
    config = tomllib.loads(_cat(data_partition, "/etc/connectbox/connectbox.toml") or "")
    trusted = config["policy"]["trusted_keys"]
    verify_signature(args["sha256"].encode(), args["signature"], trusted, args["key_id"])
    with open(artefact, "rb") as raw:
        stream = osimage.ArtefactStream(raw)
        size, reader = stream.member(osimage.MANIFEST, osimage.MAX_MANIFEST_BYTES)
        manifest = osimage.parse_manifest(reader.read(size))
    assert manifest.version == version
    for slot in osimage.SLOTS:
        osimage.check_entry(manifest.entries[slot], slot)
    assert _cat(image["CONNECTBOX_IMAGE_SLOT"], "/usr/lib/connectbox/os-version") == version + "\n"
    print(f"FIGURE production slot artefact: {artefact.stat().st_size / MIB:.1f} MiB")
