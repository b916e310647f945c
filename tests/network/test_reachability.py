"""The layered host check names each failure right, against real servers.

Loopback (127.0.0.1) is enough for TCP, TLS, HTTP and the API layer. The layers below them
(link, gateway, DNS) run inside namespaces the tests create: a "site" namespace plays the router
with a tiny DNS server and an HTTP host at 192.0.2.1, and the check runs in a "box" namespace
with its own resolv.conf.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.network.discovery import Address, Interface, NetworkFacts
from app.network.manager import NetworkManager
from app.network.reachability import LAYERS, check_host
from tests.network.netns import PYTHON, site_and_box

DEVICE = "D-TEST"
TOKEN = "good-token"


def _layers(check) -> dict[str, object]:
    return {layer.layer: layer for layer in check.layers}


# ------------------------------------------------------------------ loopback servers


class ApiHandler(BaseHTTPRequestHandler):
    """A tiny central host: the config call needs the right token."""

    timeout = 10  # a connection that stalls (in its handshake too) ends its handler thread

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == f"/v1/devices/{DEVICE}/config":
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                self._send(200, {"config_version": 1})
            else:
                self._send(401, {"error": "unauthorized"})
        else:
            self._send(404, {"error": "not_found"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiHandler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        # accept() does the handshake: bounded, so a client that never handshakes (the
        # check's plain TCP layer) cannot block the accept loop, and shutdown(), for ever.
        server.socket.settimeout(5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_cert(
    directory: Path,
    names: list[str] | None = None,
    ips: list[str] | None = None,
    valid_from_days: float = -1,
    valid_to_days: float = 30,
) -> tuple[str, str]:
    """A self-signed certificate (P-256, fast to make) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or ips or ["x"])[0])])
    alt = [x509.DNSName(n) for n in names or []]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=valid_from_days))
        .not_valid_after(now + dt.timedelta(days=valid_to_days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tag = f"{len(list(directory.iterdir()))}"
    cert_path, key_path = directory / f"cert{tag}.pem", directory / f"key{tag}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def https_check(tmp_path: Path, ca: bool = True, **cert_args):
    cert, key = make_cert(tmp_path, **cert_args)
    with serve(server_context(cert, key)) as port:
        return check_host(
            f"https://127.0.0.1:{port}",
            TOKEN,
            NetworkFacts(),
            timeout_s=10.0,  # bounds a failure only; a loaded machine answers TLS slowly
            ca_file=cert if ca else None,
            device_id=DEVICE,
        )


# ------------------------------------------------------------------ loopback: TCP and up


def test_all_layers_pass_against_the_reference_host(reference_host):
    check = check_host(reference_host.url, "demo-token", NetworkFacts(), device_id="D-DEMO")
    assert check.ok and check.failed_layer is None and check.action == ""
    layers = _layers(check)
    assert list(layers) == list(LAYERS)
    assert all(layer.ok for layer in check.layers)
    assert layers["link"].skipped and "on the box itself" in layers["link"].detail
    assert layers["dns"].skipped and layers["tls"].skipped
    assert not layers["tcp"].skipped and not layers["api"].skipped
    assert "HTTP 200" in layers["api"].detail
    assert check.clock_skew_s is not None and abs(check.clock_skew_s) < 5
    data = json.loads(json.dumps(check.to_dict()))
    assert data["ok"] is True and [row["layer"] for row in data["layers"]] == list(LAYERS)
    assert {"layer", "ok", "detail", "action", "ms"} <= set(data["layers"][0])
    assert data["checked_at"] > 0


def test_revoked_token_fails_the_api_layer(reference_host):
    check = check_host(reference_host.url, "revoked", NetworkFacts(), device_id="D-DEMO")
    assert check.failed_layer == "api"
    assert "401" in check.layers[-1].detail
    assert "token was revoked" in check.action
    assert all(layer.ok for layer in check.layers[:-1])


def test_token_of_another_device_is_refused(reference_host):
    check = check_host(reference_host.url, "demo-token", NetworkFacts(), device_id="D-OTHER")
    assert check.failed_layer == "api" and "403" in check.layers[-1].detail


def test_not_enrolled_yet(reference_host):
    check = check_host(reference_host.url, None, NetworkFacts(), device_id="D-DEMO")
    assert check.failed_layer == "api" and "not enrolled" in check.action


def test_connection_refused_fails_the_tcp_layer(dead_host_url):
    check = check_host(dead_host_url, TOKEN, NetworkFacts(), timeout_s=10, device_id=DEVICE)
    assert check.failed_layer == "tcp"
    assert "refused" in check.layers[-1].detail
    # The host is on this machine: the advice is about it, not about a site's network.
    assert "does not run on this machine's port" in check.action
    assert "network provider" not in check.action
    assert [layer.layer for layer in check.layers] == ["link", "gateway", "dns", "tcp"]


@contextmanager
def raw_server(reply: bytes) -> Iterator[int]:
    """A server that reads a little, answers `reply` whatever was asked, and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                # Bounds a failing test only: a loaded machine may be slow to send its hello.
                conn.settimeout(10)
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                    # Hang up with a FIN after the reply, never a reset (closing with unread
                    # bytes): a reset can reach the client before it has read the reply.
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def test_garbage_instead_of_http_fails_the_http_layer():
    with raw_server(b"\x00\x01 certainly not HTTP\r\n\r\n") as port:
        check = check_host(f"http://127.0.0.1:{port}", TOKEN, NetworkFacts(), timeout_s=10)
    assert check.failed_layer == "http"
    assert "not with HTTP" in check.layers[-1].detail
    assert "answers in the host's place" in check.action


def test_silent_host_fails_the_http_layer(silent_host):
    check = check_host(silent_host.url, TOKEN, NetworkFacts(), timeout_s=0.5, device_id=DEVICE)
    assert check.failed_layer == "http"
    assert "no answer within 0.5 s" in check.layers[-1].detail.replace("sends ", "")


# ------------------------------------------------------------------ loopback: TLS


def test_https_all_ok_with_a_trusted_certificate(tmp_path):
    check = https_check(tmp_path, ips=["127.0.0.1"])
    assert check.ok, check.to_dict()
    tls = _layers(check)["tls"]
    assert not tls.skipped and "TLSv1" in tls.detail


def test_certificate_for_another_name(tmp_path):
    check = https_check(tmp_path, names=["other.example"])
    assert check.failed_layer == "tls"
    assert "other.example" in check.layers[-1].detail
    assert "not valid for its name" in check.action
    assert "intercepts HTTPS" in check.action


def test_untrusted_self_signed_certificate(tmp_path):
    check = https_check(tmp_path, ca=False, ips=["127.0.0.1"])
    assert check.failed_layer == "tls"
    assert "not from a trusted authority" in check.layers[-1].detail
    assert "intercepts HTTPS" in check.action


def test_certificate_not_yet_valid_points_at_the_box_clock(tmp_path):
    check = https_check(tmp_path, ips=["127.0.0.1"], valid_from_days=2, valid_to_days=30)
    assert check.failed_layer == "tls"
    assert "not valid yet" in check.layers[-1].detail
    assert "box clock says" in check.layers[-1].detail
    assert "box clock is wrong" in check.action


def test_expired_certificate(tmp_path):
    check = https_check(tmp_path, ips=["127.0.0.1"], valid_from_days=-30, valid_to_days=-1)
    assert check.failed_layer == "tls"
    assert "expired" in check.layers[-1].detail and "box clock" in check.action


def test_plain_http_where_https_is_expected():
    with raw_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as port:
        url = f"https://127.0.0.1:{port}"
        check = check_host(url, TOKEN, NetworkFacts(), timeout_s=10, device_id=DEVICE)
    assert check.failed_layer == "tls"
    assert "does not speak HTTPS" in check.layers[-1].detail


# ------------------------------------------------------------------ link and gateway from facts


def _eth0(state: str = "up", addresses: list[Address] | None = None) -> Interface:
    iface = Interface(
        "eth0", 2, state, state.upper(), state == "up", "02:00:00:00:00:01", 1500, "ether", False
    )
    iface.addresses = addresses or []
    return iface


def test_no_cable_fails_the_link_layer_before_anything_is_sent():
    facts = NetworkFacts(interfaces=[_eth0("down")])
    check = check_host("https://host.invalid", TOKEN, facts, device_id=DEVICE)
    assert check.failed_layer == "link" and len(check.layers) == 1
    assert "check the cable" in check.action


def test_cable_but_no_address_blames_dhcp():
    link_local = Address("fe80::1", 64, "ipv6", "link", False, "link-local")
    facts = NetworkFacts(interfaces=[_eth0("up", [link_local])])
    check = check_host("https://host.invalid", TOKEN, facts, device_id=DEVICE)
    assert check.failed_layer == "link" and "DHCP" in check.action


def test_no_default_gateway():
    address = Address("192.0.2.10", 24, "ipv4", "global", True, "dhcp")
    facts = NetworkFacts(interfaces=[_eth0("up", [address])], gateways=[])
    check = check_host("https://host.invalid", TOKEN, facts, device_id=DEVICE)
    assert check.failed_layer == "gateway" and "no default gateway" in check.action
    assert _layers(check)["link"].detail == "eth0 is up with 192.0.2.10/24 (dhcp)"


def test_bad_url_is_named():
    check = check_host("host.example", TOKEN, NetworkFacts(), device_id=DEVICE)
    assert not check.ok and "host address in the box's settings is wrong" in check.action


# ------------------------------------------------------------------ the manager's verdict


def test_manager_tells_listeners_when_the_host_goes_away():
    from simulators.host.runner import start_in_thread

    host = start_in_thread("127.0.0.1", 0)
    manager = NetworkManager(
        host.url,
        lambda: "demo-token",
        "D-DEMO",
        timeout_s=10.0,
        discover_fn=NetworkFacts,
        candidates_fn=list,
        route_fn=lambda url: {"host": "127.0.0.1", "interface": "lo"},
    )
    checked: list[bool] = []
    manager.on_checked = lambda check: checked.append(check.ok)  # the host link's hook
    try:
        assert manager.check_now().ok
        assert manager.check_now().ok and checked == [True, True]
    finally:
        host.stop()
    check = manager.check_now()
    assert not check.ok and check.failed_layer == "tcp"
    assert checked == [True, True, False]
    snap = manager.snapshot()
    assert snap["verdict"] == check.action
    assert snap["check"]["failed_layer"] == "tcp"


# ------------------------------------------------------------------ inside namespaces

SITE_CODE = r"""
import json, socket, struct, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = {"host.example.": "192.0.2.1"}

def dns_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("192.0.2.1", 53))
    while True:
        data, peer = sock.recvfrom(512)
        qid = struct.unpack(">H", data[:2])[0]
        i, labels = 12, []
        while data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode().lower())
            i += data[i] + 1
        qtype = struct.unpack(">H", data[i + 1 : i + 3])[0]
        question = data[12 : i + 5]
        address = NAMES.get(".".join(labels) + ".")
        if address and qtype == 1:
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
            header = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0)
        else:  # known name, other type: no data; unknown name: NXDOMAIN
            answer = b""
            header = struct.pack(">HHHHHH", qid, 0x8180 if address else 0x8183, 1, 0, 0, 0)
        sock.sendto(header + question + answer, peer)

class Host(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer good-token"
        if self.path == "/v1/devices/D-NS/config":
            status = 200 if ok else 401
        else:
            status = 404
        body = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

threading.Thread(target=dns_server, daemon=True).start()
server = ThreadingHTTPServer(("192.0.2.1", 80), Host)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CHECK_CODE = """
import json, sys
from app.network.reachability import check_host
check = check_host(sys.argv[1], sys.argv[2] or None, timeout_s=2.0, device_id="D-NS")
print(json.dumps(check.to_dict()))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Site router 192.0.2.1 (DNS + host), and 192.0.2.53 where no DNS server listens."""
    directory = tmp_path_factory.mktemp("site")
    good = directory / "resolv.good"
    good.write_text("nameserver 192.0.2.1\noptions timeout:1 attempts:1\n")
    silent = directory / "resolv.silent"
    silent.write_text("nameserver 192.0.2.53\noptions timeout:1 attempts:1\n")
    with site_and_box(site_addrs=("192.0.2.1/24", "192.0.2.53/24")) as net:
        server = net.site.popen([PYTHON, "-c", SITE_CODE], stdin=subprocess.PIPE)
        ready, _, _ = select.select([server.stdout], [], [], 15)
        assert ready and server.stdout.readline().strip() == "ready", server.stderr
        yield net, good, silent


def box_check(site, url: str, token: str = "good-token", resolv: str = "good") -> dict:
    net, good, silent = site
    done = net.box.python(CHECK_CODE, url, token, resolv_conf=good if resolv == "good" else silent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_namespace_all_layers_through_the_site_router(site):
    check = box_check(site, "http://host.example/")
    assert check["ok"], check
    layers = {row["layer"]: row for row in check["layers"]}
    assert list(layers) == list(LAYERS)
    net = site[0]
    assert layers["link"]["detail"] == f"{net.box_if} is up with 192.0.2.10/24 (static)"
    assert not layers["gateway"]["skipped"] and "192.0.2.1" in layers["gateway"]["detail"]
    assert layers["dns"]["detail"] == "host.example is 192.0.2.1 (DNS servers 192.0.2.1)"
    assert layers["tcp"]["detail"] == "connected to 192.0.2.1 port 80"
    assert layers["http"]["detail"] == "the web server answered (HTTP 404)"
    assert layers["api"]["detail"] == (
        "the host knows this box and takes its token (GET /v1/devices/D-NS/config: HTTP 200)"
    )


def test_namespace_unknown_name(site):
    check = box_check(site, "http://nohost.example/")
    assert check["failed_layer"] == "dns"
    assert "do not know nohost.example" in check["layers"][-1]["detail"]
    assert "host name is not found" in check["action"]


def test_namespace_dns_server_not_answering(site):
    check = box_check(site, "http://host.example/", resolv="silent")
    assert check["failed_layer"] == "dns"
    assert "192.0.2.53" in check["layers"][-1]["detail"]
    assert "DNS servers do not answer" in check["action"]


def test_namespace_port_refused(site):
    check = box_check(site, "http://host.example:81/")
    assert check["failed_layer"] == "tcp" and "refused" in check["layers"][-1]["detail"]
    assert "ask the network provider to allow port 81" in check["action"]


def test_namespace_revoked_token(site):
    check = box_check(site, "http://host.example/", token="revoked")
    assert check["failed_layer"] == "api" and "token was revoked" in check["action"]


def test_namespace_gateway_not_answering(site):
    net = site[0]
    net.box.ip("route", "replace", "default", "via", "192.0.2.254")
    try:
        check = box_check(site, "http://host.example/")
    finally:
        net.box.ip("route", "replace", "default", "via", "192.0.2.1")
    assert check["failed_layer"] == "gateway", check
    assert "192.0.2.254" in check["layers"][-1]["detail"]
    assert "does not answer" in check["action"]


def test_namespace_cable_pulled(site):
    net = site[0]
    net.site.ip("link", "set", net.site_if, "down")  # the box's side loses its carrier
    try:
        check = box_check(site, "http://host.example/")
    finally:
        net.site.ip("link", "set", net.site_if, "up")
    assert check["failed_layer"] == "link", check
    assert net.box_if in check["layers"][0]["detail"]
    assert "check the cable" in check["action"]
