"""docs/configuration.md, `connectbox config example`/`check` and the key declarations in
app/config.py say the same."""

from __future__ import annotations

import logging
import re
import tomllib

import pytest

from app.cli import main
from app.config import (
    PROVIDER_KEYS,
    Bindings,
    Config,
    ConfigError,
    load_config,
    parse_config,
    provider_settings,
    table_keys,
    tables,
)
from app.config_doc import DOC, example, render

HOST = {"url": "https://host.example", "device_id": "D-1", "site_id": "S-1", "token": "t"}


def test_the_key_tables_are_written_from_the_declarations():
    text = DOC.read_text()
    assert render(text) == text, "docs/configuration.md is out of date: python -m app.config_doc"


def test_every_table_of_keys_has_its_place_in_the_docs():
    with pytest.raises(ValueError, match="no <!-- keys"):
        render(DOC.read_text().replace("<!-- keys: network -->", "<!-- network -->"))
    with pytest.raises(ValueError, match="no table of keys called 'nework'"):
        render(DOC.read_text().replace("<!-- keys: network -->", "<!-- keys: nework -->"))


def test_every_key_of_the_examples_is_declared():
    snippets = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert len(snippets) >= 3  # the whole file, TLS, a fixed address
    for snippet in snippets:
        for section, keys in tomllib.loads(snippet).items():
            assert set(keys) <= set(table_keys(tables()[section])), section


def test_the_messages_the_docs_show_are_the_boxs(caplog):
    text = DOC.read_text()
    with pytest.raises(ConfigError) as local:
        parse_config({"host": {**HOST, "deadline_ms": "fast"}})
    with caplog.at_level(logging.INFO, logger="connectbox.config"):
        provider_settings({"pos": {"deadline_ms": 50}, "retention_days": 30})
    shown = [str(local.value)] + [record.getMessage() for record in caplog.records]
    for message in shown:
        assert message in text


# ---- connectbox config example / check: the same declarations ------------------------------


def test_the_example_shows_every_declared_key_and_parses():
    text = example()
    shown: dict[str, set[str]] = {}
    place = ""
    for line in text.splitlines():
        header = re.fullmatch(r"(?:# )?\[\[?([a-z.]+)\]\]?", line)
        key = re.fullmatch(r"(?:# )?([a-z0-9_]+) = .*", line)
        if header:
            place = header[1]
        elif key:
            shown.setdefault(place, set()).add(key[1])
    for place, table in tables().items():
        declared = {
            name
            for name, (_, key) in table_keys(table).items()
            if not isinstance(key.kind, Bindings)
        }
        assert shown.get(place, set()) == declared, place
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "`" not in text
    parse_config(tomllib.loads(text))  # as written: a configuration the box takes


def test_the_example_shows_the_real_defaults():
    # Every key uncommented; not token_file (token or token_file, not both), the PIN ("..." is
    # no PIN: the box says so) nor the TLS files ("..." is no file).
    uncomment = re.compile(r"^# (\[\[[a-z.]+\]\]$|[a-z0-9_]+ = )")
    lines = [uncomment.sub(r"\1", line) for line in example().splitlines()]
    skipped = ("token_file", "pin", "tls_")
    raw = tomllib.loads("\n".join(x for x in lines if not x.startswith(skipped)))
    config = parse_config(raw)
    defaults = Config()
    for place, table in tables().items():
        if "." in place:
            continue
        for name, (attribute, key) in table_keys(table).items():
            value = getattr(getattr(defaults, place), attribute)
            if value not in (None, "") and not isinstance(key.kind, Bindings):
                assert getattr(getattr(config, place), attribute) == value, f"[{place}] {name}"
    assert [b.register_id for b in config.readers.bindings] == ["..."]


def test_config_check_prints_the_settings_in_effect_with_secrets_masked(tmp_path, capsys):
    path = tmp_path / "connectbox.toml"
    path.write_text(
        '[host]\nurl = "https://h.example"\ndevice_id = "D-1"\nsite_id = "S-1"\n'
        'token = "s3cret-token"\n[status]\npin = "48213"\n[provisioning]\n'
        'claim_code = "CLAIM-9"\n[pos]\nlisten = "127.0.0.1:9100"\n'
        '[[readers.bind]]\nregister_id = "2"\npath = "/dev/ttyS1"\nluhn = true\n'
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path}: valid.")
    for secret in ("s3cret-token", "48213", "CLAIM-9"):
        assert secret not in out
    shown = tomllib.loads(out)
    assert shown["host"]["token"] == shown["status"]["pin"] == "[REDACTED]"
    # The rest reads back as the same configuration.
    del shown["host"]["token"], shown["status"]["pin"], shown["provisioning"]["claim_code"]
    again, loaded = parse_config(shown), load_config(path)
    again.host.token, again.status.pin = loaded.host.token, loaded.status.pin
    again.provisioning.claim_code, again.source = loaded.provisioning.claim_code, loaded.source
    assert again == loaded
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "no configuration file at" in capsys.readouterr().err


def test_every_key_the_docs_name_is_declared():
    """`[section] key` in the prose of the docs and the README names a real key (a renamed or
    removed key would leave a stale one); the provider's keys are checked as the provider's."""
    root = DOC.parent.parent
    named = re.compile(r"(?<!\[)\[([a-z]+(?:\.[a-z]+)?)\] ([a-z_][a-z0-9_.]*[a-z0-9_])")
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            if "unknown key" in line:  # an error message the docs show, typo included
                continue
            for place, name in named.findall(line):
                if place == "provider":
                    assert name in PROVIDER_KEYS, f"{path.name}: [provider] {name}"
                elif place in tables():
                    assert name in table_keys(tables()[place]), f"{path.name}: [{place}] {name}"
