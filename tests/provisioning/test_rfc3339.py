"""The one RFC 3339 parser: an aware datetime, or a ValueError that names the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from provisioning.rfc3339 import format_rfc3339, now_rfc3339, parse_rfc3339


def test_offsets_and_z_are_moments():
    assert parse_rfc3339("2026-11-23T14:00:00-06:00") == datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    assert parse_rfc3339("2026-11-23T20:00:00Z") == datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    moment = parse_rfc3339("2026-11-23T14:00:00.250+01:00")
    assert moment.utcoffset() == timedelta(hours=1) and moment.microsecond == 250_000
    assert moment.tzinfo == timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "expires_at is missing"),
        (1_700_000_000, "expires_at is missing"),
        ("next tuesday", "expires_at is not RFC 3339: 'next tuesday'"),
        ("2026-11-23T14:00:00", "expires_at has no UTC offset"),
    ],
)
def test_what_is_wrong_is_said(value, says):
    with pytest.raises(ValueError) as caught:
        parse_rfc3339(value, "expires_at")
    assert str(caught.value) == says


def test_the_box_writes_what_it_reads():
    written = format_rfc3339(1_700_000_000.7)
    assert parse_rfc3339(written).timestamp() == 1_700_000_000  # to the second, with its offset
    now = parse_rfc3339(now_rfc3339())
    assert abs(now.timestamp() - datetime.now(UTC).timestamp()) < 5
