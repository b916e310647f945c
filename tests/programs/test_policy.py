import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.programs.policy import (
    PolicyError,
    canonical_json,
    sign_policy,
    verify_policy,
)
from provisioning.releases import public_key_b64
from simulators.host import keys

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DOC = {
    "policy_version": 7,
    "site_id": "S-1001",
    "issued_at": "2026-11-20T00:00:00Z",
    "expires_at": "2026-12-04T00:00:00Z",
    "programs": [{"program_id": "scan-data", "kind": "scan_data", "receipt_long": "RÉDUCTION"}],
}
TRUSTED = {"test-k1": keys.TEST_PUBLIC_KEY_B64}


def signed(doc=DOC, key_id="test-k1"):
    return sign_policy(doc, keys.test_private_key(), key_id)


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": {"d": "é", "c": [1, 2]}}) == (
        '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()
    )


def test_good_policy_verifies():
    policy = signed()
    assert set(policy) == {"document", "signature", "key_id"}
    assert base64.b64decode(policy["document"]) == canonical_json(DOC)
    assert verify_policy(policy, TRUSTED, "S-1001", NOW) == DOC


def test_naive_now_is_utc():
    assert verify_policy(signed(), TRUSTED, "S-1001", NOW.replace(tzinfo=None)) == DOC


def test_tampered_document_is_refused():
    policy = signed()
    doc = json.loads(base64.b64decode(policy["document"]))
    doc["programs"][0]["discount"] = {"method": "amount_off", "value": "50.00"}
    policy["document"] = base64.b64encode(canonical_json(doc)).decode()
    with pytest.raises(PolicyError, match="signature"):
        verify_policy(policy, TRUSTED, "S-1001", NOW)


def test_re_serialised_document_is_refused():
    # The signature covers bytes, not meaning: even harmless spacing breaks it.
    policy = signed()
    policy["document"] = base64.b64encode(json.dumps(DOC).encode()).decode()
    with pytest.raises(PolicyError, match="signature"):
        verify_policy(policy, TRUSTED, "S-1001", NOW)


def test_unknown_key_id_is_refused():
    with pytest.raises(PolicyError, match="unknown key_id"):
        verify_policy(signed(key_id="k9"), TRUSTED, "S-1001", NOW)


def test_other_key_under_a_trusted_id_is_refused():
    other = Ed25519PrivateKey.generate()
    policy = sign_policy(DOC, other, "test-k1")
    with pytest.raises(PolicyError, match="signature"):
        verify_policy(policy, TRUSTED, "S-1001", NOW)
    assert verify_policy(policy, {"test-k1": public_key_b64(other)}, "S-1001", NOW) == DOC


def test_other_site_is_refused():
    with pytest.raises(PolicyError, match="S-1001"):
        verify_policy(signed(), TRUSTED, "S-2002", NOW)


def test_expired_policy_is_refused():
    expires = datetime(2026, 12, 4, tzinfo=UTC)
    assert verify_policy(signed(), TRUSTED, "S-1001", expires - timedelta(seconds=1))
    with pytest.raises(PolicyError, match="expired"):
        verify_policy(signed(), TRUSTED, "S-1001", expires)


@pytest.mark.parametrize(
    "broken",
    [
        {"document": "not base64!", "signature": "AAAA", "key_id": "test-k1"},
        {"signature": "AAAA", "key_id": "test-k1"},
        "a string",
    ],
)
def test_malformed_envelope_is_refused(broken):
    with pytest.raises(PolicyError):
        verify_policy(broken, TRUSTED, "S-1001", NOW)


def test_signed_but_malformed_document_is_refused():
    key = keys.test_private_key()
    not_json = b"policy v7"
    policy = {
        "document": base64.b64encode(not_json).decode(),
        "signature": base64.b64encode(key.sign(not_json)).decode(),
        "key_id": "test-k1",
    }
    with pytest.raises(PolicyError, match="malformed"):
        verify_policy(policy, TRUSTED, "S-1001", NOW)
    without_expiry = {k: v for k, v in DOC.items() if k != "expires_at"}
    with pytest.raises(PolicyError, match="expires_at"):
        verify_policy(signed(without_expiry), TRUSTED, "S-1001", NOW)


def test_malformed_trusted_key_is_reported():
    with pytest.raises(PolicyError, match="trusted key"):
        verify_policy(signed(), {"test-k1": "c2hvcnQ="}, "S-1001", NOW)


def test_test_key_is_fixed():
    assert keys.TEST_KEY_ID == "test-k1"
    assert public_key_b64(keys.test_private_key()) == keys.TEST_PUBLIC_KEY_B64
    assert len(base64.b64decode(keys.TEST_PUBLIC_KEY_B64)) == 32
    # Ed25519 is deterministic: the same key signs the same bytes the same way every time.
    assert signed() == signed()
