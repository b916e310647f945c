"""Boot the Connect Box image in QEMU and serve a sale through it.

Slow and needs root to build (scripts/build-image); skipped unless asked for:

    CONNECTBOX_IMAGE_TEST=1 .venv/bin/python -m pytest tests/image/test_boot.py -s

CONNECTBOX_IMAGE_DIR=<dir> reuses an image already built there (its image.env); otherwise the
test runs scripts/build-image --out build/image (the rootfs is cached in build/cache).
CONNECTBOX_QEMU_ACCEL picks the accelerator (default tcg; kvm where KVM works).
The reference host runs here on 127.0.0.1:<the port baked into the image>: QEMU's user
networking maps its host alias (inside the VM the test starts) to this machine's 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOT_DEADLINE_S = 120

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CONNECTBOX_IMAGE_TEST") or os.environ.get("CONNECTBOX_IMAGE_DIR")),
    reason="boots a VM: runs in the image stage (scripts/test-image, part of .ci/run)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_env(directory: Path) -> dict[str, str]:
    env = {}
    for line in (directory / "image.env").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    directory = os.environ.get("CONNECTBOX_IMAGE_DIR")
    if directory:
        return _image_env(Path(directory))
    out = ROOT / "build" / "image"
    started = time.monotonic()
    subprocess.run([str(ROOT / "scripts" / "build-image"), "--out", str(out)], check=True)
    print(f"image built in {time.monotonic() - started:.0f} s")
    return _image_env(out)


@pytest.fixture(scope="module")
def reference_host(image):
    from app.host.reference.server import start_in_thread

    host = start_in_thread("127.0.0.1", int(image["CONNECTBOX_IMAGE_HOST_PORT"]))
    yield host
    host.stop()


@pytest.fixture(scope="module")
def vm(image, reference_host, tmp_path_factory):
    status_port, pos_port = _free_port(), _free_port()
    accel = os.environ.get("CONNECTBOX_QEMU_ACCEL", "tcg")
    console = tmp_path_factory.mktemp("qemu") / "console.log"
    argv = [
        "qemu-system-x86_64",
        "-accel", accel,
        "-m", "1024",
        "-nographic",
        "-snapshot",
        "-kernel", image["CONNECTBOX_IMAGE_KERNEL"],
        "-initrd", image["CONNECTBOX_IMAGE_INITRD"],
        "-append", "root=LABEL=cbroot console=ttyS0 rw",
        "-drive", f"file={image['CONNECTBOX_IMAGE_ROOTFS']},format=raw,if=virtio",
        "-netdev",
        f"user,id=n0,hostfwd=tcp:127.0.0.1:{status_port}-:8080,"
        f"hostfwd=tcp:127.0.0.1:{pos_port}-:9000",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    with open(console, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    started = time.monotonic()
    try:
        yield {
            "status_port": status_port,
            "pos_port": pos_port,
            "started": started,
            "console": console,
            "proc": proc,
        }
    finally:
        proc.kill()
        proc.wait(timeout=30)
        print(f"QEMU console log: {console}")


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return response.status
    except Exception:
        return None


def test_status_page_answers_within_120_s(vm):
    deadline = vm["started"] + BOOT_DEADLINE_S
    status = None
    while time.monotonic() < deadline:
        if vm["proc"].poll() is not None:
            tail = vm["console"].read_text(errors="replace")[-3000:]
            raise AssertionError("QEMU exited: " + tail)
        status = _healthz(vm["status_port"])
        if status == 200:
            break
        time.sleep(1)
    tail = vm["console"].read_text(errors="replace")[-3000:]
    assert status == 200, f"/healthz not 200 within {BOOT_DEADLINE_S} s (last: {status})\n{tail}"
    print(f"/healthz 200 after {time.monotonic() - vm['started']:.0f} s")


def test_sale_gets_the_scan_data_discount(vm, reference_host):
    from app.pos import simulator as sim

    lines: list[str] = []
    deadline = time.monotonic() + 60
    while True:  # the box may need a moment to reach the host after /healthz answers
        lines.clear()
        try:
            with sim.PosClient("127.0.0.1", vm["pos_port"], timeout=10.0) as client:
                result = sim.tobacco_phone_sale(client, lines.append)
        except Exception as exc:
            result, error = None, exc
        else:
            error = None
        if result is not None and result.discount > 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no Scan Data discount: {error or result}\n" + "\n".join(lines))
        time.sleep(3)
    print("\n".join(lines))
    events = reference_host.store.events() if hasattr(reference_host.store, "events") else None
    print(f"reference host events: {None if events is None else len(events)}")
