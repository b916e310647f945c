import pytest

from app.programs.nanp import is_valid_us_phone, normalize_us_phone


@pytest.mark.parametrize(
    "text",
    [
        "5124671234",
        "512-467-1234",
        "512.467.1234",
        "(512) 467-1234",
        " 512 467 1234 ",
        "+1 512 467 1234",
        "+1 (512) 467-1234",
        "15124671234",
        "1-512-467-1234",
    ],
)
def test_normalize_accepts_common_spellings(text):
    assert normalize_us_phone(text) == "5124671234"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "512467123",  # 9 digits
        "51246712345",  # 11 digits not starting with 1
        "+44 20 7946 0958",
        "+5124671234",  # a plus sign must be +1
        "512-467-12a4",
        "512/467/1234",
        "５１２４６７１２３４",  # full-width digits are not keypad input
        "25124671234",
    ],
)
def test_normalize_rejects_other_shapes(text):
    assert normalize_us_phone(text) is None


def test_normalize_rejects_non_strings():
    assert normalize_us_phone(5124671234) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["5124671234", "(212) 867-5309", "+1 415 555 2671", "2125550200", "2125550099"]
)
def test_valid_numbers(text):
    assert is_valid_us_phone(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0124671234", "area code starts with 0"),
        ("1124671234", "area code starts with 1"),
        ("5120671234", "exchange starts with 0"),
        ("5121671234", "exchange starts with 1"),
        ("5924671234", "area code middle digit 9"),
        ("5124111234", "exchange 411 is N11"),
        ("5129111234", "exchange 911 is N11"),
        ("5125550100", "555-0100 is fictional"),
        ("5125550123", "555-0123, the example in host-api.md, is fictional"),
        ("5125550199", "555-0199 is fictional"),
        ("2222222222", "all one digit"),
        ("9999999999", "all one digit"),
        ("512467123", "too short"),
        ("hello", "not a number"),
    ],
)
def test_invalid_numbers(text, why):
    assert not is_valid_us_phone(text), why
