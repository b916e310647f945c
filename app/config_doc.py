"""What the declarations in app/config.py say to people: the key tables of
docs/configuration.md, the commented example of `connectbox config example`, and the settings in
effect that `connectbox config check` prints.

Each table stands between `<!-- keys: <table> -->` and `<!-- /keys -->`; the prose around them
is hand-written. `python -m app.config_doc` rewrites them in place; `--check` only says whether
they are up to date (a test runs it).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from app.config import (
    PROVIDER_KEYS,
    PROVIDER_READER_KEYS,
    SETTINGS_HELP,
    Bindings,
    Config,
    Flag,
    Ipv4,
    Key,
    Kind,
    Url,
    declared,
    table_keys,
    tables,
)
from app.status.privacy import REDACTED, SECRET_KEYS

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BLOCK = re.compile(r"(<!-- keys: (\S+) -->\n)(.*?)(<!-- /keys -->)", re.S)


def key_table(place: str) -> str:
    """One table's keys: name, default, and the doc with the bounds."""
    defaults = tables()[place]()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, (attribute, key) in table_keys(tables()[place]).items():
        default = _default(key, getattr(defaults, attribute))
        rows.append(f"| `{name}` | {default} | {_meaning(place, name, key)} |")
    return "\n".join(rows) + "\n"


def _meaning(place: str, name: str, key: Key) -> str:
    """The key's doc, its bounds, and the provider's key that overrides it."""
    meaning = [key.doc, key.kind.bounds()]
    overridden = {f"{p}.{k}": name for name, (p, k) in PROVIDER_KEYS.items()}
    provider = overridden.get(f"{place}.{name}")
    if provider:
        meaning.append(f"The provider's device config overrides it (`{provider}`).")
    return " ".join(m for m in meaning if m)


def provider_table() -> str:
    """The provider's keys and the file's keys that check them."""
    rows = ["| provider's key | checked as |", "|---|---|"]
    for name, (place, key_name) in PROVIDER_KEYS.items():
        kind = declared(place, key_name).kind
        if isinstance(kind, Bindings):
            only = " and ".join(f"`{k}`" for k in PROVIDER_READER_KEYS)
            checked = f"`[[{kind.place}]]` tables, of {only} only."
        else:
            checked = f"`[{place}] {key_name}`: {kind.bounds()}"
        rows.append(f"| `{name}` | {checked} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """`text` with every key table written afresh; each table must have its place."""
    known = [*tables(), "provider"]
    seen = []

    def table(found: re.Match[str]) -> str:
        place = found[2]
        if place not in known:
            raise ValueError(f"{DOC.name}: no table of keys called {place!r}")
        seen.append(place)
        return found[1] + (provider_table() if place == "provider" else key_table(place)) + found[4]

    result = BLOCK.sub(table, text)
    missing = [place for place in known if place not in seen]
    if missing:
        raise ValueError(f"{DOC.name}: no <!-- keys: ... --> place for {', '.join(missing)}")
    return result


def _default(key: Key, value: Any) -> str:
    if key.required:
        return "(required)"
    if key.shown:
        return key.shown
    return "—" if value in (None, "") else f"`{_toml(value)}`"


# ---- the example and the settings in effect ------------------------------------------------

# What an example shows for a key that has no default (the comment says it is not set).
PLACEHOLDERS: dict[type[Kind], str] = {
    Url: '"https://loyalty.example.com"',
    Flag: "true",
    Ipv4: '"dhcp"',  # or a fixed address: docs/configuration.md, "A fixed address"
}


def example() -> str:
    """A commented configuration file: every table and key, its meaning, its default."""
    lines = [
        "# Connect Box configuration: a commented example, written from the declarations the",
        "# service checks its file with. A key left commented out keeps its default (shown);",
        '# one shown as "..." is not set. Check a file with: connectbox config check PATH',
        "# Every setting in detail: docs/configuration.md",
    ]
    for place, table in tables().items():
        defaults = table()
        many = "." in place  # readers.bind: one table per reader, none by default
        header = f"# [[{place}]]" if many else f"[{place}]"
        lines += ["", header]
        for name, (attribute, key) in table_keys(table).items():
            meaning = _meaning(place, name, key) + (" Required." if key.required else "")
            if lines[-1] != header:
                lines.append("")
            lines += textwrap.wrap(
                meaning.replace("`", ""), 99, initial_indent="# ", subsequent_indent="# "
            )
            if isinstance(key.kind, Bindings):  # the table of its own just below
                continue
            value = getattr(defaults, attribute)
            shown = _toml(value) if value not in (None, "") else _placeholder(key.kind)
            line = f"{name} = {shown}"
            lines.append(line if key.required and not many else f"# {line}")
    return "\n".join(lines) + "\n"


def _placeholder(kind: Kind) -> str:
    return next((text for k, text in PLACEHOLDERS.items() if isinstance(kind, k)), '"..."')


def effective(config: Config) -> str:
    """The settings `config` holds, defaults included, as TOML; secrets masked."""
    lines = [f"# {config.source}: valid. The settings in effect (secrets masked):"]
    for place, table in tables().items():
        if "." not in place:
            lines += ["", f"[{place}]", *_settings(table, getattr(config, place))]
    for binding in config.readers.bindings:  # app.readers.ReaderBinding
        lines += ["", "[[readers.bind]]", *_settings(tables()["readers.bind"], binding)]
    lines += ["", f"# Every setting in detail: {SETTINGS_HELP}"]
    return "\n".join(lines) + "\n"


def _settings(table: type, values: Any) -> list[str]:
    lines = []
    for name, (attribute, key) in table_keys(table).items():
        if isinstance(key.kind, Bindings):  # its tables follow
            continue
        # A reader binding keeps its decoding keys in `options`.
        value = getattr(values, attribute) if hasattr(values, attribute) else None
        if value is None and hasattr(values, "options"):
            value = getattr(values.options, attribute, None)
        if value in (None, ""):
            lines.append(f"# {name}: not set")
        else:
            lines.append(f"{name} = {_toml(REDACTED if name in SECRET_KEYS else value)}")
    return lines


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
            if value
            else "{}"
        )
    return json.dumps(str(value))  # strings, paths, listen addresses


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{DOC} is out of date: run python -m app.config_doc", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        DOC.write_text(fresh)
        print(f"{DOC}: key tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
