"""docs/configuration.md and the key declarations in app/config.py say the same."""

from __future__ import annotations

import logging
import re
import tomllib

import pytest

from app.config import ConfigError, parse_config, provider_settings, table_keys, tables
from app.config_doc import DOC, render

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
    examples = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert len(examples) >= 3  # the whole file, TLS, a fixed address
    for example in examples:
        for section, keys in tomllib.loads(example).items():
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
