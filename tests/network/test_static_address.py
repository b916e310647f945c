"""A fixed IPv4 address (app/network/static.py): the checks, the .network file, the privileged
helper's trial and fallback (with a fake networkd), and the service's side of the request."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from app.config import ConfigError, parse_config, provider_settings
from app.network.static import (
    DHCP,
    NETWORK_FILE,
    STATE_FILE,
    BadSetting,
    FixedAddress,
    Helper,
    Ipv4Setting,
    State,
    network_file,
    parse_setting,
)

GOOD = {"address": "192.0.2.50/24", "gateway": "192.0.2.1", "dns": ["192.0.2.1", "203.0.113.9"]}
FIXED = parse_setting(GOOD)


def test_a_good_setting_and_dhcp():
    assert (
        Ipv4Setting(
            IPv4Interface("192.0.2.50/24"),
            IPv4Address("192.0.2.1"),
            (IPv4Address("192.0.2.1"), IPv4Address("203.0.113.9")),
        )
        == FIXED
    )
    assert parse_setting(FIXED.to_json()) == FIXED
    assert parse_setting("dhcp") == DHCP and DHCP.to_json() == "dhcp" and DHCP.mode == "dhcp"
    assert parse_setting({**GOOD, "dns": "192.0.2.1"}).dns == (IPv4Address("192.0.2.1"),)


@pytest.mark.parametrize(
    ("change", "part", "why"),
    [
        ({"address": "192.0.2.50"}, "address", "address/prefix"),
        ({"address": "192.0.2.300/24"}, "address", "IPv4 address"),
        ({"address": "192.0.2.50/31"}, "address", "from 8 to 30"),
        ({"address": "192.0.2.0/24"}, "address", "network's own or broadcast"),
        ({"address": "192.0.2.255/24"}, "address", "network's own or broadcast"),
        ({"address": "127.0.0.5/8", "gateway": "127.0.0.1"}, "address", "cannot be"),
        ({"address": "169.254.1.5/16", "gateway": "169.254.1.1"}, "address", "cannot be"),
        ({"address": "224.0.0.5/24", "gateway": "224.0.0.1"}, "address", "cannot be"),
        ({"gateway": None}, "gateway", "missing"),
        ({"gateway": "198.51.100.1"}, "gateway", "not an address in the box's network"),
        ({"gateway": "192.0.2.50"}, "gateway", "box's own address"),
        ({"gateway": "router"}, "gateway", "IPv4 address"),
        ({"dns": []}, "dns", "1 to 3"),
        ({"dns": ["203.0.113.1", "203.0.113.2", "203.0.113.8", "203.0.113.4"]}, "dns", "1 to 3"),
        ({"dns": ["0.0.0.0"]}, "dns", "cannot be"),
        ({"dns": ["2001:db8::1"]}, "dns", "IPv4 address"),
        ({"mask": "255.255.255.0"}, "", "unknown field 'mask'"),
    ],
)
def test_a_bad_setting_names_the_field_and_why(change, part, why):
    with pytest.raises(BadSetting) as refused:
        parse_setting({**GOOD, **change})
    assert refused.value.part == part and why in refused.value.why


def test_not_a_setting_at_all():
    for raw in ("static", 42, None, ["dhcp"]):
        with pytest.raises(BadSetting, match="dhcp"):
            parse_setting(raw)


def test_the_network_file_fixes_ipv4_on_the_wired_port_and_never_takes_a_used_address():
    text = network_file(FIXED)
    assert "[Match]\nName=en* eth*\n" in text
    assert "Gateway=192.0.2.1\nDNS=192.0.2.1\nDNS=203.0.113.9\nDHCP=ipv6\n" in text
    assert "[Address]\nAddress=192.0.2.50/24\nDuplicateAddressDetection=ipv4\n" in text


# ---- the config file and the provider's config ---------------------------------------------


def test_the_config_key_is_checked_by_the_same_rules():
    raw = {"host": {"url": "https://h.example.com"}, "network": {"ipv4": GOOD}}
    assert parse_config(raw).network.ipv4 == FIXED
    assert parse_config({**raw, "network": {"ipv4": "dhcp"}}).network.ipv4 == DHCP
    assert parse_config({**raw, "network": {}}).network.ipv4 is None
    bad = {**raw, "network": {"ipv4": {**GOOD, "gateway": "198.51.100.7"}}}
    with pytest.raises(ConfigError, match=r"^config error: \[network\] ipv4.gateway: 198.51.100.7"):
        parse_config(bad)


def test_the_providers_value_is_checked_and_a_bad_one_left_out(caplog):
    caplog.set_level("INFO", logger="connectbox.config")
    assert provider_settings({"network": {"ipv4": GOOD}}) == {"network.ipv4": FIXED}
    assert provider_settings({"network": {"ipv4": {**GOOD, "dns": []}}}) == {}
    assert "[provider] network.ipv4.dns: give 1 to 3" in caplog.text
    assert provider_settings({"network": {"vlan": 5}}) == {}
    assert "ignored network.vlan" in caplog.text


# ---- the helper (root), with a fake networkd -------------------------------------------------


class FakeNetworkd:
    """Records reloads; a setting works when `works_for` says so. `during_trial` runs while a
    setting is on trial (a new request arriving meanwhile)."""

    def __init__(self, works_for=lambda setting: None) -> None:
        self.works_for = works_for
        self.reloads = 0
        self.tried: list[Ipv4Setting] = []
        self.during_trial = None

    def reload(self) -> None:
        self.reloads += 1

    def works(self, setting: Ipv4Setting, timeout_s: float) -> str | None:
        self.tried.append(setting)
        if self.during_trial is not None:
            self.during_trial, during = None, self.during_trial
            during()
        return self.works_for(setting)


@pytest.fixture
def box(tmp_path):
    """The service's side (managed: the helper is installed) and the helper's, sharing files."""
    helper_file = tmp_path / "network_apply.py"
    helper_file.write_text("# installed\n")
    data, state_dir = tmp_path / "data", tmp_path / "etc-network"
    fixed = FixedAddress(data, state_dir, helper_file)
    system = FakeNetworkd()
    return fixed, Helper(fixed.request_path, state_dir, system), system


def test_a_fixed_address_that_works_is_kept(box):
    fixed, helper, system = box
    requested = fixed.request(FIXED, "status page")
    assert requested.ok and "keeps it only if it works" in requested.message
    assert "http://192.0.2.50/" in requested.message
    assert fixed.outcome(requested.request_id) is None  # the helper has not run yet
    assert fixed.snapshot()["pending"] is True
    helper.run()
    assert system.reloads == 1 and system.tried == [FIXED]
    assert (helper.state_dir / NETWORK_FILE).read_text() == network_file(FIXED)
    outcome = fixed.outcome(requested.request_id)
    assert outcome.ok and "192.0.2.50/24" in outcome.message
    shown = fixed.snapshot()
    assert shown["managed"] and shown["mode"] == "static" and not shown["pending"]
    assert (shown["address"], shown["gateway"], shown["dns"]) == (
        "192.0.2.50/24",
        "192.0.2.1",
        ["192.0.2.1", "203.0.113.9"],
    )
    assert shown["source"] == "status page" and shown["result"]["ok"] is True
    helper.run()  # nothing new: nothing done
    assert system.reloads == 1


def test_a_fixed_address_that_does_not_work_goes_back_to_the_previous_setting(box):
    fixed, helper, system = box
    system.works_for = lambda s: "the gateway 192.0.2.1 does not answer" if s.address else None
    requested = fixed.request(FIXED, "status page")
    helper.run()
    assert system.reloads == 2  # the new setting, then the previous one back
    assert (helper.state_dir / NETWORK_FILE).read_text() == ""  # DHCP: 20-wired.network
    outcome = fixed.outcome(requested.request_id)
    assert not outcome.ok
    assert "not kept: the gateway 192.0.2.1 does not answer; back to DHCP" in outcome.message
    assert fixed.snapshot()["mode"] == "dhcp"


def test_back_to_dhcp_and_the_same_setting_twice(box):
    fixed, helper, system = box
    fixed.request(FIXED, "status page")
    helper.run()
    again = fixed.request(FIXED, "connectbox network")
    helper.run()
    assert system.reloads == 1 and "already in force" in fixed.outcome(again.request_id).message
    back = fixed.request(DHCP, "connectbox network")
    helper.run()
    assert fixed.outcome(back.request_id).ok and system.reloads == 2
    assert (helper.state_dir / NETWORK_FILE).read_text() == ""
    assert fixed.snapshot()["mode"] == "dhcp"


def test_a_request_during_a_trial_is_handled_in_the_same_run(box):
    fixed, helper, system = box
    first = fixed.request(FIXED, "status page")
    later: list = []
    system.during_trial = lambda: later.append(fixed.request(DHCP, "provider"))
    helper.run()
    assert fixed.outcome(first.request_id).message == "superseded by a newer request"
    assert fixed.outcome(later[0].request_id).ok
    assert fixed.snapshot()["mode"] == "dhcp" and system.reloads == 2


def test_a_trial_a_power_cut_interrupted_is_settled_at_boot(box):
    fixed, helper, system = box
    other = parse_setting({**GOOD, "address": "192.0.2.60/24"})
    fixed.request(FIXED, "status page")
    helper.run()
    requested = fixed.request(other, "status page")
    # The helper wrote the new file and its state, then the power went.
    state = State.load(helper.state_path)
    state.previous, state.setting, state.trial = state.setting, other, requested.request_id
    state.save(helper.state_path)
    (helper.state_dir / NETWORK_FILE).write_text(network_file(other))
    system.works_for = lambda s: None if s == FIXED else "192.0.2.60/24 is not up"
    helper.run()  # at boot
    assert (helper.state_dir / NETWORK_FILE).read_text() == network_file(FIXED)
    outcome = fixed.outcome(requested.request_id)
    assert not outcome.ok and "is not up" in outcome.message


def test_the_helper_trusts_nothing_the_service_wrote(box, tmp_path):
    fixed, helper, system = box
    fixed.request_path.parent.mkdir(parents=True)
    bad = {"id": "x1", "setting": {**GOOD, "address": "127.0.0.1/8"}, "source": "?"}
    fixed.request_path.write_text(json.dumps(bad))
    helper.run()
    assert system.reloads == 0 and not (helper.state_dir / NETWORK_FILE).exists()
    result = State.load(helper.state_path).result
    assert not result["ok"] and result["message"].startswith("refused: address: 127.0.0.1")
    # A link in place of the request (to a file only root may read) is not followed.
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"id": "x2", "setting": GOOD}))
    fixed.request_path.unlink()
    os.symlink(secret, fixed.request_path)
    helper.run()
    assert system.reloads == 0 and State.load(helper.state_path).handled == "x1"
    fixed.request_path.unlink()
    fixed.request_path.write_text("x" * 20000)  # too big: ignored
    helper.run()
    assert system.reloads == 0


def test_the_state_files_are_replaced_whole(box):
    fixed, helper, _ = box
    fixed.request(FIXED, "status page")
    helper.run()
    names = sorted(p.name for p in helper.state_dir.iterdir())
    assert names == sorted([NETWORK_FILE, STATE_FILE])  # no temporary file left behind
    assert json.loads((helper.state_dir / STATE_FILE).read_text())["format"] == 1


# ---- the service's side ------------------------------------------------------------------------


def test_outside_the_image_a_request_is_kept_and_says_it_was_not_applied(tmp_path):
    fixed = FixedAddress(tmp_path / "data", tmp_path / "none", tmp_path / "no-helper.py")
    requested = fixed.request(FIXED, "status page")
    assert requested.ok and "not applied: this machine is not a Connect Box image" in (
        requested.message
    )
    shown = fixed.snapshot()
    assert shown["managed"] is False and shown["mode"] == "static" and shown["result"] is None
    assert fixed.outcome(requested.request_id).ok


def test_configured_values_apply_when_they_change_so_the_latest_change_wins(tmp_path):
    fixed = FixedAddress(tmp_path / "data", tmp_path / "none", tmp_path / "no-helper.py")
    other = parse_setting({**GOOD, "address": "192.0.2.60/24"})
    assert fixed.configured("file", FIXED) is not None  # first start: the file's address
    assert fixed.configured("file", FIXED) is None  # every later start: not again
    fixed.request(DHCP, "status page")  # the technician
    assert fixed.configured("file", FIXED) is None  # a restart does not undo the technician
    assert fixed.configured("provider", other) is not None
    assert fixed.snapshot()["address"] == "192.0.2.60/24"
    assert fixed.configured("provider", other) is None
    assert fixed.configured("file", DHCP) is not None  # the file changed: it applies again
    assert fixed.snapshot()["mode"] == "dhcp"


def test_the_box_takes_the_providers_setting_and_shows_it(make_box, reference_host):
    box = make_box(reference_host.url)
    box.management.apply_config({"network": {"ipv4": GOOD}})
    setting = box.status()["network"]["setting"]
    assert setting["mode"] == "static" and setting["source"] == "provider"
    raw = json.loads(Path(box.fixed_address.request_path).read_text())
    assert raw["seen"] == {"provider": GOOD}


def test_the_helper_runs_standalone_as_the_image_installs_it(tmp_path):
    """The image runs a copy of this file with the system's Python, outside any package."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "network_apply.py"
    shutil.copy(Path(__file__).resolve().parents[2] / "app" / "network" / "static.py", copy)
    done = subprocess.run(
        [sys.executable, "-I", str(copy), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--state-dir" in done.stdout, done.stderr
