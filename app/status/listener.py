"""The status listener: waitress serving the status app, with limits, and a stop without errors.

The limits keep a flood of HTTP clients small next to the POS (which shares this process and its
GIL): few worker threads, few open channels, small requests, idle channels closed soon. The page
and the API need no more: a technician's browser, a monitoring probe, a small PIN form.

`stop()` is `app.web_server.stop_server`, the one way every waitress server here is stopped, so
nothing touches a closed socket or a closed journal: the listening socket is closed inside
waitress's own loop thread (closing it from another thread is what made the loop fail with "Bad
file descriptor"), the worker threads finish the requests they are serving, then the loop thread
closes every channel and its loop ends. A second stop does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from waitress.server import create_server

from app.web_server import serve_in_thread, stop_server

log = logging.getLogger("connectbox.status")

LIMITS: dict[str, Any] = {
    # Rendering is CPU work under the GIL: more threads would only take turns away from the POS.
    "threads": 2,
    "connection_limit": 32,  # channels open at once; the rest wait in the listen backlog
    "backlog": 128,
    "channel_timeout": 30,  # an idle keep-alive channel is closed after this long
    "cleanup_interval": 5,  # how often idle channels are looked for
    "max_request_header_size": 16 * 1024,
    "max_request_body_size": 64 * 1024,  # the largest body is the PIN form of an action
    "inbuf_overflow": 64 * 1024,
    "expose_tracebacks": False,
    # poll(), not select(): with many POS connections open, a status socket's descriptor can be
    # 1024 or more, which select() cannot watch (its loop thread would die).
    "asyncore_use_poll": True,
}
STEP_TIMEOUT_S = 2.0
# waitress logs a warning for every request that waits for a worker: a flood would flood the log.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class StatusListener:
    def __init__(self, app: Callable[..., Any], host: str, port: int) -> None:
        self._map: dict[int, Any] = {}
        self.server = create_server(
            app, map=self._map, host=host, port=port, ident="connectbox", **LIMITS
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if hasattr(self.server, "effective_port"):
            return int(self.server.effective_port)
        return int(self.server.effective_listen[0][1])

    def start(self) -> None:
        self._thread = serve_in_thread(self.server, "status-web")

    def stop(self) -> None:
        """Stop accepting, let the requests being served finish, then close every channel."""
        stop_server(self.server, self._thread, STEP_TIMEOUT_S)
