"""Stopping a waitress server (app/web_server.py): once, twice, from two threads, mid-request."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from waitress.server import create_server

from app.web_server import serve_in_thread, stop_server
from simulators.host.runner import start_in_thread


def _open_fds() -> set[tuple[str, str]]:
    """Each open descriptor with what it is ("socket:[inode]", "pipe:[inode]", a path): a count
    would also move when another test's leftovers close meanwhile; a new entry is a leak."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (listdir's own among them)
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return fds


@pytest.fixture
def thread_errors() -> Iterator[list[Any]]:
    """Exceptions that escape any thread (a worker's EBADF would land here), and waitress'
    own error logs (it logs an exception in a trigger thunk instead of raising it)."""
    errors: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = errors.append

    class Errors(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    handler = Errors(logging.ERROR)
    logging.getLogger("waitress").addHandler(handler)
    yield errors
    logging.getLogger("waitress").removeHandler(handler)
    threading.excepthook = previous


def _slow_app(started: threading.Event, release: threading.Event):
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        started.set()
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    return app


def test_stop_twice_and_from_two_threads_at_once(thread_errors):
    before = _open_fds()
    host = start_in_thread("127.0.0.1", 0)
    assert requests.get(f"{host.url}/_sim/events", timeout=5).ok
    stoppers = [threading.Thread(target=host.stop) for _ in range(3)]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(10)
    host.stop()  # and once more, after the others
    assert not host._thread.is_alive()
    assert thread_errors == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{host.url}/_sim/events", timeout=5)
    host.store.close()
    assert _open_fds() - before == set()  # listening socket, trigger pipe, connections closed


def test_stop_while_a_request_is_being_answered(thread_errors):
    """The worker finishes its answer after stop began: it must still reach the client, and the
    worker's wake-up of the loop must not hit a closed trigger (EBADF)."""
    started, release = threading.Event(), threading.Event()
    server = create_server(_slow_app(started, release), host="127.0.0.1", port=0, threads=2)
    thread = serve_in_thread(server, "test-web")
    answers: list[Any] = []
    client = threading.Thread(
        target=lambda: answers.append(
            requests.get(f"http://127.0.0.1:{server.effective_port}/", timeout=10)
        )
    )
    client.start()
    assert started.wait(5)
    stopper = threading.Thread(target=stop_server, args=(server, thread))
    stopper.start()
    # The stop waits for the worker (it holds the request) rather than closing under it.
    assert stopper.is_alive()
    release.set()
    stopper.join(10)
    client.join(10)
    assert not thread.is_alive() and not stopper.is_alive()
    assert [a.text for a in answers] == ["done"]
    assert thread_errors == []


def test_stop_under_a_stream_of_requests(thread_errors):
    host = start_in_thread("127.0.0.1", 0)
    stop = threading.Event()
    outcomes: list[str] = []

    def client() -> None:
        with requests.Session() as session:  # keep-alive: connections open at stop time
            while not stop.is_set():
                try:
                    session.get(f"{host.url}/_sim/events", timeout=5)
                    outcomes.append("ok")
                except requests.RequestException:
                    outcomes.append("refused")

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 10
    while outcomes.count("ok") < 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    host.stop()
    host.stop()
    stop.set()
    for c in clients:
        c.join(10)
    assert thread_errors == []


def test_stop_a_server_that_never_ran():
    before = _open_fds()
    server = create_server(lambda e, s: [], host="127.0.0.1", port=0, threads=1)
    stop_server(server)
    stop_server(server)
    assert _open_fds() - before == set()
