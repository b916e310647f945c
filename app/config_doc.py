"""The key tables of docs/configuration.md, written from the declarations in app/config.py.

Each table stands between `<!-- keys: <table> -->` and `<!-- /keys -->`; the prose around them
is hand-written. `python -m app.config_doc` rewrites them in place; `--check` only says whether
they are up to date (a test runs it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from app.config import (
    PROVIDER_KEYS,
    PROVIDER_READER_KEYS,
    Bindings,
    Key,
    declared,
    table_keys,
    tables,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BLOCK = re.compile(r"(<!-- keys: (\S+) -->\n)(.*?)(<!-- /keys -->)", re.S)


def key_table(place: str) -> str:
    """One table's keys: name, default, and the doc with the bounds."""
    overridden = {f"{p}.{k}": name for name, (p, k) in PROVIDER_KEYS.items()}
    defaults = tables()[place]()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, (attribute, key) in table_keys(tables()[place]).items():
        meaning = [key.doc, key.kind.bounds()]
        provider = overridden.get(f"{place}.{name}")
        if provider:
            meaning.append(f"The provider's device config overrides it (`{provider}`).")
        default = _default(key, getattr(defaults, attribute))
        rows.append(f"| `{name}` | {default} | {' '.join(m for m in meaning if m)} |")
    return "\n".join(rows) + "\n"


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
            "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
            if value
            else "{}"
        )
    return json.dumps(str(value))  # strings, paths, listen addresses


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
