"""Technician actions: CSRF token, site PIN with lockout, and what each action does."""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from types import SimpleNamespace
from unittest import mock

import pytest

from app.network.reachability import HostCheck, LayerResult
from app.status import auth
from app.status.actions import BoxControls
from app.status.web import create_app
from provisioning.redaction import REDACTED
from tests.status.conftest import PIN, sale, wait_for


def _csrf(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _post(client, action, pin=None, csrf=True, addr="127.0.0.1", follow=True):
    form = {}
    if csrf:
        form["csrf"] = _csrf(client) if csrf is True else csrf
    if pin is not None:
        form["pin"] = pin
    return client.post(
        f"/actions/{action}",
        data=form,
        environ_base={"REMOTE_ADDR": addr},
        follow_redirects=follow,
    )


def _flash(reply) -> str:
    found = re.findall(r'class="flash flash-(\w+)" role="status">([^<]*)<', reply.get_data(True))
    assert len(found) == 1, found
    category, message = found[0]
    return f"{category}: {html.unescape(message)}"


class FakeStatus:
    """A box that serves the POS and reports little else."""

    def status(self):
        return {"pos": {"running": True, "connections": [], "listen": "127.0.0.1:9000"}}

    def serving(self):
        return True


def fake_controls(pin=PIN, **options) -> BoxControls:
    """Just enough for the guards: the PIN and a restart to watch; no network, no host."""
    config = SimpleNamespace(
        status=SimpleNamespace(pin=pin),
        host=SimpleNamespace(token="demo-token"),
        source="/srv/site/connectbox.toml",
    )
    options.setdefault("restart", mock.Mock())
    return BoxControls(config=config, link=None, relay=None, pos_port=0, **options)


@pytest.fixture
def fake_client():
    box = fake_controls()
    app = create_app(FakeStatus(), box)
    return box, app, app.test_client()


def test_missing_or_wrong_csrf_token_is_400(fake_client):
    box, _, client = fake_client
    refused = _post(client, "restart", PIN, csrf=False)
    assert refused.status_code == 400 and "Reload the status page" in refused.get_data(True)
    assert _post(client, "restart", PIN, csrf="forged-token").status_code == 400
    fresh = create_app(
        FakeStatus(), box
    ).test_client()  # a token from another session does not count
    assert _post(fresh, "restart", PIN, csrf=_csrf(client)).status_code == 400
    box.restart.assert_not_called()
    assert _post(client, "no-such-action", PIN).status_code == 404


def test_the_right_pin_runs_the_action_after_a_redirect(fake_client):
    box, _, client = fake_client
    reply = _post(client, "restart", PIN, follow=False)
    assert reply.status_code == 303 and reply.headers["Location"].endswith("/#actions")
    box.restart.assert_called_once_with()
    page = client.get("/")
    assert _flash(page).startswith("ok: Restart requested")
    assert "flash" not in client.get("/").get_data(True)  # shown once


def test_without_pin_or_with_a_wrong_one_nothing_happens(fake_client):
    box, _, client = fake_client
    assert (
        _flash(_post(client, "restart"))
        == "error: Enter the site PIN to use the technician actions."
    )
    assert _flash(_post(client, "restart", "0000")) == "error: Wrong PIN."
    box.restart.assert_not_called()


def test_five_wrong_pins_lock_that_client_for_five_minutes(fake_client):
    box, app, client = fake_client
    clock = SimpleNamespace(now=1000.0)
    gate = app.extensions["connectbox"].gate
    gate.clock = lambda: clock.now
    for _ in range(4):
        assert _flash(_post(client, "restart", "1111")) == "error: Wrong PIN."
    assert "locked for 5 minutes" in _flash(_post(client, "restart", "1111"))
    assert "locked" in _flash(_post(client, "restart", PIN))  # even the right PIN
    assert "locked for about 5 minute" in client.get("/").get_data(True)
    # another address is not locked out by this one
    assert _flash(_post(client, "restart", PIN, addr="127.0.0.2")).startswith("ok:")
    clock.now += 299
    assert "locked" in _flash(_post(client, "restart", PIN))
    clock.now += 2
    assert _flash(_post(client, "restart", PIN)).startswith("ok:")
    assert box.restart.call_count == 2


def test_wrong_pins_from_many_addresses_lock_everyone():
    clock = SimpleNamespace(now=0.0)
    gate = auth.PinGate(PIN, clock=lambda: clock.now)
    for n in range(auth.GLOBAL_MAX_FAILURES):
        assert not gate.check(f"client-{n // 2}", "wrong").ok  # two tries each: none locked
    assert "locked" in gate.check("someone-else", PIN).message
    clock.now += auth.LOCKOUT_S + 1
    assert gate.check("someone-else", PIN).ok


def test_failures_older_than_five_minutes_do_not_count():
    clock = SimpleNamespace(now=0.0)
    gate = auth.PinGate(PIN, clock=lambda: clock.now)
    for _ in range(auth.MAX_FAILURES - 1):
        gate.check("a", "wrong")
    clock.now += auth.LOCKOUT_S + 1
    assert gate.check("a", "wrong").message == "Wrong PIN."  # the window started over
    assert gate.check("a", PIN).ok


def test_the_pin_is_compared_in_constant_time(fake_client):
    _, _, client = fake_client
    real = auth.hmac.compare_digest
    with mock.patch.object(auth.hmac, "compare_digest", side_effect=real) as spy:
        _post(client, "restart", "1234")
        _post(client, "restart", PIN)
    pin_calls = [c.args for c in spy.call_args_list if PIN.encode() in c.args]
    assert pin_calls == [(b"1234", PIN.encode()), (PIN.encode(), PIN.encode())]


def test_no_pin_configured_disables_the_actions():
    box = fake_controls(pin=None)
    client = create_app(FakeStatus(), box).test_client()
    page = client.get("/").get_data(True)
    assert "Technician actions are disabled: no site PIN is configured" in page
    # the file the box really read, in plain words (no markup)
    assert "Set pin in the [status] section of /srv/site/connectbox.toml" in page
    assert "`" not in page
    assert "<fieldset disabled>" in page
    assert "disabled" in _flash(_post(client, "restart", "anything"))
    box.restart.assert_not_called()


def test_a_numeric_pin_in_the_configuration_works():
    box = fake_controls(pin=4821)  # `pin = 4821` in TOML is a number
    client = create_app(FakeStatus(), box).test_client()
    assert _flash(_post(client, "restart", "4821")).startswith("ok:")


def test_restart_without_support_in_the_box():
    client = create_app(FakeStatus(), fake_controls(restart=None)).test_client()
    assert "cannot restart itself" in _flash(_post(client, "restart", PIN))


# ---- the actions on a real box -------------------------------------------------------------


def test_test_host_runs_the_layered_check_and_tells_the_box_the_host_answered(status_site):
    site = status_site()
    before = site.box.link.snapshot()["ok"]
    message = _flash(_post(site.app.test_client(), "test-host", PIN))
    # the reference host is on loopback, by IP, plain HTTP: link, gateway, DNS, TLS do not apply
    assert message == "ok: Host connection check passed (tcp, http, api)."
    assert site.box.link.online is True  # the check's own call reached the link, too
    assert site.box.link.snapshot()["ok"] > before
    assert site.box.status()["network"]["check"]["ok"] is True


def test_test_host_names_the_failing_layer(status_site, host):
    site = status_site()
    host.stop()
    message = _flash(_post(site.app.test_client(), "test-host", PIN))
    assert message.startswith("error: Host connection check: the tcp check fails: ")
    assert "refused" in message


def test_test_host_without_network_checks_calls_the_host_through_the_relay(status_site, host):
    site = status_site()
    client = site.make_app(network=None).test_client()
    assert re.fullmatch(
        r"ok: The central host answered in \d+ ms\.", _flash(_post(client, "test-host", PIN))
    )
    assert site.box.link.online is True
    host.stop()
    message = _flash(_post(client, "test-host", PIN))
    assert message.startswith("error: The central host did not answer properly: cannot reach")
    assert site.box.link.known_down


def test_test_host_reports_the_layer_and_its_advice(status_site):
    site = status_site()
    network = site.box.network
    failed = HostCheck(
        ok=False,
        failed_layer="dns",
        layers=[
            LayerResult("link", True, ""),
            LayerResult("dns", False, "no DNS server answers", "Check the router's DNS."),
        ],
        checked_at=0.0,
    )
    with mock.patch.object(network, "check_now", return_value=failed):
        message = _flash(_post(site.app.test_client(), "test-host", PIN))
    assert message == (
        "error: Host connection check: the dns check fails: no DNS server answers. "
        "Check the router's DNS."
    )


def test_network_refresh_reruns_discovery(status_site):
    site = status_site()
    with mock.patch.object(site.box.network, "refresh", wraps=site.box.network.refresh) as spy:
        message = _flash(_post(site.app.test_client(), "network-refresh", PIN))
    assert message.startswith("ok: Network discovery ran again (")
    spy.assert_called_once_with()


def test_network_refresh_without_network_discovery(fake_client):
    _, _, client = fake_client
    message = _flash(_post(client, "network-refresh", PIN))
    assert message == "error: Network discovery is not available in this version of the box."


def test_test_sale_goes_through_the_pos_port_as_register_test(status_site, host):
    site = status_site()
    message = _flash(_post(site.app.test_client(), "test-sale", PIN))
    assert message.startswith("ok: Test sale on register TEST answered: GetRewards in")
    assert message.endswith("central host online.")
    [sent] = host.store.rewards_requests()
    assert sent["pos"]["register_id"] == "TEST" and sent["loyalty_id"] is None
    assert wait_for(lambda: len(host.store.events()) == 1)
    assert site.box.service.counters.snapshot()["request.FinalizeRewards"] == 1


def test_a_failing_action_is_reported_not_raised(status_site):
    site = status_site()
    failure = RuntimeError("ip: command not found")
    with mock.patch.object(site.box.network, "refresh", side_effect=failure):
        message = _flash(_post(site.app.test_client(), "network-refresh", PIN))
    assert message == "error: The action failed: RuntimeError: ip: command not found"


def test_diagnostics_bundle_has_config_without_secrets_status_and_logs(status_site, caplog):
    caplog.set_level("INFO")
    site = status_site()
    sale(site.box)
    reply = _post(site.app.test_client(), "diagnostics", PIN, follow=False)
    assert reply.status_code == 200 and reply.mimetype == "application/zip"
    assert (
        'attachment; filename="connectbox-diagnostics-D-DEMO-'
        in reply.headers["Content-Disposition"]
    )
    archive = zipfile.ZipFile(io.BytesIO(reply.data))
    files = {name.split("/", 1)[1]: archive.read(name).decode() for name in archive.namelist()}
    assert set(files) == {"config.json", "status.json", "verdict.txt", "log.txt"}
    config = json.loads(files["config.json"])
    assert config["host"]["token"] == REDACTED and config["status"]["pin"] == REDACTED
    assert config["host"]["device_id"] == "D-DEMO"
    status = json.loads(files["status.json"])
    assert status["counters"]["request.GetRewards"] == 1
    assert "technician action diagnostics" in files["log.txt"]
    assert "POS connected from" in files["log.txt"]
    assert files["verdict.txt"].splitlines()[0]
    for content in files.values():
        assert "demo-token" not in content and PIN not in content


# ---- the box's address -------------------------------------------------------------------------


def _post_address(client, action, **fields):
    form = {"csrf": _csrf(client), "pin": PIN, **fields}
    return client.post(f"/actions/{action}", data=form, follow_redirects=True)


def test_a_fixed_address_from_the_page_is_checked_then_requested(status_site):
    site = status_site()
    client = site.app.test_client()
    form = {"address": "192.168.1.50/24", "gateway": "192.168.1.1", "dns": "192.168.1.1, 9.9.9.9"}
    bad = _flash(_post_address(client, "network-static", **{**form, "gateway": "10.0.0.1"}))
    assert bad.startswith("error: Nothing changed: gateway: 10.0.0.1 is not an address in")
    assert site.box.status()["network"]["setting"]["mode"] == "dhcp"
    reply = _post_address(client, "network-static", **form)
    # This machine is no Connect Box image: kept, and said to be not applied.
    assert _flash(reply).startswith("ok: Fixed address 192.168.1.50/24, gateway 192.168.1.1, DNS")
    assert "not applied" in _flash(reply)
    setting = site.box.status()["network"]["setting"]
    assert (setting["mode"], setting["address"], setting["source"]) == (
        "static",
        "192.168.1.50/24",
        "status page",
    )
    page = client.get("/").get_data(True)
    assert "fixed 192.168.1.50/24, set by status page at" in page
    assert 'value="192.168.1.50/24"' in page and 'value="192.168.1.1, 9.9.9.9"' in page
    assert _flash(_post_address(client, "network-dhcp")).startswith("ok: DHCP saved")
    assert site.box.status()["network"]["setting"]["mode"] == "dhcp"


def test_the_address_actions_need_the_pin(status_site):
    site = status_site()
    client = site.app.test_client()
    form = {"csrf": _csrf(client), "address": "192.168.1.50/24", "gateway": "192.168.1.1"}
    reply = client.post("/actions/network-static", data={**form, "dns": "1.1.1.1"})
    assert reply.status_code == 303
    assert site.box.status()["network"]["setting"]["source"] is None  # nothing requested


def test_without_the_address_setting_the_buttons_are_off():
    client = create_app(FakeStatus(), fake_controls()).test_client()
    page = client.get("/").get_data(True)
    assert re.search(r'id="do-network-static"[^>]*disabled', page)
    assert "not available" in _flash(_post(client, "network-dhcp", PIN))
