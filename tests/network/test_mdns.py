"""The box's mDNS announcement, seen by a real, independent client: Debian's avahi-browse.

The "site" namespace runs its own D-Bus daemon and avahi-daemon (config files in tmp_path, a
private /run for avahi's pid file, nothing shared with the machine); the Announcer runs in the
"box" namespace in its own process. They only meet over the veth pair, by multicast.

Needs the Debian packages avahi-daemon, avahi-utils and dbus: the test fails (never skips) when
they are missing, naming them.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.network.mdns import HTTP_TYPE, SERVICE_TYPE, Announcer, instance_suffix
from tests.network.netns import PYTHON, Namespace, namespace, site_and_box

PACKAGES = "avahi-daemon avahi-utils dbus"
DEVICE = "D-MDNS-4711"
NAME = f"Connect Box {instance_suffix(DEVICE)}"
CLASH_DEVICE = "D-CLASH-0042"
CLASH_NAME = f"Connect Box {instance_suffix(CLASH_DEVICE)}"

DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
host-name=cb-site-{tag}
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-addresses=yes
publish-hinfo=no
publish-workstation=no

[reflector]

[rlimits]
"""


def require_avahi() -> None:
    missing = [t for t in ("avahi-daemon", "avahi-browse", "dbus-daemon") if not shutil.which(t)]
    if missing:
        pytest.fail(
            f"the mDNS test needs {', '.join(missing)}: "
            f"apt-get install -y --no-install-recommends {PACKAGES}"
        )


@dataclass
class Browser:
    ns: Namespace
    bus: str

    def browse(self, service_type: str, ask: bool = False) -> list[dict]:
        """Resolved services of a type: with `ask`, avahi-browse queries the network and waits
        for the answers (`-rpt`, about 1 s); otherwise it lists avahi's cache of what it heard
        on the wire (`-rpc`, at once).

        avahi-browse now and then never reports "all for now" while avahi is busy flushing
        goodbye packets; such a run is retried rather than failing the test."""
        command = [
            "avahi-browse", "--resolve", "--parsable", "--no-db-lookup",
            "--terminate" if ask else "--cache", service_type.removesuffix(".local."),
        ]  # fmt: skip
        for attempt in range(3):
            try:
                done = self.ns.run(command, env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus}, timeout=8)
                break
            except subprocess.TimeoutExpired:
                if attempt == 2:
                    raise
        assert done.returncode == 0, done.stderr
        found = []
        for line in done.stdout.splitlines():
            fields = line.split(";")
            if fields[0] != "=" or len(fields) < 10:
                continue
            txt = ";".join(fields[9:])
            found.append(
                {
                    "name": _unescape(fields[3]),
                    "host": fields[6],
                    "address": fields[7],
                    "port": int(fields[8]),
                    "txt": dict(
                        item.split("=", 1) if "=" in item else (item, "")
                        for item in re.findall(r'"((?:[^"\\]|\\.)*)"', txt)
                    ),
                }
            )
        return found

    def publish(self, name: str, service_type: str, port: int) -> None:
        """Hold `name` with avahi-publish (a real, independent responder) until the end."""
        self.ns.popen(
            ["avahi-publish", "-s", name, service_type.removesuffix(".local."), str(port)],
            env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_for(service_type, lambda found: name in _names(found))

    def wait_for(self, service_type: str, predicate, timeout_s: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.browse(service_type)
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"avahi did not see what was expected: {found}")
            time.sleep(0.1)


def _names(found: list[dict]) -> set[str]:
    return {s["name"] for s in found}


def _unescape(name: str) -> str:
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), name).replace("\\.", ".")


def _wait_file(path: Path, text: str, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    log = path.read_text(errors="replace") if path.exists() else "(no output)"
    raise AssertionError(f"{what} did not start: {log}")


@contextmanager
def avahi_in(ns: Namespace, interface: str, tag: str, directory: Path) -> Iterator[Browser]:
    """A private D-Bus system bus and avahi-daemon inside `ns`, stopped with the namespace."""
    require_avahi()
    socket_path = directory / "bus.sock"
    (directory / "dbus.conf").write_text(DBUS_CONF.format(socket=socket_path))
    (directory / "avahi.conf").write_text(AVAHI_CONF.format(tag=tag, interface=interface))
    bus = f"unix:path={socket_path}"
    dbus_log = (directory / "dbus.log").open("w")
    ns.popen(
        ["dbus-daemon", f"--config-file={directory / 'dbus.conf'}", "--nofork", "--nopidfile"],
        stdout=dbus_log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        assert time.monotonic() < deadline, (directory / "dbus.log").read_text()
        time.sleep(0.02)
    avahi_log = (directory / "avahi.log").open("w")
    # a private /run (in this command's own mount namespace) for avahi's pid file and socket
    script = 'mount -t tmpfs tmpfs /run && mkdir -p /run/avahi-daemon && exec "$@"'
    ns.popen(
        ["sh", "-c", script, "sh", "avahi-daemon", f"--file={directory / 'avahi.conf'}",
         "--no-drop-root", "--no-chroot", "--no-rlimits", "--no-proc-title"],
        env={"DBUS_SYSTEM_BUS_ADDRESS": bus},
        stdout=avahi_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_file(directory / "avahi.log", "Server startup complete", 15, "avahi-daemon")
        yield Browser(ns, bus)
    finally:
        ns.stop_processes()
        dbus_log.close()
        avahi_log.close()


ANNOUNCER_CODE = """
import json, sys, time
from app.network.mdns import Announcer

def say(**data):
    print(json.dumps(data), flush=True)

first = Announcer(sys.argv[1], "1.2.3", 9000, 8080, addresses=[sys.argv[2]])
first.start()
say(announced=first.wait_announced(10), names=first.names)
second = None
for line in sys.stdin:
    command = line.split()
    if command[0] == "status":
        first.update_status(command[1])
        say(updated=command[1])
    elif command[0] == "second":
        second = Announcer(command[1], "1.2.3", 9001, 8081, addresses=[sys.argv[2]])
        second.start()
        say(announced=second.wait_announced(10), names=second.names)
    elif command[0] == "close":
        started = time.monotonic()
        first.close()
        if second:
            second.close()
        close_s = time.monotonic() - started
        finished = not first._thread.is_alive()
        first._thread.join(30)  # a slow machine: let the goodbyes go out before exiting
        say(close_s=close_s, finished=finished, snapshot=first.snapshot())
        break
"""


class Remote:
    """The announcer process in the box namespace, driven line by line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def read(self, timeout_s: float = 20) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        assert ready, "the announcer process did not answer in time"
        line = self.proc.stdout.readline()
        assert line, f"the announcer process ended: {self.proc.stderr.read()}"
        return json.loads(line)

    def send(self, command: str, timeout_s: float = 20) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout_s)


def test_avahi_in_another_namespace_sees_the_box(tmp_path):
    require_avahi()
    with site_and_box() as net, avahi_in(net.site, net.site_if, net.tag, tmp_path) as avahi:
        proc = net.box.popen(
            [PYTHON, "-c", ANNOUNCER_CODE, DEVICE, "192.0.2.10"], stdin=subprocess.PIPE
        )
        box = Remote(proc)
        hello = box.read()
        assert hello["announced"], hello
        assert hello["names"] == {SERVICE_TYPE: NAME, HTTP_TYPE: NAME}

        # _connectbox._tcp on the POS port with its TXT record: avahi-browse asks the network
        found = avahi.browse(SERVICE_TYPE, ask=True)
        assert NAME in _names(found), found
        service = next(s for s in found if s["name"] == NAME)
        assert service["address"] == "192.0.2.10" and service["port"] == 9000
        assert service["host"] == f"connectbox-{instance_suffix(DEVICE).lower()}.local"
        assert service["txt"] == {
            "txtvers": "1",
            "id": DEVICE,
            "version": "1.2.3",
            "status": "starting",
            "status_port": "8080",
        }
        # _http._tcp for the status page
        web = avahi.browse(HTTP_TYPE, ask=True)
        page = next(s for s in web if s["name"] == NAME)
        assert page["port"] == 8080 and page["txt"]["path"] == "/"

        # a new status reaches the TXT record (that the caller never waits for it: below)
        assert box.send("status online") == {"updated": "online"}
        avahi.wait_for(
            SERVICE_TYPE,
            lambda f: any(s["name"] == NAME and s["txt"].get("status") == "online" for s in f),
        )

        # another responder (avahi itself) already holds the next box's name: it takes "-2"
        avahi.publish(CLASH_NAME, SERVICE_TYPE, 9999)
        clash = box.send(f"second {CLASH_DEVICE}")
        assert clash["announced"]
        renamed = f"{CLASH_NAME}-2"
        assert clash["names"] == {SERVICE_TYPE: renamed, HTTP_TYPE: renamed}
        both = avahi.wait_for(SERVICE_TYPE, lambda f: {CLASH_NAME, renamed} <= _names(f))
        ports = {s["name"]: s["port"] for s in both}
        assert ports[CLASH_NAME] == 9999 and ports[renamed] == 9001 and ports[NAME] == 9000

        # on shutdown the services are withdrawn (goodbye packets), quickly
        closed = box.send("close")
        assert closed["close_s"] < 3.0 + 2.0  # close() waits at most close_timeout_s (3 s)
        assert closed["snapshot"]["announced"] is False
        proc.wait(10)
        avahi.wait_for(SERVICE_TYPE, lambda f: _names(f) == {CLASH_NAME})
        avahi.wait_for(HTTP_TYPE, lambda f: not f)


LONELY_CODE = """
import asyncio, json, logging, threading
from app.network.mdns import Announcer

announcements = []

class Seen(logging.Handler):
    def emit(self, record):
        if "announced over mDNS" in record.getMessage():
            announcements.append(record.getMessage())

logging.getLogger("connectbox.mdns").addHandler(Seen())
logging.getLogger("connectbox.mdns").setLevel(logging.INFO)

# Probing takes about 3 s; here it does not end at all, so reaching the next line proves that
# start() and update_status() never wait for it, and close() must interrupt it, however slow
# the machine is.
probing = threading.Event()

async def endless_probing(self, zc):
    probing.set()
    await asyncio.Event().wait()

Announcer._register_all = endless_probing
announcer = Announcer("D-1", "1.2.3", 9000, 8080)
announcer.start()
announcer.update_status("online")
assert probing.wait(20), "the announcer thread never began probing"
snapshot = announcer.snapshot()
announcer.close()
print(json.dumps({"snapshot": snapshot, "after": announcer.snapshot(),
                  "closed": not announcer._thread.is_alive(), "announcements": announcements}))
"""


def test_announcer_on_a_box_without_network_never_blocks():
    """Only loopback (a namespace of its own): start() and update_status() return during the
    probing, close() interrupts it, nothing raises."""
    with namespace("box") as ns:
        done = ns.python(LONELY_CODE, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["snapshot"]["status"] == "online"
    assert report["snapshot"]["announced"] is False  # still probing
    assert report["snapshot"]["addresses"] == []  # loopback only: nothing to announce
    assert report["closed"]  # the thread ended within close(): it did not finish the probing
    assert report["announcements"] == [] and report["after"]["announced"] is False


def test_instance_names():
    assert instance_suffix("D-MDNS-4711") == "NS4711"
    assert instance_suffix("---") == "BOX"
    assert Announcer("box-7", "1", 1, 2).base_name == "Connect Box BOX7"
    assert Announcer("box-7", "1", 1, 2, name="Pump Side").base_name == "Pump Side"
