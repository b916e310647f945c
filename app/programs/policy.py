"""Signed policy documents (host-api.md, `config.policy`): canonical JSON and Ed25519.

The signature covers the exact bytes of the base64-decoded `document`, so the verifier never
re-serialises anything: what was signed is what gets parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from provisioning.rfc3339 import parse_rfc3339


class PolicyError(Exception):
    """A policy that must not be used; `reason` says why, in words for the status page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_json(doc: dict[str, Any]) -> bytes:
    """UTF-8, sorted keys, no spaces: the bytes that get signed."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sign_policy(doc: dict[str, Any], private_key: Ed25519PrivateKey, key_id: str) -> dict[str, str]:
    document = canonical_json(doc)
    return {
        "document": base64.b64encode(document).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(document)).decode("ascii"),
        "key_id": key_id,
    }


def verify_policy(
    signed: dict[str, Any], trusted_keys: dict[str, str], site_id: str, now: datetime
) -> dict[str, Any]:
    """The policy document of `signed` if it may be used at `site_id` at `now`.

    `trusted_keys` maps key_id to the base64 raw public key. Raises PolicyError otherwise.
    A naive `now` is taken as UTC.
    """
    if not isinstance(signed, dict):
        raise PolicyError("malformed policy: not an object")
    key_id = signed.get("key_id")
    if not isinstance(key_id, str) or key_id not in trusted_keys:
        raise PolicyError(f"policy signed with an unknown key_id {key_id!r}")
    public_key = _public_key(key_id, trusted_keys[key_id])
    document = _b64(signed.get("document"), "document")
    signature = _b64(signed.get("signature"), "signature")
    try:
        public_key.verify(signature, document)
    except InvalidSignature:
        raise PolicyError(f"policy signature does not verify with key {key_id!r}") from None
    doc = _parse_document(document)
    if doc["site_id"] != site_id:
        raise PolicyError(f"policy is for site {doc['site_id']!r}, this box is {site_id!r}")
    try:
        expires_at = parse_rfc3339(doc["expires_at"], "expires_at")
    except ValueError as exc:
        raise PolicyError(f"malformed policy document: {exc}") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if expires_at <= now:
        raise PolicyError(f"policy expired at {doc['expires_at']}")
    return doc


def _public_key(key_id: str, b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError, TypeError):
        raise PolicyError(f"trusted key {key_id!r} is not a base64 32-byte Ed25519 key") from None


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise PolicyError(f"malformed policy: {name} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PolicyError(f"malformed policy: {name} is not base64") from None


def _parse_document(document: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PolicyError("malformed policy document: not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise PolicyError("malformed policy document: not a JSON object")
    for name in ("site_id", "expires_at"):
        if not isinstance(doc.get(name), str):
            raise PolicyError(f"malformed policy document: {name} is missing")
    if not isinstance(doc.get("programs", []), list):
        raise PolicyError("malformed policy document: programs is not a list")
    return doc
