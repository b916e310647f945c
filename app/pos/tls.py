"""TLS on the POS port: the box's server context from `[pos] tls_cert` / `tls_key`, and the
contexts a POS-side client uses (a CA file, or the box's own certificate pinned).

Verifone Commander's loyalty setup offers "Enable TLS" with CA-signed certificates (TLS 1.2, no
self-signed ones). The framing inside TLS is the same as over plain TCP.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class TlsFileError(Exception):
    """A TLS file is unusable; `key` names the configuration key (`tls_cert`, `tls_key`)."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(why)
        self.key = key
        self.why = why


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The POS port's context; `TlsFileError` names the file at fault and says why."""
    cert_pem, key_pem = _read("tls_cert", cert), _read("tls_key", key)
    try:
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsFileError("tls_cert", f"{cert} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except (TypeError, ValueError):
        raise TlsFileError(
            "tls_key", f"{key} holds no PEM private key (or one with a passphrase)"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError:
        raise TlsFileError(
            "tls_key", f"{key} is not the key of the certificate in {cert}"
        ) from None
    return context


def _read(name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(name, f"cannot read {path}: {exc.strerror or exc}") from None


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A POS's side: the box's certificate must chain to `ca_file` and name the address."""
    return ssl.create_default_context(cafile=str(ca_file))


def pinned_context(cert_file: str | Path) -> ssl.SSLContext:
    """The box's own test sale over loopback: its own certificate is the only one trusted (the
    name in it is the box's site address, not 127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(cert_file))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    return context
