"""Can the box reach the central host? Checked layer by layer, stopping at the first failure.

link → gateway → DNS → TCP → TLS → HTTP → authenticated API call. Each layer says what it saw
(`detail`, for support) and, when it fails, what to do in words a site technician understands
(`action`). Layers that do not apply (the gateway for a host on the local network, DNS for an IP
address, TLS for plain HTTP) pass as `skipped`.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from app import __version__
from app.network.discovery import (
    DiscoveryError,
    NetworkFacts,
    discover,
    is_ip,
    parse_route_get,
    resolve,
    run_ip,
)

LAYERS = ("link", "gateway", "dns", "tcp", "tls", "http", "api")
PING = "ping"
CLOCK_SKEW_WARN_S = 300
NEIGHBOUR_OK = {"REACHABLE", "PERMANENT", "NOARP"}


@dataclass
class LayerResult:
    layer: str
    ok: bool
    detail: str
    action: str = ""
    ms: float = 0.0
    skipped: bool = False  # the layer does not apply here, or could not be checked


@dataclass
class HostCheck:
    ok: bool
    failed_layer: str | None
    layers: list[LayerResult]
    checked_at: float
    url: str = ""
    clock_skew_s: float | None = None  # box clock minus the host's Date header

    @property
    def action(self) -> str:
        """What to do, for the status page: the failed layer's advice."""
        failed = next((r for r in self.layers if not r.ok), None)
        return failed.action if failed else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action}


class _Failed(Exception):
    def __init__(self, detail: str, action: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.action = action


class _Skip(Exception):
    """The layer does not apply; its message is the detail."""


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


class _Check:
    def __init__(
        self,
        url: str,
        token: str | None,
        facts: NetworkFacts,
        timeout_s: float,
        ca_file: str | None,
        device_id: str | None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme.lower()
        self.https = self.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        self.token = token
        self.facts = facts
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.device_id = device_id
        self.literal = is_ip(self.host)
        self.route: dict[str, Any] | None = None
        self.addresses: list[str] = []
        self.address = ""
        self.context: ssl.SSLContext | None = None
        self.clock_skew_s: float | None = None
        if self.literal:
            self.addresses = [self.host]
            try:
                self.route = parse_route_get(run_ip("route", "get", self.host, timeout_s=2.0))
            except (DiscoveryError, ValueError):
                self.route = None

    # ------------------------------------------------------------ helpers

    @property
    def on_box(self) -> bool:
        if self.route and (
            self.route.get("type") == "local" or self.route.get("interface") == "lo"
        ):
            return True
        return self.literal and ipaddress.ip_address(self.host).is_loopback

    @property
    def where(self) -> str:
        return f"{self.host} port {self.port}"

    def _host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.https else 80
        return name if self.port == default else f"{name}:{self.port}"

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.port), timeout=self.timeout_s)
        if self.https:
            assert self.context is not None
            return self.context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def _request(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        conn.sock = self._connect()
        try:
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._host_header())
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            response.read(64 * 1024)
            return response
        finally:
            conn.close()

    # ------------------------------------------------------------ layers

    def link(self) -> str:
        if self.on_box:
            raise _Skip("not needed: the host is on the box itself")
        wanted = self.route.get("interface") if self.route else None
        connected = self.facts.connected
        if wanted:
            connected = [i for i in connected if i.name == wanted] or connected
        if connected:
            iface = connected[0]
            addresses = ", ".join(f"{a.cidr} ({a.origin})" for a in iface.usable_addresses)
            return f"{iface.name} is up with {addresses}"
        ports = [i for i in self.facts.interfaces if not i.loopback and i.kind in ("ether", "")]
        with_carrier = [i for i in ports if i.state == "up"]
        if with_carrier:
            names = ", ".join(i.name for i in with_carrier)
            raise _Failed(
                f"{names}: cable connected but no address",
                "the box is plugged in but got no address: check that the site router hands out "
                "addresses (DHCP) on this port, or give the box a fixed address",
            )
        names = ", ".join(f"{i.name} ({i.operstate.lower()})" for i in ports) or "none"
        raise _Failed(
            f"no network interface is up: {names}",
            "the box has no network link: check the cable between the box and the site switch "
            "or router, and that the port's lights are on",
        )

    def gateway(self) -> str:
        if self.on_box:
            raise _Skip("not needed: the host is on the box itself")
        if self.route and not self.route.get("gateway") and self.route.get("interface"):
            raise _Skip(f"not needed: the host is on the local network ({self.route['interface']})")
        address = (self.route or {}).get("gateway")
        iface = (self.route or {}).get("interface")
        if not address:
            gw = self.facts.default_gateway
            if gw is None:
                raise _Failed(
                    "no default gateway",
                    "the box has no way out of the site network (no default gateway): check the "
                    "router's DHCP settings, or the gateway in the box's fixed network settings",
                )
            address, iface = gw.address, gw.interface
        on = f" on {iface}" if iface else ""
        if self._neighbour_state(address) in NEIGHBOUR_OK:
            return f"gateway {address}{on} is reachable (neighbour table)"
        if not shutil.which(PING):
            raise _Skip(f"gateway {address}{on}: not checked (no ping on this box)")
        family = "-6" if ":" in address else "-4"
        try:
            done = subprocess.run(
                [PING, family, "-c1", "-W1", "-n", address],
                capture_output=True,
                timeout=3.0,
                check=False,
            )
            answered = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            answered = False
        if answered:
            return f"gateway {address}{on} answers ping"
        if self._neighbour_state(address) in NEIGHBOUR_OK | {"STALE", "DELAY"}:
            return f"gateway {address}{on} answers ARP (not ping)"
        raise _Failed(
            f"gateway {address}{on} does not answer (ARP or ping)",
            f"the site router ({address}) does not answer: check that it is on, and that the "
            "box's cable goes to the site network",
        )

    def _neighbour_state(self, address: str) -> str:
        try:
            entries = run_ip("neigh", "show", address, timeout_s=2.0)
        except (DiscoveryError, ValueError):
            return ""
        for entry in entries:
            states = entry.get("state") or []
            if states:
                return str(states[0]).upper()
        return ""

    def dns(self) -> str:
        if self.literal:
            raise _Skip("not needed: the host is given as an IP address")
        servers = ", ".join(self.facts.dns.servers) or "none configured"
        try:
            self.addresses = resolve(self.host, self.timeout_s)
        except TimeoutError as exc:
            raise _Failed(
                f"no answer for {self.host} from the DNS servers ({servers}) within "
                f"{self.timeout_s:g} s",
                self._dns_silent_action(),
            ) from exc
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise _Failed(
                    f"the DNS servers ({servers}) do not know {self.host}",
                    "the host name is not found: check the host address in the box's settings; "
                    "if it is right, the site's DNS (or a filter on it) hides it: ask the "
                    "network provider",
                ) from exc
            raise _Failed(
                f"cannot resolve {self.host} via {servers}: {exc.strerror}",
                self._dns_silent_action(),
            ) from exc
        except OSError as exc:
            raise _Failed(f"cannot resolve {self.host}: {exc}", self._dns_silent_action()) from exc
        return f"{self.host} is {', '.join(self.addresses)} (DNS servers {servers})"

    def _dns_silent_action(self) -> str:
        if not self.facts.dns.servers:
            return (
                "the box has no DNS server: check the router's DHCP settings (DNS servers), "
                "or the DNS servers in the box's fixed network settings"
            )
        return (
            "DNS servers do not answer: check the router's DNS settings, and that the site "
            "firewall lets the box ask them (port 53)"
        )

    def tcp(self) -> str:
        errors: list[OSError] = []
        for address in self.addresses:
            try:
                with socket.create_connection((address, self.port), timeout=self.timeout_s):
                    self.address = address
                    return f"connected to {address} port {self.port}"
            except OSError as exc:
                errors.append(exc)
        error = errors[0] if errors else OSError("no address")
        shown = f"{self.host} ({', '.join(self.addresses)}) port {self.port}"
        if isinstance(error, TimeoutError):
            raise _Failed(
                f"no answer from {shown} within {self.timeout_s:g} s",
                f"the site firewall blocks port {self.port} to the host: ask the network "
                f"provider to allow outgoing connections to {self.host} on port {self.port}",
            )
        if isinstance(error, ConnectionRefusedError) and self.on_box:
            raise _Failed(
                f"connection to {shown} refused: nothing listens there on this machine",
                f"the central host does not run on this machine's port {self.port}: start it, "
                "or correct the host address in the box's settings ([host] url)",
            )
        if isinstance(error, ConnectionRefusedError):
            raise _Failed(
                f"connection to {shown} refused",
                f"the connection to port {self.port} is refused: a firewall on the way rejects "
                f"it, or the host is down: ask the network provider to allow port {self.port} "
                f"to {self.host}; if it is allowed, call the provider's support",
            )
        if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            raise _Failed(
                f"no route to {shown}: {error.strerror}",
                "the site network has no way to the host: check the router's internet "
                "connection, or ask the network provider",
            )
        raise _Failed(
            f"cannot connect to {shown}: {error.strerror or error}",
            f"the box cannot open a connection to the host: ask the network provider to allow "
            f"outgoing connections to {self.host} on port {self.port}",
        )

    def tls(self) -> str:
        if not self.https:
            raise _Skip("not needed: plain HTTP")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _Failed(
                f"cannot load the trusted certificates {self.ca_file}: {exc}",
                "the box's settings name a CA file it cannot read: call the provider's support",
            ) from exc
        try:
            with self._raw_tls(context) as sock:
                version = sock.version()
                cert = sock.getpeercert() or {}
        except ssl.SSLCertVerificationError as exc:
            raise self._certificate_failure(exc) from exc
        except ssl.SSLError as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
                raise _Failed(
                    f"{self.where} does not speak HTTPS ({exc.reason})",
                    "something other than the host answers on its port (a proxy or a captive "
                    "portal on the site network), or the host address is wrong: ask the "
                    "network provider",
                ) from exc
            raise _Failed(
                f"TLS handshake with {self.where} failed: {exc.reason or exc}",
                self._filtered_action(),
            ) from exc
        except TimeoutError as exc:
            raise _Failed(
                f"no TLS answer from {self.where} within {self.timeout_s:g} s",
                self._filtered_action(),
            ) from exc
        except OSError as exc:
            raise _Failed(
                f"the connection to {self.where} was cut during the TLS handshake: {exc}",
                self._filtered_action(),
            ) from exc
        self.context = context
        until = cert.get("notAfter", "?")
        return f"{version}, certificate valid for {self.host} until {until}"

    def _raw_tls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        sock = socket.create_connection((self.address, self.port), timeout=self.timeout_s)
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _filtered_action(self) -> str:
        return (
            "a site firewall filters the secure connection (HTTPS inspection): ask the network "
            f"provider to let the box reach {self.host} on port {self.port} directly"
        )

    def _certificate_failure(self, exc: ssl.SSLCertVerificationError) -> _Failed:
        code = exc.verify_code
        message = exc.verify_message or str(exc)
        info = self._peer_certificate()
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        valid = ""
        if info:
            valid = f" (certificate for {info['names']}, issued by {info['issuer']}, valid "
            valid += f"{info['not_before']} to {info['not_after']})"
        if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return _Failed(
                f"the host's certificate is not valid yet{valid}; the box clock says {now}",
                "the box clock is wrong (behind): the box must reach a time server (NTP, UDP "
                "port 123): ask the network provider to allow it",
            )
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return _Failed(
                f"the host's certificate has expired{valid}; the box clock says {now}",
                "the host's certificate has expired, or the box clock is ahead: check the box "
                "clock; if it is right, call the provider's support",
            )
        if code in (62, 64):  # hostname / IP address mismatch
            return _Failed(
                f"the certificate is not valid for {self.host}: {message}{valid}",
                "the host's certificate is not valid for its name: something on the site "
                "network intercepts HTTPS (a proxy or firewall), or the host address in the "
                "box's settings is wrong: ask the network provider to let the box through "
                "without inspection",
            )
        if code in (18, 19, 20, 21, 2):  # self-signed / unknown issuer
            return _Failed(
                f"the certificate is not from a trusted authority: {message}{valid}",
                "the host's certificate is not trusted: something on the site network "
                "intercepts HTTPS (a proxy or firewall doing inspection): ask the network "
                f"provider to let the box reach {self.host} directly",
            )
        return _Failed(
            f"the certificate is not valid: {message}{valid}",
            "the host's certificate is not valid: the box clock may be wrong, or something "
            "on the site network intercepts HTTPS",
        )

    def _peer_certificate(self) -> dict[str, str] | None:
        """What the peer presents, read without verification, to explain a failure."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with self._raw_tls(context) as sock:
                der = sock.getpeercert(binary_form=True)
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
        except Exception:  # an explanation only: never let it hide the real failure
            return None
        names: list[str] = []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
            names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
        if not names:
            names = [a.value for a in cert.subject.get_attributes_for_oid(x509.OID_COMMON_NAME)]
        return {
            "names": ", ".join(str(n) for n in names) or "?",
            "issuer": cert.issuer.rfc4514_string() or "?",
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"),
        }

    def http(self) -> str:
        try:
            response = self._request(
                (self.base_path or "") + "/", {"User-Agent": f"connectbox/{__version__}"}
            )
        except TimeoutError as exc:
            raise _Failed(
                f"{self.where} accepts the connection but sends no answer within "
                f"{self.timeout_s:g} s",
                "the host, or something on the way, holds the connection without answering: "
                "ask the network provider whether a firewall or proxy filters it; if not, call "
                "the provider's support",
            ) from exc
        except (http.client.HTTPException, ConnectionError, ssl.SSLError) as exc:
            raise _Failed(
                f"{self.where} answers, but not with HTTP: {type(exc).__name__}: {exc}",
                "something on the site network answers in the host's place (a proxy or "
                "firewall), or the host address or port is wrong: ask the network provider",
            ) from exc
        except OSError as exc:
            raise _Failed(
                f"HTTP request to {self.where} failed: {exc}", self._filtered_action()
            ) from exc
        # Any HTTP answer proves the web server is reached (the API layer checks the rest):
        # worded so that a technician does not read "404 NOT FOUND" as the failure.
        detail = f"the web server answered (HTTP {response.status})"
        date = response.getheader("Date")
        if date:
            try:
                host_time = parsedate_to_datetime(date).timestamp()
                self.clock_skew_s = round(time.time() - host_time, 1)
            except (TypeError, ValueError, OverflowError):
                self.clock_skew_s = None
        if self.clock_skew_s is not None and abs(self.clock_skew_s) > CLOCK_SKEW_WARN_S:
            side = "ahead of" if self.clock_skew_s > 0 else "behind"
            detail += f"; the box clock is {_duration(abs(self.clock_skew_s))} {side} the host's"
        return detail

    def api(self) -> str:
        if not self.token or not self.device_id:
            raise _Failed(
                "the box has no device token yet",
                "the box is not enrolled: enroll it with the claim code on its label",
            )
        path = f"{self.base_path}/v1/devices/{quote(self.device_id, safe='')}/config"
        try:
            response = self._request(
                path,
                {
                    "Authorization": f"Bearer {self.token}",
                    "User-Agent": f"connectbox/{__version__}",
                    "Accept": "application/json",
                    "X-Device-Clock": datetime.now().astimezone().isoformat(timespec="seconds"),
                },
            )
        except (http.client.HTTPException, OSError) as exc:
            raise _Failed(
                f"the API call to {self.where} failed: {type(exc).__name__}: {exc}",
                "the host stopped answering during the check: try again; if it persists, call "
                "the provider's support",
            ) from exc
        status = response.status
        seen = f"GET {path}: HTTP {status}"
        if status in (200, 304):
            return f"the host knows this box and takes its token ({seen})"
        if status == 401:
            raise _Failed(
                f"{seen}: the host does not accept the box's token",
                "the box's token was revoked or is wrong: call the provider's support to "
                "re-enroll the box",
            )
        if status == 403:
            raise _Failed(
                f"{seen}: the host refuses this box",
                "the host refuses this box (wrong device or disabled): call the provider's support",
            )
        if status == 404:
            raise _Failed(
                f"{seen}: the host does not know device {self.device_id}",
                "the host does not know this box: check the host address and device id in the "
                "box's settings, or call the provider's support",
            )
        if status == 407:
            raise _Failed(
                f"{seen}: a proxy asks for a login",
                "a proxy on the site network asks for a login: ask the network provider to let "
                "the box through",
            )
        if status >= 500:
            raise _Failed(
                f"{seen}: the host has a problem",
                "the central host has a problem: nothing to do on site; the box keeps working "
                "offline and catches up later",
            )
        raise _Failed(
            f"{seen}: unexpected answer",
            "something on the site network answers in the host's place (a captive portal or "
            "proxy): ask the network provider to let the box through",
        )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def check_host(
    url: str,
    token: str | None,
    facts: NetworkFacts | None = None,
    timeout_s: float = 5.0,
    ca_file: str | None = None,
    device_id: str | None = None,
) -> HostCheck:
    """Check the way to the host at `url`, layer by layer, stopping at the first failure."""
    checked_at = time.time()
    check = _Check(
        url, token, facts if facts is not None else discover(), timeout_s, ca_file, device_id
    )
    if check.scheme not in ("http", "https") or not check.host:
        layer = LayerResult(
            "link",
            False,
            f"not a usable host URL: {url!r}",
            "the host address in the box's settings is wrong: correct it (https://…)",
        )
        return HostCheck(False, "link", [layer], checked_at, url)
    results: list[LayerResult] = []
    for name in LAYERS:
        start = time.monotonic()
        try:
            detail = getattr(check, name)()
            result = LayerResult(name, True, detail, "", _ms(start))
        except _Skip as skip:
            result = LayerResult(name, True, str(skip), "", _ms(start), skipped=True)
        except _Failed as failed:
            result = LayerResult(name, False, failed.detail, failed.action, _ms(start))
        except Exception as exc:  # a bug or an unforeseen error still names its layer
            result = LayerResult(
                name,
                False,
                f"{type(exc).__name__}: {exc}",
                "the check itself failed: call the provider's support",
                _ms(start),
            )
        results.append(result)
        if not result.ok:
            return HostCheck(False, name, results, checked_at, url, check.clock_skew_s)
    return HostCheck(True, None, results, checked_at, url, check.clock_skew_s)
