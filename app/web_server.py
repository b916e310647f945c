"""Running a waitress server on a thread, and stopping it cleanly, once.

Every waitress server in the project (the status page, the reference host, test servers) stops
through `stop_server`. Stopping a waitress server by hand races it in two ways: closing its
sockets from another thread races the loop's `select()`, and a worker thread finishing a request
pulls the server's trigger (writes to its pipe), which fails with EBADF once the trigger is
closed, or writes into whatever file has reused the descriptor number since. So `stop_server`:

1. stops accepting (closes the listening socket on the loop's own thread),
2. lets the worker threads finish what they are doing (the loop still runs, so they can write
   their answers and pull the trigger),
3. then closes every connection and the trigger on the loop's thread, which ends the loop,
4. and closes whatever is left itself once the loop has ended (or if it never ran).

A second call, or one racing the first, waits for the first and does nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.server import BaseWSGIServer
from waitress.trigger import trigger as Trigger

log = logging.getLogger("connectbox.web_server")


class _Stopping:
    """Per server: the lock a second stop waits on, and whether the first one is done."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False


_registry_lock = threading.Lock()
_stopping: weakref.WeakKeyDictionary[Any, _Stopping] = weakref.WeakKeyDictionary()


def serve_in_thread(server: Any, name: str) -> threading.Thread:
    """Run `server` (from waitress' `create_server`) on a daemon thread; stop it with
    `stop_server(server, thread)`."""
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    return thread


def stop_server(server: Any, thread: threading.Thread | None = None, timeout: float = 5.0) -> None:
    """Stop a waitress server cleanly; idempotent and safe from any thread.

    `thread` is the thread running `server.run()` (None: it is not running, or not ours to
    wait for). In-flight requests get up to `timeout` seconds to finish."""
    with _registry_lock:
        stopping = _stopping.setdefault(server, _Stopping())
    with stopping.lock:
        if stopping.done:
            return
        try:
            _stop(server, thread, timeout)
        finally:
            stopping.done = True


def _stop(server: Any, thread: threading.Thread | None, timeout: float) -> None:
    socket_map = _socket_map(server)
    listeners = [d for d in list(socket_map.values()) if isinstance(d, BaseWSGIServer)]
    looping = thread is not None and thread.is_alive() and thread is not threading.current_thread()
    if looping:
        _on_loop(socket_map, lambda: _close_listeners(listeners))
    server.task_dispatcher.shutdown(timeout=timeout)
    if looping:
        assert thread is not None
        _on_loop(socket_map, lambda: _close_all(socket_map))
        thread.join(timeout)
        if thread.is_alive():
            log.warning("web server loop did not end within %.1f s", timeout)
            return  # its sockets are still the loop's: closing them here would race it
    _close_all(socket_map)  # the loop had ended (or never ran): nothing else touches them now


def _socket_map(server: Any) -> dict[int, Any]:
    # A single server keeps its map in _map; a MultiSocketServer (several addresses) in map.
    found = getattr(server, "_map", None)
    return found if found is not None else server.map


def _on_loop(socket_map: dict[int, Any], thunk: Callable[[], None]) -> None:
    """Run `thunk` on the loop's thread (asyncore objects belong to that thread)."""
    trigger = next((d for d in list(socket_map.values()) if isinstance(d, Trigger)), None)
    if trigger is None or trigger._closed:
        return  # the loop is ending by itself: _stop closes what is left after joining it
    try:
        trigger.pull_trigger(thunk)
    except OSError:
        log.debug("web server trigger already closed", exc_info=True)


def _close_listeners(listeners: list[Any]) -> None:
    for listener in listeners:
        wasyncore.dispatcher.close(listener)  # the socket only; its trigger still works


def _close_all(socket_map: dict[int, Any]) -> None:
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.close()  # the listening socket (if still open) and its trigger
        else:
            dispatcher.handle_close()  # a connection, or a trigger
