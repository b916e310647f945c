"""The card decoders: frame → exactly one verdict (shared/cards.md, "Frame → verdict")."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from drivers.decoding import DecodeOptions, Verdict, decode
from drivers.decoding import aamva as aamva_module
from drivers.decoding.checks import gs1_valid, luhn_valid, track_lrc
from drivers.decoding.cli import main
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
VECTORS_FILE = SHARED / "cards-vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text()) if VECTORS_FILE.is_file() else []
TODAY = date(2026, 6, 15)
SHAPES = {
    "id": {"result", "loyalty_id", "source", "symbology"},
    "dl": {"result", "over_21", "age"},
    "reject": {"result", "reason"},
    "ignore": {"result"},
}
PAN = "6000001234567894"  # Luhn-valid
PAN_BAD_LUHN = "6000001234567895"


def run(frame: bytes | str, today: date = TODAY, **options) -> Verdict:
    raw = frame.encode("latin-1") if isinstance(frame, str) else frame
    return decode(raw, DecodeOptions(**options), today=today)


def assert_id(verdict: Verdict, loyalty_id: str, source: str, symbology: str) -> None:
    assert (verdict.result, verdict.loyalty_id) == ("id", loyalty_id), verdict
    assert (verdict.source, verdict.symbology) == (source, symbology), verdict


def assert_reject(verdict: Verdict, *words: str) -> None:
    assert verdict.result == "reject", verdict
    assert verdict.reason
    for word in words:
        assert word.lower() in verdict.reason.lower(), verdict.reason


def assert_dl(verdict: Verdict, age: int) -> None:
    assert verdict == Verdict("dl", over_21=age >= 21, age=age), verdict


# ---- every worked example, through the real command ---------------------------------------------


def test_vectors_present():
    assert VECTORS, f"no vectors at {VECTORS_FILE}"
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "vector ids must be unique: a duplicate would hide one"
    assert {"M-PLAIN1", "M13"} <= set(ids)
    for vector in VECTORS:
        assert vector["expect"]["result"] in SHAPES, vector


def _hint_words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if len(word) >= 3}


def assert_reason_fits_hint(reason: str, hint: str) -> None:
    """The hint is the gist, not the wording: most of its words are in the reason."""
    words = _hint_words(hint)
    found = words & _hint_words(reason)
    assert len(found) * 2 >= len(words), (hint, reason)


def _flags(options: dict) -> list[str]:
    flags = []
    for key, value in options.items():
        if key == "luhn":
            flags += ["--luhn"] if value else []
        elif key == "lrc":
            flags += ["--lrc"] if value else []
        elif key == "require_aim":
            flags += [] if value else ["--no-require-aim"]
        else:
            raise AssertionError(f"vector option {key!r} has no command-line flag")
    return flags


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_through_the_command(vector):
    command = [sys.executable, "-m", "drivers.decoding", "--today", vector["today"]]
    command += _flags(vector["options"])
    done = subprocess.run(
        command, input=vector["raw"].encode("latin-1"), capture_output=True, cwd=ROOT, timeout=30
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, done.stdout
    got = json.loads(lines[0])
    expect = vector["expect"]
    assert got["result"] == expect["result"], (vector["case"], got)
    assert set(got) == SHAPES[got["result"]], got
    for key in ("loyalty_id", "over_21", "age"):
        if key in expect:
            assert got[key] == expect[key], (vector["case"], got)
    if "reason_hint" in expect:
        assert_reason_fits_hint(got["reason"], expect["reason_hint"])


# ---- the command --------------------------------------------------------------------------------


def _cli(argv: list[str], frame: bytes) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdin=io.BytesIO(frame), stdout=out)
    return code, out.getvalue()


def test_cli_prints_one_json_line():
    code, out = _cli(["--today", "2026-06-15"], f";{PAN}=2912?\r".encode())
    assert code == 0
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out) == {
        "result": "id",
        "loyalty_id": PAN,
        "source": "magstripe",
        "symbology": "track2",
    }


def test_cli_options_map_to_decode_options():
    assert json.loads(_cli(["--luhn"], f";{PAN_BAD_LUHN}=2912?".encode())[1])["result"] == "reject"
    assert json.loads(_cli([], f";{PAN_BAD_LUHN}=2912?".encode())[1])["result"] == "id"
    assert json.loads(_cli(["--lrc"], b";1234?0\r")[1])["loyalty_id"] == "1234"
    assert json.loads(_cli([], b"ABC123\r")[1])["result"] == "reject"
    assert json.loads(_cli(["--no-require-aim"], b"ABC123\r")[1])["loyalty_id"] == "ABC123"
    # the age is computed on --today
    frame = b";636015123456789=301220050616=?\r"
    assert json.loads(_cli(["--today", "2026-06-15"], frame)[1])["age"] == 20
    assert json.loads(_cli(["--today", "2026-06-16"], frame)[1])["over_21"] is True
    # without --today: today's date (a 1950 birth date is over 21 on any day this runs)
    assert json.loads(_cli([], b";636015123456789=301219500101=?")[1])["over_21"] is True


def test_cli_empty_input_is_ignore():
    assert _cli([], b"") == (0, '{"result": "ignore"}\n')


@pytest.mark.parametrize(
    "argv",
    [
        ["--today", "2026-02-30"],
        ["--today", "20260615"],
        ["--today", "15/06/2026"],
        ["--today"],
        ["--bogus"],
        ["extra"],
    ],
)
def test_cli_usage_errors_exit_2(argv, capsys):
    code, out = _cli(argv, b";1234?")
    assert code == 2
    assert out == ""
    assert "usage" in capsys.readouterr().err


def test_cli_usage_error_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "drivers.decoding", "--today", "tomorrow"],
        input=b";1234?",
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == b""


# ---- 1. framing: STX/ETX, terminators, empty frames ---------------------------------------------


@pytest.mark.parametrize(
    "frame", [b"", b"\r", b"\n", b"\r\n", b"\t", b"\r\n\t\r", b"\x02\x03", b"\x02\r\n\x03", b"\x02"]
)
def test_empty_frames_are_ignored(frame):
    assert run(frame) == Verdict("ignore")


@pytest.mark.parametrize(
    "frame",
    [
        f"\x02;{PAN}=2912?\x03",
        f"\x02;{PAN}=2912?\r\x03",
        f"\x02;{PAN}=2912?\x03\r\n",
        f"\r\n;{PAN}=2912?\r\n",
        f";{PAN}=2912?\t",
    ],
)
def test_stx_etx_and_terminators_are_stripped(frame):
    assert_id(run(frame), PAN, "magstripe", "track2")


def test_stx_etx_around_a_barcode():
    assert_id(run("\x02]E02900001234566\r\x03"), "2900001234566", "barcode", "]E0")


@pytest.mark.parametrize(
    "frame", [b"\xff\xfe\x00\x13\r", b"\x00", b"\x1b[A", b"\x80abc", b"ab\x07c"]
)
def test_non_printable_bytes_are_rejected(frame):
    assert_reject(run(frame), "non-printable")
    assert_reject(run(frame, require_aim=False), "non-printable")


@pytest.mark.parametrize("frame", ["asdf\r", "2900001234566\r", "hello world", "6000001234567894"])
def test_text_without_sentinel_or_aim_is_rejected(frame):
    assert_reject(run(frame), "AIM")


# ---- 2. require_aim = false ---------------------------------------------------------------------


def test_require_aim_false_takes_the_printable_text():
    assert_id(run("2900001234566\r", require_aim=False), "2900001234566", "barcode", "none")
    assert_id(run("Loyalty 42-x\r", require_aim=False), "Loyalty 42-x", "barcode", "none")
    assert_reject(run("   \r", require_aim=False))
    # AIM-prefixed and magstripe frames still follow their own rules
    assert_reject(run("]E02900001234567\r", require_aim=False), "check digit")
    assert_id(run(f";{PAN}=29?", require_aim=False), PAN, "magstripe", "track2")


# ---- 3. magstripe -------------------------------------------------------------------------------


def test_track2_only_with_and_without_separator():
    assert_id(run(f";{PAN}=2912101?\r"), PAN, "magstripe", "track2")
    assert_id(run(f";{PAN}?\r"), PAN, "magstripe", "track2")
    assert_id(run(";1234567890123456789=1?"), "1234567890123456789", "magstripe", "track2")


@pytest.mark.parametrize(
    "frame, words",
    [
        (";12345678901234567890=1?", "1-19 digits"),  # 20 digits
        (";=2912?", "1-19 digits"),
        (";6000A1234=29?", "digits"),
        (";6000 1234=29?", "digits"),
    ],
)
def test_bad_track2_is_rejected(frame, words):
    assert_reject(run(frame), words)


def test_track1_format_b_and_both_tracks():
    assert_id(run(f"%B{PAN}^LOYAL/JANE^2912?\r"), PAN, "magstripe", "track1")
    assert_id(run(f"%B{PAN}^LOYAL/JANE^2912?;{PAN}=2912?\r"), PAN, "magstripe", "track2")


def test_track1_format_b_needs_a_card_number():
    assert_reject(run("%BABC123^LOYAL/JANE^?"), "format B")
    assert_reject(run("%B^LOYAL/JANE^?"), "format B")
    assert_reject(run("%B12345678901234567890^X^?"), "format B")


def test_track1_format_a_is_upper_cased():
    assert_id(run("%AA7X93KQ2^LOYAL/JANE^?\r"), "A7X93KQ2", "magstripe", "track1")
    # a caps-lock-inverted keyboard swipe reads the same
    assert_id(run("%aa7x93kq2^loyal/jane^?\r"), "A7X93KQ2", "magstripe", "track1")
    assert_id(run(f"%b{PAN}^loyal/jane^2912?\r"), PAN, "magstripe", "track1")
    assert_reject(run("%AABC^X^?"), "format A")  # 3 characters
    assert_reject(run("%AA7X-93KQ2^X^?"), "format A")
    assert_reject(run("%A12345678901234567890^X^?"), "format A")  # 20 characters


def test_track1_other_format_codes():
    assert_reject(run("%C123456^X^?"), "format code 'C'")
    assert_reject(run(f"%C123456^X^?;{PAN}=29?"), "format code 'C'")
    formats = ("B", "A", "C")
    assert_id(run("%C123456^X^?", track1_formats=formats), "123456", "magstripe", "track1")
    assert_reject(run(f"%B{PAN}^X^?", track1_formats=("A",)), "format code 'B'")
    assert_id(run("%Aabcd1^X^?", track1_formats=("a",)), "ABCD1", "magstripe", "track1")


def test_track_mismatch_is_rejected():
    assert_reject(run(f"%B{PAN}^LOYAL/JANE^2912?;{PAN_BAD_LUHN}=2912?\r"), "mismatch")
    assert_reject(run(f"%AA7X93KQ2^X^?;{PAN}=29?"), "mismatch")


# Cards encoded as the Centegra seed recommends: the reference with no leading characters.


def test_track1_without_caret_is_a_plain_reference():
    assert_id(run("%ABCD1234EF?\r"), "ABCD1234EF", "magstripe", "track1")  # not BCD1234EF
    assert_id(run("%abcd1234ef?\r"), "ABCD1234EF", "magstripe", "track1")  # caps lock on
    assert_id(run("%12345678?\r"), "12345678", "magstripe", "track1")
    assert_id(run("%1234?"), "1234", "magstripe", "track1")
    assert_id(run("%" + "A1" * 20 + "?"), "A1" * 20, "magstripe", "track1")
    for frame in ("%ABC?", "%" + "A1" * 20 + "X?", "%ABCD-1234?", "%ABCD 1234?", "%ABCD/12?"):
        assert_reject(run(frame), "plain card reference")


def test_numeric_reference_on_tracks_1_and_2_must_agree():
    # "format code '1' not allowed" before: the first digit is no format code
    assert_id(run("%12345678?;12345678?\r"), "12345678", "magstripe", "track2")
    assert_id(run("%12345678?\r;12345678?\r"), "12345678", "magstripe", "track2")  # ID TECH
    assert_id(run("%12345678?;12345678=2912?"), "12345678", "magstripe", "track2")
    assert_id(run("%12345678?;E?"), "12345678", "magstripe", "track1")
    assert_id(run("%E?;12345678?"), "12345678", "magstripe", "track2")
    for frame in ("%12345678?;12345679?\r", "%12345678?\r;87654321?\r", "%ABCD1234?;1234?"):
        verdict = run(frame)
        assert_reject(verdict, "track 1 / track 2 mismatch", "different card numbers")
        assert "1234" not in str(verdict.reason)  # never the card numbers themselves


def test_alphanumeric_reference_on_track_3():
    assert_id(run("+ABCD1234?\r"), "ABCD1234", "magstripe", "track3")
    assert_id(run("+abcd1234?\r"), "ABCD1234", "magstripe", "track3")
    assert_id(run("%E?;E?+ABCD1234?\r"), "ABCD1234", "magstripe", "track3")
    assert_id(run("%E?\r;E?\r%ABCD1234?\r"), "ABCD1234", "magstripe", "track3")  # ID TECH
    # a 4-bit track 2 has no letters: a ';' track holding letters is an alphanumeric track 3
    assert_id(run(";ABCD1234?\r"), "ABCD1234", "magstripe", "track3")
    assert_id(run("%E?;ABCD1234EF?\r"), "ABCD1234EF", "magstripe", "track3")
    # tracks 1 and 2 come first; track 3 is not compared with them
    assert_id(run(";12345678?+ABCD1234?"), "12345678", "magstripe", "track2")
    assert_id(run("%12345678?+ABCD1234?"), "12345678", "magstripe", "track1")
    for frame in ("+ABC?", "+ABCD 1234?", ";ABCD=1234?", "+" + "A" * 41 + "?"):
        assert_reject(run(frame), "only track 3", "not a card reference")


def test_plain_references_through_the_command():
    for frame, expected in (
        (b"%ABCD1234EF?\r", "ABCD1234EF"),
        (b"%12345678?;12345678?\r", "12345678"),
        (b"+ABCD1234?\r", "ABCD1234"),
    ):
        code, out = _cli([], frame)
        assert code == 0 and json.loads(out)["loyalty_id"] == expected, out
    assert json.loads(_cli([], b"%12345678?;12345679?\r")[1])["result"] == "reject"


def test_failed_tracks():
    assert_id(run(f"%E?;{PAN}=2912101?\r"), PAN, "magstripe", "track2")
    assert_id(run(f"%B{PAN}^X^?;E?\r"), PAN, "magstripe", "track1")
    assert_id(run(f"%e?;{PAN}=29?"), PAN, "magstripe", "track2")
    assert_id(run(f"%?;{PAN}=29?"), PAN, "magstripe", "track2")  # an empty track reads nothing
    for frame in ("%E?;E?+E?\r", ";E?", "%E?", "%E?\r;E?\r+E?\r", "%E?;e?"):
        assert_reject(run(frame), "every track")


def test_partial_reads_are_rejected():
    assert_reject(run(f"%B{PAN}^LOYAL/JANE^2912"), "partial")
    assert_reject(run(f"%B{PAN}^LOYAL/JANE^2912?;{PAN}=29"), "partial")
    assert_reject(run(f"%B{PAN}^LOYAL/JANE^2912\r;{PAN}=29?\r"), "partial")  # CR before '?'
    assert_reject(run(f"%B{PAN}^LOYAL/JANE^2912;{PAN}=29?"), "partial")  # next track begins
    assert_reject(run(";"), "partial")
    assert_reject(run("+123"), "partial")


def test_data_outside_the_sentinels_is_rejected():
    assert_reject(run(f"%E?x;{PAN}=29?"), "framing")
    assert_reject(run(f";{PAN}=29?junk"), "framing")
    assert_reject(run(f";{PAN}=29\x00?"), "non-printable")


def test_id_tech_cr_after_every_track_and_second_percent_is_track_3():
    swipe = f"%B{PAN}^LOYAL/JANE^2912?\r;{PAN}=2912?\r%XYZ 123/ABC?\r"
    assert_id(run(swipe), PAN, "magstripe", "track2")
    # track 3 is never compared, and read only when tracks 1 and 2 give no ID
    assert_id(run(f"%B{PAN}^X^?\r%QQQ?\r"), PAN, "magstripe", "track1")
    # a second ';' is an ISO track 3 that kept its sentinel
    assert_id(run(f";{PAN}=29?;0123456789=?"), PAN, "magstripe", "track2")
    assert_reject(run(f"%B{PAN}^X^?\r;{PAN}=29?\r%A?\r%B?\r"), "tracks")
    assert_reject(run(f";{PAN}=29?+1?#2?"), "tracks")


@pytest.mark.parametrize("sentinel", ["+", "#", "!", "&", "@"])
def test_track_3_sentinels_and_track_3_alone(sentinel):
    assert_id(run(f";{PAN}=29?{sentinel}0123=45?\r"), PAN, "magstripe", "track2")
    assert_reject(run(f"{sentinel}0123=45?\r"), "only track 3")


def test_luhn_option():
    assert_reject(run(f";{PAN_BAD_LUHN}=2912?\r", luhn=True), "Luhn")
    assert_id(run(f";{PAN_BAD_LUHN}=2912?\r"), PAN_BAD_LUHN, "magstripe", "track2")
    assert_id(run(f";{PAN}=2912?\r", luhn=True), PAN, "magstripe", "track2")
    assert_id(run(f"%B{PAN}^X^?", luhn=True), PAN, "magstripe", "track1")
    assert_reject(run("%AA7X93KQ2^X^?", luhn=True), "Luhn")
    # barcodes have their own check digits: Luhn is a magstripe option
    assert_id(run("]C0LOY-AB12CD34", luhn=True), "LOY-AB12CD34", "barcode", "]C0")


def _lrc(start: str, data: str, base: int, mask: int) -> str:
    """Independent ISO 7811 LRC: XOR of (char - base) over start sentinel, data, '?'."""
    value = 0
    for char in start + data + "?":
        value ^= (ord(char) - base) & mask
    return chr(base + value)


def test_lrc_option():
    assert track_lrc("4bit", "1234") == "0"  # worked by hand: B^1^2^3^4^F = 0
    assert_id(run(";1234?0\r", lrc=True), "1234", "magstripe", "track2")
    assert_reject(run(";1234?1\r", lrc=True), "LRC")
    assert_reject(run(";1234?\r", lrc=True), "LRC")
    assert_reject(run(";1234?", lrc=True), "LRC")
    # without the option an LRC character is data outside the sentinels
    assert_reject(run(";1234?0\r"), "lrc = true")

    t1, t2 = f"B{PAN}^LOYAL/JANE^2912", f"{PAN}=2912"
    lrc1, lrc2 = _lrc("%", t1, 0x20, 0x3F), _lrc(";", t2, 0x30, 0x0F)
    assert (track_lrc("6bit", t1), track_lrc("4bit", t2)) == (lrc1, lrc2)
    assert_id(run(f"%{t1}?{lrc1};{t2}?{lrc2}\r", lrc=True), PAN, "magstripe", "track2")
    assert_id(run(f"%{t1}?{lrc1}\r;{t2}?{lrc2}\r", lrc=True), PAN, "magstripe", "track2")
    wrong = chr(ord(lrc2) ^ 1)
    assert_reject(run(f"%{t1}?{lrc1};{t2}?{wrong}\r", lrc=True), "LRC check failed on track 2")
    # failed tracks carry no LRC
    assert_id(run(f"%E?;{t2}?{lrc2}\r", lrc=True), PAN, "magstripe", "track2")


# ---- 4. driver licences -------------------------------------------------------------------------


M24 = (
    "%TXAUSTIN^DOE$JOHN^12345 SHERBOURNE ST^?;63601538774194=150819810101?"
    '#" 78729      C               1505130BLKBLK?\r'
)


def test_aamva_three_track_licence():
    assert_dl(run(M24), 45)
    # ID TECH: CR after every track, track 3 sent as a second '%'
    idtech = (
        "%TXAUSTIN^DOE$JOHN^12345 SHERBOURNE ST^?\r;63601538774194=150819810101?\r"
        '%" 78729      C               1505130BLKBLK?\r'
    )
    assert_dl(run(idtech), 45)


@pytest.mark.parametrize(
    "iin, licence",
    [
        ("635999", False),
        ("636000", True),
        ("636015", True),
        ("636062", True),
        ("636063", False),
        ("604424", False),
        ("604425", True),
        ("604428", True),
        ("604434", True),
        ("604435", False),
    ],
)
def test_aamva_iin_ranges(iin, licence):
    verdict = run(f";{iin}123456789=301220050616=?\r")
    if licence:
        assert_dl(verdict, 20)
    else:
        assert_id(verdict, f"{iin}123456789", "magstripe", "track2")


def test_aamva_track2_birth_date():
    # CCYYMMDD after the 4-digit expiry; the 21st birthday counts as 21
    assert_dl(run(";636015123456789=301220050615=?"), 21)
    assert_dl(run(";636015123456789=301220050616=?"), 20)
    assert_dl(run(";636015123456789=301220050614?"), 21)
    assert_dl(run(";636015123456789=999919810101?"), 45)  # non-expiring
    assert_dl(run(";63601538774194=150820040229?", today=date(2025, 2, 28)), 20)
    assert_dl(run(";63601538774194=150820040229?", today=date(2025, 3, 1)), 21)
    assert_reject(run(";636015123456789=301220051316=?"), "birth date")  # month 13
    assert_reject(run(";636015123456789=3012200506?"), "birth date")  # too short
    assert_reject(run(";636015123456789=301220270101?"), "future")
    assert_reject(run(";636015123456789=301218000101?"), "implausible")


def test_licence_iin_without_data_is_never_an_id():
    assert_reject(run(";636015123456789?"), "licence")
    assert_reject(run("%B636015123456789^DOE/JOHN^?"), "licence")


def test_licence_fragments_are_rejected():
    track1 = "%TXAUSTIN^DOE$JOHN^12345 SHERBOURNE ST^?"
    assert_reject(run(track1 + "\r"), "licence fragment")
    assert_reject(run(track1 + ";E?\r"), "licence fragment")
    assert_reject(run(track1 + ";E?#E?\r"), "licence fragment")
    # a non-licence track 2 does not make the licence track 1 a loyalty card
    assert_reject(run(track1 + f";{PAN}=29?\r"), "licence fragment")
    assert_reject(run("%B6000001234567894^DOE$JOHN^?"), "licence fragment")


def pdf417(
    dbb: str | None,
    version: int = 10,
    iin: str = "636000",
    separator: str = "\x1e",
    file_type: str = "ANSI ",
    extra: tuple[str, ...] = (),
    aim: str = "]L2",
) -> str:
    """An AAMVA PDF417 payload with a consistent header and directory."""
    elements = ["DAQT64235789", "DCSSAMPLE", "DACMICHAEL"]
    elements += [f"DBB{dbb}"] if dbb is not None else []
    elements += ["DBA12102030", "DAG1 MAIN ST", *extra]
    subfile = "DL" + "\n".join(elements) + "\r"
    header = f"@\n{separator}\r{file_type}{iin}{version:02d}" + ("01" if version >= 2 else "")
    header += "02"
    offset = len(header) + 20
    header += f"DL{offset:04d}{len(subfile):04d}ZV{offset + len(subfile):04d}0008"
    return aim + header + subfile + "ZVZVA01\r"


def test_pdf417_licence_versions_and_separators():
    assert_dl(run(pdf417("06061986")), 40)  # US, version >= 2: MMDDCCYY
    assert_dl(run(pdf417("06061986", version=2)), 40)
    assert_dl(run(pdf417("06061986", separator="\x1c")), 40)  # FS instead of RS
    assert_dl(run(pdf417("06061986", file_type="AAMVA")), 40)
    assert_dl(run(pdf417("19860606", version=1)), 40)  # version 1: CCYYMMDD
    assert_dl(run(pdf417("06061986", aim="]L0")), 40)
    # the date order is never guessed
    assert_reject(run(pdf417("19860606")), "birth date")
    assert_reject(run(pdf417("06061986", version=1)), "birth date")


@pytest.mark.parametrize("iin", ["636012", "636028", "604428", "604432", "636044"])
def test_pdf417_canada_is_ccyymmdd(iin):
    assert_dl(run(pdf417("19860606", iin=iin)), 40)
    assert_reject(run(pdf417("06061986", iin=iin)), "birth date")


def test_pdf417_canada_by_country_element():
    assert_dl(run(pdf417("19860606", iin="636000", extra=("DCGCAN",))), 40)
    assert_dl(run(pdf417("06061986", iin="636000", extra=("DCGUSA",))), 40)


def test_pdf417_21st_birthday_counts_as_21():
    assert_dl(run(pdf417("06152005")), 21)
    assert_dl(run(pdf417("06162005")), 20)
    assert run(pdf417("06152005")).over_21 is True
    assert run(pdf417("06162005")).over_21 is False


def test_pdf417_birth_date_first_element_and_later_subfile():
    frame = "]L2@\n\x1e\rANSI 636000100101DL00310040DLDBB06061986\nDAQX1\nDCSDOE\r"
    assert_dl(run(frame), 40)


@pytest.mark.parametrize(
    "frame, words",
    [
        (pdf417(None), "birth date"),
        (pdf417("0606198"), "birth date"),
        (pdf417("13061986"), "birth date"),
        (pdf417("06062030"), "future"),
        ("]L2@\n\x1e\rANSI 63X000100102DL0041", "header"),
        ("]L2@\n\x1e\rANSI 636000", "header"),
        ("]L2@\n\rANSI 636000100102DL00410278DLDBB06061986\r", "header"),
        ("]L2@ANSI 636000100102DL00410278DLDBB06061986\r", "header"),
    ],
)
def test_pdf417_unreadable_licences_are_rejected(frame, words):
    assert_reject(run(frame), words)


def test_pdf417_licence_without_aim_is_never_an_id():
    raw = pdf417("06061986")[3:]
    assert_reject(run(raw), "licence")
    assert_reject(run(raw, require_aim=False), "licence")


# ---- 5. barcodes --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["2900001234566", "4006381333931", "0036000291452"])
def test_ean13(code):
    assert_id(run(f"]E0{code}\r"), code, "barcode", "]E0")


@pytest.mark.parametrize(
    "payload, words",
    [
        ("2900001234567", "check digit"),
        ("036000291452", "13 digits"),  # UPC-A sent as 12 digits
        ("29000012345660", "13 digits"),
        ("290000123456A", "13 digits"),
        ("", "13 digits"),
    ],
)
def test_ean13_rejected(payload, words):
    assert_reject(run(f"]E0{payload}\r"), words)


def test_ean8():
    assert_id(run("]E496385074\t"), "96385074", "barcode", "]E4")
    assert_id(run("]E473513537\r"), "73513537", "barcode", "]E4")
    assert_reject(run("]E496385075\r"), "check digit")
    assert_reject(run("]E49638507\r"), "8 digits")


@pytest.mark.parametrize(
    "frame", ["]E112\r", "]E212345\r", "]E3290000123456612\r", "]E329000012345661234\r"]
)
def test_ean_add_ons_are_rejected(frame):
    assert_reject(run(frame), "add-on")


def test_other_ean_modifiers_are_rejected():
    assert_reject(run("]E52900001234566\r"), "not accepted")


@pytest.mark.parametrize("aim", ["]C1", "]Q3", "]d2", "]e0"])
def test_gs1_gsrn(aim):
    assert_id(run(f"{aim}8018735000012345678906\r"), "735000012345678906", "barcode", aim)


def test_gs1_gsrn_with_gs_separator_and_other_elements():
    gs = "\x1d"
    gsrn = "735000012345678906"
    for payload in (
        f"8018{gsrn}{gs}80191",  # GSRN + service relation instance number
        f"{gs}8018{gsrn}",  # FNC1 in first position sent as GS
        f"80191234{gs}8018{gsrn}{gs}",  # a variable-length element before it
        f"0109501101020917{gs}8018{gsrn}",
        f"01095011010209178018{gsrn}",  # after a predefined-length element: no GS needed
        f"8018{gsrn}{gs}8018{gsrn}",
    ):
        assert_id(run(f"]C1{payload}\r"), gsrn, "barcode", "]C1")


@pytest.mark.parametrize(
    "payload, words",
    [
        ("8018735000012345678907", "check digit"),
        ("801873500001234567890", "18 digits"),
        ("80187350000123456789061", "18 digits"),
        ("8018735000012345678906801912", "18 digits"),  # 8018 needs GS before the next AI
        ("0109501101020917", "8018"),  # a GTIN: not a loyalty ID
        ("10ABC123", "8018"),
        ("8018735000012345678906\x1d8018123456789012345675", "two"),
        ("LOY-AB12CD34", "malformed"),
        ("010950110102", "malformed"),  # predefined length cut short
        ("", "8018"),
    ],
)
def test_gs1_rejected(payload, words):
    assert_reject(run(f"]C1{payload}\r"), words)


@pytest.mark.parametrize("aim", ["]C0", "]C2", "]Q1", "]Q0", "]A0", "]A4", "]L0", "]L2", "]z0"])
@pytest.mark.parametrize("payload", ["ab12CD34ef", "LOY-AB12CD34", "abcd", "x" * 32, "12-34"])
def test_free_text_symbologies_keep_case(aim, payload):
    assert_id(run(f"{aim}{payload}\r"), payload, "barcode", aim)


@pytest.mark.parametrize(
    "payload", ["abc", "x" * 33, "ab cd", "ab_cd", "abc.de", "ab\x1dcd", "é1234"]
)
def test_free_text_outside_the_id_pattern_is_rejected(payload):
    assert_reject(run(f"]Q1{payload}\r".encode("latin-1")))


@pytest.mark.parametrize(
    "frame", ["]d1ABC123", "]e1ABC123", "]I01234567890", "]F01234", "]X0ABC123", "]H1ABC123"]
)
def test_other_symbologies_are_rejected(frame):
    assert_reject(run(frame), "not accepted")


@pytest.mark.parametrize("frame", ["]", "]E", "]\r", "]Q"])
def test_incomplete_aim_identifier(frame):
    assert_reject(run(frame), "AIM")


# ---- the verdict --------------------------------------------------------------------------------


def test_to_json_shapes():
    assert run(f";{PAN}=29?").to_json() == {
        "result": "id",
        "loyalty_id": PAN,
        "source": "magstripe",
        "symbology": "track2",
    }
    assert run(M24).to_json() == {"result": "dl", "over_21": True, "age": 45}
    assert set(run("asdf").to_json()) == {"result", "reason"}
    assert run(b"\r").to_json() == {"result": "ignore"}


def test_describe_masks_the_loyalty_id():
    text = run(f";{PAN}=29?").describe()
    assert "7894" in text and PAN not in text and "000012345" not in text
    assert "magstripe" in text
    barcode = run("]C0LOY-AB12CD34").describe()
    assert "CD34" in barcode and "LOY-AB12" not in barcode
    assert "ABCD" not in run("]Q1ABCD").describe()  # 4 characters: nothing shown
    assert run(M24).describe() == "driver licence: over 21 (age 45)"
    assert run(";636015123456789=301220050616=?").describe() == "driver licence: under 21 (age 20)"
    assert run("asdf").describe().startswith("rejected: ")
    assert "empty" in run(b"").describe()


def test_a_licence_verdict_cannot_carry_anything_else():
    with pytest.raises(ValueError):
        Verdict("dl", over_21=True, age=30, loyalty_id="123")
    with pytest.raises(ValueError):
        Verdict("dl", over_21=True, age=30, reason="x")
    with pytest.raises(ValueError):
        Verdict("maybe")


# ---- privacy ------------------------------------------------------------------------------------

LICENCE_FRAMES = [
    M24,
    ";63601538774194=150819810101?\r",
    "%TXAUSTIN^DOE$JOHN^12345 SHERBOURNE ST^?;E?\r",  # fragment
    "%TXAUSTIN^DOE$JOHN^12345 SHERBOURNE ST^?;63601538774194=150819811301?\r",  # bad date
    ";63601538774194=150820300101?\r",  # future
    ";63601538774194?\r",  # licence number, no data
    pdf417("06061986"),
    pdf417("19860606", version=1),
    pdf417("19860606", iin="636012"),
    pdf417("19860606"),  # wrong order for a US licence: rejected
    pdf417(None),
    pdf417("06061986")[3:],  # without AIM
    pdf417("06061986").replace("ANSI 636000", "ANSI 63X000"),
]
SECRETS = [
    "38774194",
    "63601538774194",
    "T64235789",
    "DOE",
    "JOHN",
    "AUSTIN",
    "SHERBOURNE",
    "SAMPLE",
    "MICHAEL",
    "MAIN ST",
    "1981",
    "19810101",
    "06061986",
    "19860606",
    "1986",
    "12102030",
]


@pytest.mark.parametrize("frame", LICENCE_FRAMES)
def test_licence_data_never_leaves_the_decoder(frame, caplog):
    caplog.set_level(logging.DEBUG)
    for options in (DecodeOptions(), DecodeOptions(luhn=True, lrc=True, require_aim=False)):
        verdict = decode(frame.encode("latin-1"), options, today=TODAY)
        assert verdict.result in ("dl", "reject")
        assert verdict.loyalty_id is None
        shown = [json.dumps(verdict.to_json()), verdict.describe(), repr(verdict)]
        for secret in SECRETS:
            for text in shown:
                assert secret not in text, (secret, text)
            assert secret not in caplog.text
    assert caplog.records  # the decoder does log its verdicts (masked)


def test_licence_data_stays_out_of_errors_too(monkeypatch, caplog):
    """Even a decoder bug whose message quotes the licence leaks nothing, and never raises."""
    caplog.set_level(logging.DEBUG)

    def broken(digits: str, order: str):
        raise ValueError(f"cannot parse {digits} of DOE JOHN")

    monkeypatch.setattr(aamva_module, "parse_date", broken)
    verdict = run(M24)
    assert_reject(verdict, "decoder error")
    for secret in SECRETS:
        assert secret not in json.dumps(verdict.to_json())
        assert secret not in verdict.describe()
        assert secret not in caplog.text


def test_licence_through_the_command_prints_only_the_age():
    code, out = _cli(["--today", "2026-06-15"], M24.encode("latin-1"))
    assert code == 0
    assert json.loads(out) == {"result": "dl", "over_21": True, "age": 45}


# ---- checks -------------------------------------------------------------------------------------


def test_check_digit_helpers():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert luhn_valid(PAN) and not luhn_valid(PAN_BAD_LUHN)
    assert not luhn_valid("") and not luhn_valid("12a4")
    assert gs1_valid("4006381333931") and gs1_valid("96385074") and gs1_valid("735000012345678906")
    assert not gs1_valid("4006381333932") and not gs1_valid("") and not gs1_valid("4a")


# ---- robustness: never raises, always one of the four results -----------------------------------


def _assert_sane(verdict: Verdict) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.result in SHAPES
    assert set(verdict.to_json()) == SHAPES[verdict.result]
    assert isinstance(verdict.describe(), str)
    if verdict.result == "reject":
        assert verdict.reason


def test_fuzz_random_bytes():
    rng = random.Random(20260615)
    for _ in range(3000):
        frame = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        _assert_sane(decode(frame, today=TODAY))


def test_fuzz_structured_frames():
    rng = random.Random(4242)
    alphabet = list("%;+#!&@?^=$]EABLCQdez0123456789\r\n\t\x02\x03\x1d\x1e\x1c -/") + ["ANSI "]
    options = [
        DecodeOptions(),
        DecodeOptions(luhn=True, lrc=True, require_aim=False, track1_formats=("A", "Z")),
    ]
    for _ in range(3000):
        frame = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        _assert_sane(decode(frame.encode("latin-1"), rng.choice(options), today=TODAY))


def test_fuzz_mutated_vectors():
    rng = random.Random(7)
    seeds = [v["raw"].encode("latin-1") for v in VECTORS] + [pdf417("06061986").encode()]
    for _ in range(3000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            position = rng.randrange(len(frame) + 1)
            action = rng.randrange(3)
            if action == 0 and position < len(frame):
                del frame[position]
            elif action == 1 and position < len(frame):
                frame[position] = rng.randrange(256)
            else:
                frame.insert(position, rng.randrange(256))
        _assert_sane(decode(bytes(frame), today=TODAY))


@pytest.mark.parametrize("bad", [None, "a string", 12, object()])
def test_decode_never_raises_on_wrong_types(bad):
    _assert_sane(decode(bad, today=TODAY))  # type: ignore[arg-type]


def test_today_defaults_to_the_real_date():
    verdict = decode(b";636015123456789=301219500101=?")
    assert verdict.result == "dl" and verdict.over_21 is True
    assert verdict.age == aamva_module.age_on(date(1950, 1, 1), date.today())
