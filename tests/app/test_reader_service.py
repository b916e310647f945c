"""ReaderService life cycle: start, stop and rebind in any order, from several threads at once.

The readers are real SerialReaders on pseudo-terminals (VirtualSerialReader); one is found by a
stand-in USB bus (`lister`), so the device monitor's thread takes part in the races too.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator

import pytest

from app.readers import ReaderBinding, ReaderService
from drivers.discovery import DeviceInfo
from simulators.readers.virtual import VirtualSerialReader
from tests.waiting import wait_for

WAIT = 10.0


def _wait(predicate: Callable[[], bool], what: str) -> None:
    assert wait_for(predicate, WAIT), what


def _reader_threads(ptys: list[VirtualSerialReader]) -> list[str]:
    """The paths of this test's live reader threads (others' may linger in a full run)."""
    ours = {f"reader {p.path}" for p in ptys}
    return [t.name.removeprefix("reader ") for t in threading.enumerate() if t.name in ours]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def ptys(tmp_path) -> Iterator[list[VirtualSerialReader]]:
    readers = [VirtualSerialReader(directory=tmp_path, name=f"r{i}") for i in range(3)]
    yield readers
    for reader in readers:
        reader.close()


def _bindings(ptys: list[VirtualSerialReader]) -> tuple[list[ReaderBinding], list[ReaderBinding]]:
    plugged = ReaderBinding("3", match={"vendor_id": "0801"})
    first = [ReaderBinding("1", path=ptys[0].path), plugged]
    second = [ReaderBinding("1", path=ptys[0].path), ReaderBinding("2", path=ptys[1].path)]
    return first, second


def _service(ptys: list[VirtualSerialReader], bindings: list[ReaderBinding]) -> ReaderService:
    bus = [DeviceInfo(ptys[2].path, "serial", "0801", "0011", "B1", "1-1.2", "MagTek")]
    return ReaderService(bindings, lister=lambda: list(bus))


def _expected_paths(service: ReaderService, ptys: list[VirtualSerialReader]) -> set[str]:
    paths = {b.path for b in service.bindings if b.path}
    if any(b.match for b in service.bindings):
        paths.add(ptys[2].path)
    return paths


def _assert_running(service: ReaderService, ptys: list[VirtualSerialReader]) -> None:
    expected = _expected_paths(service, ptys)
    _wait(
        lambda: {p for p, s in service.states.items() if s.state == "connected"} == expected,
        f"readers {expected} connected: {service.snapshot()}",
    )
    assert sorted(_reader_threads(ptys)) == sorted(expected)


def test_start_stop_rebind_from_many_threads(ptys):
    first, second = _bindings(ptys)
    fds_before = _open_fds()
    service = _service(ptys, first)
    errors: list[Exception] = []
    go = threading.Barrier(4)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        go.wait()
        try:
            for _ in range(25):
                action = rng.choice(("start", "stop", "rebind"))
                if action == "rebind":
                    service.rebind(rng.choice((first, second)))
                else:
                    getattr(service, action)()
        except Exception as exc:  # any failure in a thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a life-cycle call hung"
    assert errors == []
    assert service.phase in ("stopped", "running")

    # Whatever order the calls ran in, the service is usable: running, it reads every binding.
    service.start()
    _assert_running(service, ptys)
    service.rebind(second if service.bindings is first else first)
    _assert_running(service, ptys)

    service.stop()
    service.stop()  # idempotent
    assert service.phase == "stopped" and _reader_threads(ptys) == []
    assert all(s.state == "stopped" for s in service.states.values())
    assert _open_fds() <= fds_before  # no port, wake pipe or monitor left open (others may close)


def test_rebind_while_starting_keeps_the_reader(ptys):
    """The box's start and the provider's config (management thread) racing: the old bug."""
    first, second = _bindings(ptys)
    for _ in range(10):
        service = _service(ptys, first)
        racer = threading.Thread(target=service.rebind, args=(second,))
        racer.start()
        service.start()
        racer.join(WAIT)
        assert service.bindings is second
        _assert_running(service, ptys)
        service.stop()
        assert _reader_threads(ptys) == []


def test_rebind_before_start_only_changes_the_bindings(ptys):
    first, second = _bindings(ptys)
    service = _service(ptys, first)
    service.rebind(second)
    assert service.phase == "stopped" and _reader_threads(ptys) == []
    service.start()
    _assert_running(service, ptys)
    service.stop()


def test_rebind_after_stop_does_not_start_it_again(ptys):
    first, second = _bindings(ptys)
    service = _service(ptys, first)
    service.start()
    _assert_running(service, ptys)
    service.stop()
    service.rebind(second)
    assert service.phase == "stopped" and _reader_threads(ptys) == []


def test_stop_before_start_is_a_no_op(ptys):
    first, _ = _bindings(ptys)
    service = _service(ptys, first)
    service.stop()
    service.start()
    _assert_running(service, ptys)
    service.stop()
