import logging

import pytest

from app.config import ConfigError, load_config, provider_settings

GOOD = """
[pos]
listen = "127.0.0.1:9100"
dialect = "passport"
[host]
url = "https://host.example/"
device_id = "D-1"
site_id = "S-1001"
token = "t"
deadline_ms = 800
[status]
listen = "[::1]:8081"
[storage]
data_dir = "/tmp/cb"
"""


def _write(tmp_path, text):
    path = tmp_path / "connectbox.toml"
    path.write_text(text)
    return path


def test_good_config(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.pos.listen.port == 9100 and config.pos.dialect == "passport"
    assert config.host.url == "https://host.example" and config.host.deadline_ms == 800
    assert config.status.listen.host == "::1"


def test_token_file_relative_to_config(tmp_path):
    (tmp_path / "token").write_text("secret\n")
    config = load_config(_write(tmp_path, GOOD.replace('token = "t"', 'token_file = "token"')))
    assert config.host.token == "secret"


@pytest.mark.parametrize(
    "change, message",
    [
        (("deadline_ms = 800", 'deadline_ms = "fast"'), r"\[host\] deadline_ms: must be a whole"),
        (('dialect = "passport"', 'dialect = "ibm"'), r"\[pos\] dialect: must be one of"),
        (('device_id = "D-1"\n', ""), r"\[host\] device_id: missing"),
        (
            ("[storage]", "[provisioning]\nheartbeat_s = 1\n[storage]"),
            r"\[provisioning\] heartbeat_s: must be a whole",
        ),
        (("https://host.example/", "http://host.example"), r"\[host\] url: plain http"),
        (('listen = "127.0.0.1:9100"', 'listen = "nine"'), r"\[pos\] listen: must look like"),
        (("[storage]", '[storage]\ndatadir = "x"'), r"\[storage\] datadir: unknown key"),
        (("[status]", "[stauts]"), r"\[stauts\]: unknown section"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD.replace(*change)))


def test_http_allowed_for_loopback(tmp_path):
    config = load_config(
        _write(tmp_path, GOOD.replace("https://host.example/", "http://127.0.0.1:8700"))
    )
    assert config.host.url == "http://127.0.0.1:8700"


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no configuration file at .*nope.toml"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[pos\n"))


def test_reader_bindings(tmp_path):
    text = (
        GOOD
        + """
[readers]
pending_ttl_s = 30
[[readers.bind]]
register_id = "1"
match = { vendor_id = "0801" }
[[readers.bind]]
register_id = "2"
path = "/dev/connectbox/reader-2"
kind = "keyboard"
luhn = true
track1_formats = ["B"]
"""
    )
    config = load_config(_write(tmp_path, text))
    first, second = config.readers.bindings
    assert (first.register_id, first.match, first.path) == ("1", {"vendor_id": "0801"}, None)
    assert (second.kind, second.options.luhn, second.options.track1_formats) == (
        "keyboard",
        True,
        ("B",),
    )
    assert config.readers.pending_ttl_s == 30


@pytest.mark.parametrize(
    "entry, message",
    [
        ('register_id = "1"', r"\[readers.bind.0\] match: give a match table or a path"),
        ('register_id = "1"\nmatch = { colour = "red" }', r"\[readers.bind.0\] match: must be"),
        ('match = { vendor_id = "0801" }', r"\[readers.bind.0\] register_id: missing"),
        ('register_id = "1"\npath = "/dev/x"\nbaud = 9600', r"\[readers.bind.0\] baud: unknown"),
    ],
)
def test_bad_reader_bindings_name_the_key(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD + "\n[[readers.bind]]\n" + entry + "\n"))


def test_no_token_means_enrollment_with_a_claim_code(tmp_path):
    text = GOOD.replace('token = "t"\n', "").replace('device_id = "D-1"\n', "")
    text += '[provisioning]\nclaim_code = "ABCD-1234"\n'
    config = load_config(_write(tmp_path, text))
    assert (config.host.token, config.host.device_id) == ("", "")
    assert config.provisioning.claim_code == "ABCD-1234"


# ---- the provider's device config: the same declarations ----------------------------------


def _provider(config, caplog):
    with caplog.at_level(logging.INFO, logger="connectbox.config"):
        return provider_settings(config), [r.getMessage() for r in caplog.records]


def test_provider_values_are_checked_like_the_file(caplog):
    settings, logged = _provider(
        {
            "heartbeat_s": 30,
            "pos": {"dialect": "passport", "listen_port": 9000, "deadline_ms": 900},
            "readers": [{"match": {"vendor_id": "0acd"}, "register_id": "2"}],
        },
        caplog,
    )
    assert (settings["heartbeat_s"], settings["pos.deadline_ms"]) == (30, 900)
    [binding] = settings["readers"]
    assert (binding.register_id, binding.match, binding.path) == ("2", {"vendor_id": "0acd"}, None)
    assert logged == []


def test_provider_values_out_of_bounds_are_refused_and_named(caplog):
    settings, logged = _provider(
        {
            "heartbeat_s": 1,
            "pos": {"deadline_ms": 50},
            "readers": [
                {"match": {"vendor_id": "0acd"}, "register_id": "1"},
                {"match": {"colour": "red"}, "register_id": "2"},
            ],
        },
        caplog,
    )
    assert settings == {}  # nothing applied: what is in force stays
    assert logged == [
        "config error: [provider] heartbeat_s: must be a whole number from 5 to 86400 (got 1)"
        "; the value in force stays",
        "config error: [provider] pos.deadline_ms: must be a whole number from 100 to 10000"
        " (got 50); the value in force stays",
        "config error: [provider readers.1] match: must be a table with keys from"
        " ['devnode', 'port_path', 'product_id', 'serial', 'vendor_id']; the value in force stays",
    ]


def test_provider_keys_unknown_to_the_box_are_ignored_and_named(caplog):
    settings, logged = _provider(
        {
            "config_version": 3,
            "site": {"site_id": "S-1"},
            "policy": {},
            "retention_days": 30,
            "loyalty_theme": "blue",
            "pos": {"dialect": "eps", "listen_port": 9000, "deadline_ms": 900, "colour": "red"},
            "readers": [{"match": {"vendor_id": "0acd"}, "register_id": "2", "luhn": True}],
        },
        caplog,
    )
    assert settings["pos.deadline_ms"] == 900 and settings["retention_days"] == 30
    [binding] = settings["readers"]  # only what the host may say about a reader is used
    assert binding.options.luhn is False
    assert logged == [
        "provider config: ignored loyalty_theme, pos.colour, readers.0.luhn (unknown to this box)"
    ]
