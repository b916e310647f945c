"""The TCP server the POS connects to: persistent connections, one thread each.

A connection's framer is chosen by the configured dialect ("auto" decides from its first bytes).
A frame that cannot be parsed closes that connection only, with a log line that says why; the
other connections and the listener keep going. A peer is bounded: a frame must be complete
`frame_deadline_s` after its first byte, and connections beyond `max_connections` are refused.
With TLS (`tls`), each connection's handshake runs in its own thread, also within
`frame_deadline_s`: a peer that never finishes it holds its slot no longer than a slow frame.
`stop()` closes the listener, lets requests being handled finish, and hangs up the rest.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field

from app.pos.framing import DEFAULT_MAX_FRAME, FramingError, make_framer
from app.pos.limits import FrameClock, LogThrottle, skipped_note
from app.pos.model import Request
from app.pos.service import Handled, LoyaltyService, NotAccepted
from app.pos.xmlcodec import XmlError, write_response
from app.stats import LatencyWindow

log = logging.getLogger("connectbox.pos")
# A burst of connects waits in the kernel's queue instead of having its SYNs dropped (the
# socketserver default of 5 let through about 6 connections a second).
LISTEN_BACKLOG = 1024
MAX_TOLD = 256  # POS addresses remembered for the page: a site has a handful


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
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        service: LoyaltyService,
        dialect: str = "auto",
        max_frame: int = DEFAULT_MAX_FRAME,
        idle_timeout_s: float = 900.0,
        frame_deadline_s: float = 5.0,
        max_connections: int = 64,
        drain_s: float = 3.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.tls = tls
        self.dialect = dialect
        self.max_frame = max_frame
        self.idle_timeout_s = idle_timeout_s
        self.frame_deadline_s = frame_deadline_s
        self.max_connections = max_connections
        self.drain_s = drain_s  # longest wait at stop() for requests being handled
        self.overhead = LatencyWindow()
        self.connections: dict[int, ConnectionInfo] = {}
        self.peers: dict[str, dict[str, object]] = {}  # past POS connections by address
        # What each POS (by address) was last answered to GetLoyaltyOnlineStatus, and when:
        # the technician's "Is Loyalty Host Online on the Passport?".
        self.told: dict[str, dict[str, object]] = {}
        self.closed_bad_input = 0
        self.cut_slow_frame = 0
        self.refused_over_cap = 0
        self.tls_refused = 0  # TLS handshakes that failed or missed the frame deadline
        self.connect_log = LogThrottle(burst=20, every_s=1.0)
        self.cut_log = LogThrottle(burst=10, every_s=1.0)
        self._refuse_log = LogThrottle(burst=1, every_s=10.0)
        self._sockets: dict[int, socket.socket] = {}
        self._busy: set[int] = set()  # connections in the middle of a request
        self._open = 0  # connections accepted and not yet ended (a thread each)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._listening = False
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
        self._listening = True
        self._thread.start()
        log.info(
            "POS server listening on %s:%d (dialect %s%s, at most %d connections)",
            *self.server_address[:2],
            self.dialect,
            ", TLS" if self.tls else "",
            self.max_connections,
        )

    def stop_accepting(self) -> None:
        """Close the listener; the connections already open go on."""
        with self._lock:
            listening, self._listening = self._listening, False
        if listening:
            self.shutdown()
        self.server_close()

    def stop(self) -> None:
        """Stop accepting, let requests being handled finish (bounded), hang up everything."""
        self.stop_accepting()
        with self._lock:
            self._stopping = True
            idle = [sock for key, sock in self._sockets.items() if key not in self._busy]
        _hang_up(idle)
        with self._lock:
            if not self._changed.wait_for(lambda: not self._busy, timeout=self.drain_s):
                still = len(self._busy)
                log.warning("%d POS request(s) still busy %.1f s after stop", still, self.drain_s)
            rest = list(self._sockets.values())
        _hang_up(rest)
        with self._lock:  # the threads end quickly once their sockets are shut down
            self._changed.wait_for(lambda: self._open == 0, timeout=1.0)

    def verify_request(self, request: object, client_address: object) -> bool:
        """In the accept loop, so it does no more than count: over the cap, refuse the newcomer."""
        with self._lock:
            if not self._stopping and self._open < self.max_connections:
                self._open += 1
                return True
            if self._stopping:
                return False
            self.refused_over_cap += 1
            refused = self.refused_over_cap
        logged, _ = self._refuse_log.allow()
        if logged:
            log.warning(
                "refusing POS connection from %s: %d connections open ([pos] max_connections);"
                " %d refused so far",
                _peer(client_address),
                self.max_connections,
                refused,
            )
        return False  # socketserver closes it at once

    def process_request(self, request: object, client_address: object) -> None:
        try:
            super().process_request(request, client_address)  # type: ignore[arg-type]
        except BaseException:  # no thread for it: it does not count as open
            self._ended()
            raise

    def process_request_thread(self, request: object, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[arg-type]
        finally:
            self._ended()

    def _ended(self) -> None:
        with self._lock:
            self._open -= 1
            self._changed.notify_all()

    def track(self, sock: socket.socket, info: ConnectionInfo | None) -> bool:
        """Register (info) or forget (None) a connection; False: stopping, do not serve it."""
        with self._lock:
            if info is None:
                ended = self.connections.pop(id(sock), None)
                self._sockets.pop(id(sock), None)
                self._busy.discard(id(sock))
                self._changed.notify_all()
                if ended is not None and ended.messages:
                    # Every POS that ever talked to the box, by address, for the technician.
                    self.peers[ended.peer.rsplit(":", 1)[0]] = vars(ended).copy()
                return True
            if self._stopping:
                return False
            self.connections[id(sock)] = info
            self._sockets[id(sock)] = sock
            return True

    def begin_request(self, sock: socket.socket) -> bool:
        """Bytes arrived: mark the connection busy, unless stop() has begun (then drop them)."""
        with self._lock:
            if self._stopping:
                return False
            self._busy.add(id(sock))
            return True

    def end_request(self, sock: socket.socket) -> bool:
        """The bytes are handled; False when the server is stopping (hang up now)."""
        with self._lock:
            self._busy.discard(id(sock))
            self._changed.notify_all()
            return not self._stopping

    def note_told(self, info: ConnectionInfo, handled: Handled) -> None:
        response = handled.response
        if response.stem != "GetLoyaltyOnlineStatus":
            return
        address = info.peer.rsplit(":", 1)[0]
        told = {
            "pos": address,
            "vendor": " ".join(filter(None, (info.vendor, info.model_version))),
            "register": info.register,
            "prompt_for_loyalty": response.prompt_for_loyalty is not False,
            "at": time.time(),
        }
        with self._lock:
            if address in self.told or len(self.told) < MAX_TOLD:
                self.told[address] = told

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            connections = [vars(info).copy() for info in self.connections.values()]
            told = sorted(self.told.values(), key=lambda t: str(t["pos"]))
        return {
            "listen": f"{self.server_address[0]}:{self.port}",
            "dialect": self.dialect,
            "tls": self.tls is not None,
            "running": self.running,
            "connections": connections,
            "past_peers": list(self.peers.values())[-20:],
            "online_status_told": told,
            "closed_bad_input": self.closed_bad_input,
            "cut_slow_frame": self.cut_slow_frame,
            "refused_over_cap": self.refused_over_cap,
            "tls_refused": self.tls_refused,
            "max_connections": self.max_connections,
            "overhead_ms": self.overhead.percentiles_ms(50, 99),
        }


def _peer(address: object) -> str:
    return "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)


def _hang_up(sockets: list[socket.socket]) -> None:
    """Wake the connection threads blocked in recv: they see the end of the stream and return."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its TLS
            # state under the thread reading it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class PosConnection(socketserver.BaseRequestHandler):
    server: PosServer

    def handle(self) -> None:
        sock: socket.socket | None = self.request
        peer = "{}:{}".format(*self.client_address[:2])
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.server.tls is not None:
            sock = self._handshake(self.server.tls, peer)
        if sock is None:
            return
        try:
            self._serve(sock, peer)
        finally:
            if sock is not self.request:
                sock.close()  # the TLS socket took over the connection (socketserver's is detached)

    def _handshake(self, tls: ssl.SSLContext, peer: str) -> ssl.SSLSocket | None:
        """The TLS handshake, within the frame deadline in total (CPython's handshake timeout is
        one deadline for the whole exchange, however slowly the peer trickles); None: refused."""
        self.request.settimeout(self.server.frame_deadline_s)
        try:
            wrapped = tls.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:  # the peer left already
            _log_throttled(self.server.connect_log, logging.INFO, "POS %s left: %s", peer, exc)
            return None
        try:
            wrapped.do_handshake()
            return wrapped
        except (OSError, ValueError) as exc:  # ssl.SSLError, TimeoutError, a reset
            why = (
                "not finished within [pos] frame_deadline_s"
                if isinstance(exc, TimeoutError)
                else exc
            )
            self.server.tls_refused += 1
            _log_throttled(
                self.server.cut_log,
                logging.WARNING,
                "closing POS connection from %s: TLS handshake failed (%s)",
                peer,
                why,
            )
            wrapped.close()
            return None

    def _serve(self, sock: socket.socket, peer: str) -> None:
        info = ConnectionInfo(peer=peer)
        if not self.server.track(sock, info):
            return  # accepted just as the server stops
        framer = make_framer(self.server.dialect, self.server.max_frame)
        clock = FrameClock(self.server.frame_deadline_s, self.server.idle_timeout_s)
        _log_throttled(self.server.connect_log, logging.INFO, "POS connected from %s", peer)
        try:
            while True:
                data = self._receive(sock, clock)
                read_at = time.monotonic()
                if not data or not self.server.begin_request(sock):
                    return
                pending = framer.pending
                for frame in framer.feed(data):
                    if frame.heartbeat:
                        continue  # Passport heartbeats get no reply
                    received_at = time.monotonic()
                    dialect = framer.dialect or "passport"
                    handled = self.server.service.handle_frame(frame.payload, dialect, received_at)
                    if handled.request is not None:
                        info.note(handled.request, framer.dialect)
                        self.server.note_told(info, handled)
                    sock.sendall(framer.encode(write_response(handled.response, dialect)))
                    elapsed = time.monotonic() - received_at
                    self.server.overhead.add(max(0.0, elapsed - handled.host_wait_s))
                if not self.server.end_request(sock):
                    return  # stopping: this connection's request is answered, hang up
                clock.fed(pending, len(data), framer.pending, read_at)
        except PeerTimeout as exc:
            self._timed_out(exc, framer.pending, peer)
        except (FramingError, XmlError) as exc:
            self.server.closed_bad_input += 1
            log.warning("closing POS connection from %s: %s", peer, exc)
        except NotAccepted as exc:
            log.error("closing POS connection from %s unanswered: %s", peer, exc)
        except OSError as exc:
            _log_throttled(
                self.server.connect_log, logging.INFO, "POS connection from %s ended: %s", peer, exc
            )
        except Exception:  # a bug: that request is not answered, so the POS keeps it
            log.exception("closing POS connection from %s unanswered after an error", peer)
        finally:
            self.server.track(sock, None)
            _log_throttled(self.server.connect_log, logging.INFO, "POS disconnected: %s", peer)

    def _receive(self, sock: socket.socket, clock: FrameClock) -> bytes:
        """The next bytes (b"" when the peer left), within the idle timeout or frame deadline."""
        wait_s = clock.wait_s(time.monotonic())
        try:
            if wait_s <= 0:
                raise TimeoutError
            sock.settimeout(wait_s)
            data = sock.recv(65536)
        except TimeoutError:
            raise PeerTimeout(slow_frame=clock.in_frame()) from None
        # The answers to these bytes must be taken within the frame deadline too.
        sock.settimeout(self.server.frame_deadline_s)
        return data

    def _timed_out(self, exc: PeerTimeout, pending: int, peer: str) -> None:
        if not exc.slow_frame:
            log.info("closing idle POS connection from %s", peer)
            return
        self.server.cut_slow_frame += 1
        _log_throttled(
            self.server.cut_log,
            logging.WARNING,
            "closing POS connection from %s: frame incomplete %.1f s after its first byte"
            " (%d bytes so far; [pos] frame_deadline_s)",
            peer,
            self.server.frame_deadline_s,
            pending,
        )


class PeerTimeout(Exception):
    """The peer was silent for the idle timeout, or a frame missed its deadline."""

    def __init__(self, slow_frame: bool) -> None:
        super().__init__("frame deadline" if slow_frame else "idle")
        self.slow_frame = slow_frame


def _log_throttled(throttle: LogThrottle, level: int, message: str, *args: object) -> None:
    logged, skipped = throttle.allow()
    if logged:
        log.log(level, message + skipped_note(skipped), *args)
