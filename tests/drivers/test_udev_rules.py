"""The image's udev rules for readers: every line parses, and every cards.md vendor is covered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.discovery import KNOWN_VENDORS, USB_SERIAL_BRIDGES

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "image/overlay/etc/udev/rules.d/70-connectbox-readers.rules"

# cards.md, "Identifying readers" (kept here too, so a table edit cannot hide a missing rule).
CARDS_MD_READERS = {"0801", "0acd", "0c2e", "0536", "05e0", "05f9", "080c", "1eab", "065a", "0404"}
CARDS_MD_BRIDGES = {"0403", "067b", "10c4", "1a86"}

MATCH_ONLY = {
    "ACTION",
    "DEVPATH",
    "KERNEL",
    "KERNELS",
    "SUBSYSTEM",
    "SUBSYSTEMS",
    "DRIVER",
    "DRIVERS",
    "ATTRS",
    "TAGS",
    "CONST",
    "RESULT",
    "TEST",
    "PROGRAM",
}
ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS", "SECLABEL"}
BOTH = {"ENV", "TAG", "ATTR", "SYSCTL", "SYMLINK", "NAME"}
NEEDS_ATTR = {"ATTR", "ATTRS", "ENV", "SYSCTL", "IMPORT", "CONST", "TEST", "SECLABEL", "RUN"}
TOKEN = re.compile(
    r'\s*(?P<key>[A-Z]+)(?:\{(?P<attr>[^{}"]+)\})?\s*'
    r'(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?P<sep>,|$)'
)


def logical_lines() -> list[tuple[int, str]]:
    """(first line number, text) with backslash continuations joined, comments dropped."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(RULES.read_text().splitlines(), 1):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        out.append((start, pending + raw))
        pending = ""
    assert not pending, "the file ends inside a continued line"
    return out


def parse(line: str) -> list[dict[str, str]]:
    tokens = []
    position = 0
    while position < len(line):
        match = TOKEN.match(line, position)
        assert match, f"cannot parse at column {position}: {line[position:]!r}"
        tokens.append(match.groupdict())
        position = match.end()
        if match["sep"] == "":
            break
    assert line[position:].strip() == "", f"trailing text: {line[position:]!r}"
    assert tokens, "empty rule"
    return tokens


RULE_LINES = logical_lines()


def has(tokens: list[dict[str, str]], key: str, op: str, value: str) -> bool:
    return any(t["key"] == key and t["op"] == op and t["value"] == value for t in tokens)


def all_tokens() -> list[dict[str, str]]:
    return [token for _number, line in RULE_LINES for token in parse(line)]


def test_rules_file_is_plain_ascii_with_unix_line_ends():
    data = RULES.read_bytes()
    assert data.isascii() and b"\r" not in data and data.endswith(b"\n")


@pytest.mark.parametrize(("number", "line"), RULE_LINES, ids=[str(n) for n, _ in RULE_LINES])
def test_every_rule_line_parses_with_valid_keys_and_operators(number, line):
    for token in parse(line):
        key, op, attr = token["key"], token["op"], token["attr"]
        assert key in MATCH_ONLY | ASSIGN_ONLY | BOTH, f"line {number}: unknown key {key}"
        if key in MATCH_ONLY:
            assert op in ("==", "!="), f"line {number}: {key} can only be matched"
        if key in ASSIGN_ONLY:
            assert op in ("=", "+=", "-=", ":="), f"line {number}: {key} can only be assigned"
        if key in NEEDS_ATTR and key not in ("RUN", "IMPORT", "SECLABEL"):
            assert attr, f"line {number}: {key} needs {{...}}"
        if key == "IMPORT":
            assert attr in ("program", "builtin", "file", "db", "cmdline", "parent")
        if key == "MODE":
            assert re.fullmatch(r"0[0-7]{3}", token["value"]), f"line {number}: MODE"
        if key in ("SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "KERNELS", "ATTRS", "ENV"):
            assert "  " not in token["value"]


def test_goto_targets_exist():
    labels = {t["value"] for t in all_tokens() if t["key"] == "LABEL"}
    gotos = {t["value"] for t in all_tokens() if t["key"] == "GOTO"}
    assert gotos and gotos <= labels
    last_number, last_line = RULE_LINES[-1]
    assert parse(last_line)[0]["key"] == "LABEL", "the end label must be the last rule"


def test_removal_events_are_skipped_first():
    assert has(parse(RULE_LINES[0][1]), "ACTION", "==", "remove")


def test_every_cards_md_vendor_and_bridge_has_a_rule():
    assert set(KNOWN_VENDORS) == CARDS_MD_READERS
    assert set(USB_SERIAL_BRIDGES) == CARDS_MD_BRIDGES
    matched: dict[str, list[dict[str, str]]] = {}
    for _number, line in RULE_LINES:
        tokens = parse(line)
        for token in tokens:
            if token["key"] == "ATTRS" and token["attr"] == "idVendor" and token["op"] == "==":
                for vid in token["value"].split("|"):
                    matched[vid] = tokens
    assert set(matched) >= CARDS_MD_READERS | CARDS_MD_BRIDGES
    for vid in CARDS_MD_BRIDGES:  # bridges: ttys only
        assert has(matched[vid], "SUBSYSTEM", "==", "tty")
    for tokens in matched.values():
        assert any(t["key"] == "ENV" and t["attr"] == "CONNECTBOX_VENDOR" for t in tokens)
        assert any(t["value"] == "%b" for t in tokens)  # the USB port path


def test_groups_modes_and_links():
    rules = [parse(line) for _n, line in RULE_LINES]
    by_reader = {}
    for tokens in rules:
        for t in tokens:
            if t["key"] == "ENV" and t["attr"] == "CONNECTBOX_READER" and t["op"] == "=":
                by_reader[t["value"]] = {(x["key"], x["op"]): x["value"] for x in tokens}
                by_reader[t["value"]]["links"] = [
                    x["value"] for x in tokens if x["key"] == "SYMLINK"
                ]
    serial, keyboard = by_reader["serial"], by_reader["keyboard"]
    assert serial[("GROUP", "=")] == "dialout" and serial[("MODE", "=")] == "0660"
    assert keyboard[("GROUP", "=")] == "input" and keyboard[("MODE", "=")] == "0660"
    assert serial[("SUBSYSTEM", "==")] == "tty" and keyboard[("SUBSYSTEM", "==")] == "input"
    assert any(link.startswith("connectbox/serial-") for link in serial["links"])
    assert any(link.startswith("connectbox/hid-") for link in keyboard["links"])
    assert keyboard[("ENV", "==")] == "1"  # ID_INPUT_KEYBOARD: only keyboard event nodes


def test_every_env_variable_used_is_set_in_the_file_or_by_udev_builtins():
    text = " ".join(line for _n, line in RULE_LINES)
    used = set(re.findall(r"\$env\{([A-Z_]+)\}", text))
    assigned = {t["attr"] for t in all_tokens() if t["key"] == "ENV" and t["op"] == "="}
    from_usb_id = {"ID_SERIAL_SHORT", "ID_USB_INTERFACE_NUM"}
    assert used <= assigned | from_usb_id, used - assigned - from_usb_id
    assert not re.search(r"\$(?!env\{|attr\{)", text), "unknown $ substitution"
