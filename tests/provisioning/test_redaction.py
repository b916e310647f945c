"""The one redaction: one marker, one mask, literal secrets cut longest first."""

from __future__ import annotations

from provisioning.redaction import REDACTED, cut_secrets, mask_id, redact_log_text


def test_mask_keeps_the_last_four():
    assert mask_id("2142840123") == "******0123"
    assert mask_id("QRLOYALTY7F3A9C2E1B55") == "******1B55"
    assert mask_id("1234") == "****" and mask_id("") == "-" and mask_id(None) == "-"


def test_literal_secrets_longest_first_and_pins_as_whole_numbers():
    text = "token abcd-long and abcd; pin 4321 in 1432100"
    assert cut_secrets(text, ["abcd", "abcd-long", "4321", None, "xy"]) == (
        f"token {REDACTED} and {REDACTED}; pin {REDACTED} in 1{REDACTED}00"
    )
    assert cut_secrets(text, ["4321"], whole_numbers=True) == (
        f"token abcd-long and abcd; pin {REDACTED} in 1432100"
    )


def test_logs_and_screens_share_the_marker():
    assert redact_log_text("Authorization: Bearer abc.def") == f"Authorization: Bearer {REDACTED}"
