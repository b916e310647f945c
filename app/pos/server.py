"""The TCP server the POS connects to: persistent connections, one thread each.

A connection's framer is chosen by the configured dialect ("auto" decides from its first bytes).
A frame that cannot be parsed closes that connection only, with a log line that says why; the
other connections and the listener keep going.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

from app.pos.framing import DEFAULT_MAX_FRAME, FramingError, make_framer
from app.pos.model import Request
from app.pos.service import LoyaltyService, NotAccepted
from app.pos.xmlcodec import XmlError, write_response
from app.stats import LatencyWindow

log = logging.getLogger("connectbox.pos")


@dataclass
class ConnectionInfo:
    peer: str
    dialect: str | None = None
    connected_at: float = field(default_factory=time.time)
    last_message_at: float | None = None
    messages: int = 0
    register: str | None = None  # the register of the latest request that named one
    vendor: str = ""  # what the POS says it is: VendorName, VendorModelVersion, interface version
    model_version: str = ""
    interface_version: str = ""

    def note(self, request: Request, dialect: str | None) -> None:
        """What this request tells about the POS at the other end."""
        head = request.header
        self.dialect = dialect
        self.messages += 1
        self.last_message_at = time.time()
        self.register = request.register or self.register
        self.vendor = head.vendor_name or self.vendor
        self.model_version = head.vendor_model_version or self.model_version
        self.interface_version = head.interface_version or self.interface_version


class PosServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        service: LoyaltyService,
        dialect: str = "auto",
        max_frame: int = DEFAULT_MAX_FRAME,
        idle_timeout_s: float = 900.0,
    ) -> None:
        self.service = service
        self.dialect = dialect
        self.max_frame = max_frame
        self.idle_timeout_s = idle_timeout_s
        self.overhead = LatencyWindow()
        self.connections: dict[int, ConnectionInfo] = {}
        self.peers: dict[str, dict[str, object]] = {}  # past POS connections by address
        self.closed_bad_input = 0
        self._sockets: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, PosConnection)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.1,), name="pos-server", daemon=True
        )
        self._thread.start()
        log.info(
            "POS server listening on %s:%d (dialect %s)", *self.server_address[:2], self.dialect
        )

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            sockets = list(self._sockets.values())
        for sock in sockets:  # wake connection threads blocked in recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def track(self, sock: socket.socket, info: ConnectionInfo | None) -> None:
        with self._lock:
            if info is None:
                ended = self.connections.pop(id(sock), None)
                self._sockets.pop(id(sock), None)
                if ended is not None and ended.messages:
                    # Every POS that ever talked to the box, by address, for the technician.
                    self.peers[ended.peer.rsplit(":", 1)[0]] = vars(ended).copy()
            else:
                self.connections[id(sock)] = info
                self._sockets[id(sock)] = sock

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            connections = [vars(info).copy() for info in self.connections.values()]
        return {
            "listen": f"{self.server_address[0]}:{self.port}",
            "dialect": self.dialect,
            "running": self.running,
            "connections": connections,
            "past_peers": list(self.peers.values())[-20:],
            "closed_bad_input": self.closed_bad_input,
            "overhead_ms": self.overhead.percentiles_ms(50, 99),
        }


class PosConnection(socketserver.BaseRequestHandler):
    server: PosServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = "{}:{}".format(*self.client_address[:2])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(self.server.idle_timeout_s)
        info = ConnectionInfo(peer=peer)
        self.server.track(sock, info)
        framer = make_framer(self.server.dialect, self.server.max_frame)
        log.info("POS connected from %s", peer)
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    log.info("closing idle POS connection from %s", peer)
                    return
                except OSError:
                    return
                if not data:
                    return
                for frame in framer.feed(data):
                    if frame.heartbeat:
                        continue  # Passport heartbeats get no reply
                    received_at = time.monotonic()
                    dialect = framer.dialect or "passport"
                    handled = self.server.service.handle_frame(frame.payload, dialect, received_at)
                    if handled.request is not None:
                        info.note(handled.request, framer.dialect)
                    sock.sendall(framer.encode(write_response(handled.response, dialect)))
                    elapsed = time.monotonic() - received_at
                    self.server.overhead.add(max(0.0, elapsed - handled.host_wait_s))
        except (FramingError, XmlError) as exc:
            self.server.closed_bad_input += 1
            log.warning("closing POS connection from %s: %s", peer, exc)
        except NotAccepted as exc:
            log.error("closing POS connection from %s unanswered: %s", peer, exc)
        except OSError as exc:
            log.info("POS connection from %s ended: %s", peer, exc)
        except Exception:  # a bug: that request is not answered, so the POS keeps it
            log.exception("closing POS connection from %s unanswered after an error", peer)
        finally:
            self.server.track(sock, None)
            log.info("POS disconnected: %s", peer)
