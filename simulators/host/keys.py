"""The reference host's signing key: a PUBLIC TEST KEY, never trusted in production.

Its private seed is right here in the source, so anybody can sign a policy with it. It exists so
the demo and the tests have a stable key pair (`key_id` "test-k1"); a production box must never
list TEST_PUBLIC_KEY_B64 among its trusted keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning.releases import public_key_b64

TEST_KEY_ID = "test-k1"

# 32 fixed bytes, published on purpose (see above). Not a secret, not a production key.
_TEST_SEED = bytes.fromhex("c0ec7b0c5e0d7e57c0ec7b0c5e0d7e57c0ec7b0c5e0d7e57c0ec7b0c5e0d7e57")


def test_private_key() -> Ed25519PrivateKey:
    """The public test signing key (deterministic: the same key on every machine)."""
    return Ed25519PrivateKey.from_private_bytes(_TEST_SEED)


# Its name starts with "test_": keep pytest from collecting it where a test module imports it.
test_private_key.__test__ = False  # type: ignore[attr-defined]


TEST_PUBLIC_KEY_B64 = public_key_b64(test_private_key())
