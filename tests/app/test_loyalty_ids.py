from datetime import date

from app.logs import mask_id
from app.pos.loyalty_ids import read_age_check, resolve

QR = "https://loyalty.example/app/?USER_Q0FGRUJBQkUxMjM0NTY3ODkwQUJDRA"


def test_truncated_qr_resolves_to_full_id():
    assert resolve(QR, QR[:40]) == QR


def test_masked_id_resolves():
    assert resolve("2142840123", "******0123") == "2142840123"
    assert resolve("2142840123", "XXXXXX0123") == "2142840123"
    assert resolve("2142840123", "**0123") == "2142840123"


def test_different_id_replaces_session_id():
    assert resolve("2142840123", "2142840999") == "2142840999"
    assert resolve("2142840123", "******9999") == "******9999"
    assert resolve(None, "2142840123") == "2142840123"


def test_licence_dates_are_an_age_check():
    today = date(2025, 12, 30)
    assert read_age_check("01/15/1980,01/15/2030", today).over_21 is True
    assert read_age_check("12/31/2004,01/15/2030", today).over_21 is False  # 20 until tomorrow
    assert read_age_check("12/30/2004,01/15/2030", today).over_21 is True  # 21st birthday
    assert read_age_check("01/15/1980,01/15/2020", today).over_21 is False  # expired licence
    assert read_age_check("02/30/1980,01/15/2030", today).over_21 is False
    assert read_age_check("2142840123", today) is None


def test_mask_keeps_last_four():
    assert mask_id("2142840123") == "******0123"
    assert mask_id(QR) == "******" + QR[-4:]
    assert "2142" not in mask_id("2142840123")
