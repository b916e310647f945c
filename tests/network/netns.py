"""Network namespaces for tests: made fresh for each use, always deleted afterwards.

`site_and_box()` builds the smallest site network: a "site" namespace (the router, 192.0.2.1,
TEST-NET-1) and a "box" namespace (192.0.2.10, default route via the site), joined by a veth
pair created directly inside the namespaces, so the machine's own interfaces and routes are
never touched. Processes started through a namespace are ended before it is deleted.

Commands run inside a namespace with `ip netns exec`, which gives each command its own mount
namespace: a test resolv.conf is bind-mounted over /etc/resolv.conf there and nowhere else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def require_netns() -> None:
    """Fail (not skip) when the machine cannot make network namespaces."""
    if os.geteuid() != 0:
        pytest.fail("network namespace tests need root (ip netns add)")
    if not shutil.which("ip"):
        pytest.fail("network namespace tests need iproute2: apt-get install iproute2")


def run(argv: list[str], timeout: float = 15, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class Namespace:
    name: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.name, *args], check=check)

    def argv(self, argv: list[str], resolv_conf: Path | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.name]
        if resolv_conf is None:
            return prefix + argv
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return prefix + ["sh", "-c", script, str(resolv_conf), *argv]

    def run(
        self,
        argv: list[str],
        resolv_conf: Path | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(argv, resolv_conf),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def popen(
        self,
        argv: list[str],
        resolv_conf: Path | None = None,
        env: dict[str, str] | None = None,
        **kwargs,
    ) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            self.argv(argv, resolv_conf),
            cwd=REPO,
            env={**os.environ, **(env or {})},
            text=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def python(
        self, code: str, *args: str, resolv_conf: Path | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        return self.run([PYTHON, "-c", code, *args], resolv_conf=resolv_conf, timeout=timeout)

    def stop_processes(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.procs.clear()


@contextmanager
def namespace(role: str, tag: str | None = None) -> Iterator[Namespace]:
    """One fresh namespace `cb-<role>-<tag>` with its loopback up."""
    require_netns()
    ns = Namespace(f"cb-{role}-{tag or secrets.token_hex(3)}")
    run(["ip", "netns", "add", ns.name])
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        ns.stop_processes()
        for _ in range(20):  # a process on its way out may hold it for a moment
            if run(["ip", "netns", "del", ns.name], check=False).returncode == 0:
                break
            time.sleep(0.05)


@dataclass
class Site:
    site: Namespace
    box: Namespace
    site_if: str
    box_if: str
    tag: str


@contextmanager
def site_and_box(
    site_addrs: tuple[str, ...] = ("192.0.2.1/24",),
    box_addr: str = "192.0.2.10/24",
    gateway: str | None = "192.0.2.1",
) -> Iterator[Site]:
    """A site namespace and a box namespace joined by a veth pair (see the module doc)."""
    tag = secrets.token_hex(3)
    with ExitStack() as stack:
        site = stack.enter_context(namespace("site", tag))
        box = stack.enter_context(namespace("box", tag))
        site_if, box_if = f"cbs{tag}", f"cbb{tag}"
        # both ends are born inside their namespaces: the host's namespace never sees them
        run(
            f"ip link add {site_if} netns {site.name} "
            f"type veth peer name {box_if} netns {box.name}".split()
        )
        for address in site_addrs:
            site.ip("addr", "add", address, "dev", site_if)
        box.ip("addr", "add", box_addr, "dev", box_if)
        site.ip("link", "set", site_if, "up")
        box.ip("link", "set", box_if, "up")
        if gateway:
            box.ip("route", "add", "default", "via", gateway)
        yield Site(site, box, site_if, box_if, tag)
