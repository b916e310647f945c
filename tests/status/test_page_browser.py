"""The status page in real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

A real box, the reference host and a POS connected over TCP; the page as a technician's browser
shows it. Screenshots of each state go to tests/artifacts/; the all-online one is also the
README's picture (docs/images/status-page.png).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from simulators import pos as sim
from tests.status.conftest import PIN, sale, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
README_IMAGE = ROOT / "docs" / "images" / "status-page.png"
DESKTOP, PHONE_WIDTH = (1100, 900), 412
# A name for this machine that is not loopback to the page: the browser of a technician at the
# site (Chromium maps it to 127.0.0.1 itself; no DNS involved).
SITE_NAME = "connectbox.test"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    # scripts/setup --test installs them: missing means a broken set-up, not a reason to skip.
    raise RuntimeError("needs Debian's chromium and chromium-driver: run scripts/setup --test")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        f"--host-resolver-rules=MAP {SITE_NAME} 127.0.0.1",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager is never asked to download anything.
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(20)
    yield browser
    browser.quit()


def verdict_title(driver) -> str:
    return driver.find_element(By.ID, "verdict-title").text


def flash(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, ".flash").text


def emulate(driver, width: int, height: int = DESKTOP[1]) -> None:
    """Lay the page out for a screen `width` CSS pixels wide (a phone below 600)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def screenshot(driver, name: str, width: int = DESKTOP[0], full: bool = True) -> Path:
    """The page laid out `width` pixels wide (whole, or its first screen) as
    tests/artifacts/<name>."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    emulate(driver, width)
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        emulate(driver, width, height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def run_action(driver, button_id: str, pin: str | None) -> str:
    field = driver.find_element(By.ID, "pin")
    field.clear()
    if pin is not None:
        field.send_keys(pin)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    WebDriverWait(driver, 10).until(lambda d: _stale(old) and d.find_elements(By.ID, "verdict"))
    return flash(driver)


def _stale(element) -> bool:
    try:
        element.is_enabled()
        return False
    except Exception:
        return True


@pytest.fixture
def online_site(status_site):
    """A box with the host online and a POS connected (its connection kept open)."""
    site = status_site()
    pos = sim.PosClient("127.0.0.1", site.box.pos_server.port)
    sale(site.box, pos=pos)
    assert site.box.link.online
    yield site
    pos.close()


def test_all_systems_online(driver, online_site):
    site = online_site
    driver.get(site.url + "/")
    assert verdict_title(driver) == "All Systems Online"
    # the POS port listens on 127.0.0.1 only: that is the address a POS can use
    assert driver.find_element(By.ID, "setup-address").text == "127.0.0.1"
    assert driver.find_element(By.ID, "setup-port").text == str(site.box.pos_server.port)
    pos_card = driver.find_element(By.ID, "pos").text
    assert "1 POS connected" in pos_card and "passport" in pos_card
    assert "online" in driver.find_element(By.ID, "host").text
    assert driver.execute_script("return document.styleSheets[0].cssRules.length") > 10
    site.box.network.check_now()  # the layered check, worded for a person
    driver.get(site.url + "/")
    host_card = driver.find_element(By.ID, "host").text
    assert "the web server answered (HTTP 404)" in host_card and "NOT FOUND" not in host_card
    assert "the host knows this box and takes its token" in host_card
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert loaded and all(url.startswith(site.url + "/") for url in loaded), loaded
    desktop = screenshot(driver, "status-all-online.png")
    screenshot(driver, "status-all-online-phone.png", PHONE_WIDTH)
    screenshot(driver, "status-all-online-phone-first-screen.png", PHONE_WIDTH, full=False)
    if os.environ.get("CONNECTBOX_UPDATE_DOCS_IMAGES"):  # refresh the README's picture
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(desktop, README_IMAGE)


@pytest.mark.parametrize("width", [390, PHONE_WIDTH])
def test_the_page_fits_a_phone_screen(driver, online_site, width):
    driver.get(online_site.url + "/")
    emulate(driver, width)
    try:
        assert driver.execute_script("return window.innerWidth") == width
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, "the page scrolls sideways on a phone"
        # the verdict and the values for the POS are in view, not cut
        for element in ("verdict-title", "setup-address", "setup-port"):
            right = driver.execute_script(
                "return arguments[0].getBoundingClientRect().right",
                driver.find_element(By.ID, element),
            )
            assert 0 < right <= width, element
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    screenshot(driver, f"status-all-online-{width}px.png", width)


def test_the_hint_names_the_real_pos_port(driver, online_site):
    """The POS port on 127.0.0.1 and a port of its own: the values and the hint say that port.
    On the box itself the hint is a note; from the site's network, a warning."""
    port = online_site.box.pos_server.port
    assert port != 9000
    wanted = f'set [pos] listen = "0.0.0.0:{port}"'
    driver.get(online_site.url + "/")
    assert verdict_title(driver) == "All Systems Online"
    assert driver.find_element(By.ID, "setup-address").text == "127.0.0.1"
    assert driver.find_element(By.ID, "setup-port").text == str(port)
    hint = driver.find_element(By.ID, "setup-hint")
    assert wanted in hint.text and hint.get_attribute("class") == "note"
    assert not driver.find_elements(By.CSS_SELECTOR, "#setup .notice")
    screenshot(driver, "status-pos-port-note.png")
    driver.get(online_site.url.replace("127.0.0.1", SITE_NAME) + "/")
    hint = driver.find_element(By.ID, "setup-hint")
    assert wanted in hint.text and hint.get_attribute("class") == "notice"
    screenshot(driver, "status-pos-port-warning.png")


def test_host_down_names_the_host_problem(driver, status_site, host):
    site = status_site()
    pos = sim.PosClient("127.0.0.1", site.box.pos_server.port)
    with pos:
        sale(site.box, pos=pos)
        host.stop()
        sale(site.box, pos=pos)  # the box notices: the host refuses connections now
        assert wait_for(lambda: site.box.link.known_down)
        driver.get(site.url + "/")
        # the relay noticed; the network's layered check names the layer when it has run
        assert verdict_title(driver).startswith("The central host cannot be reached")
        verdict = driver.find_element(By.ID, "verdict").text
        assert "refused" in verdict and "What to do:" in verdict
        # the host is on this machine: advice about it, not about a site's internet
        assert "on this machine" in verdict and "internet" not in verdict
        host_card = driver.find_element(By.ID, "host").text
        assert "unreachable" in host_card and "connection refused" in host_card
        site.box.network.check_now()
        driver.get(site.url + "/")
        assert verdict_title(driver) == "The central host cannot be reached: the tcp check fails"
        assert "does not run on this machine's port" in driver.find_element(By.ID, "verdict").text
        assert "FAILED" in driver.find_element(By.ID, "host").text
        api = requests.get(site.url + "/api/status", timeout=5).json()["verdict"]
        assert api["headline"] == verdict_title(driver) and api["level"] == "problem"
        assert f"What to do: {api['action']}" in driver.find_element(By.ID, "verdict").text
        screenshot(driver, "status-host-down.png")


def test_actions_refuse_without_the_pin_and_with_a_wrong_one(driver, online_site):
    site = online_site
    driver.get(site.url + "/")
    assert run_action(driver, "do-test-host", None) == (
        "Enter the site PIN to use the technician actions."
    )
    assert run_action(driver, "do-test-host", "0000") == "Wrong PIN."
    calls = site.box.link.snapshot()["ok"]
    message = run_action(driver, "do-test-host", PIN)
    assert message == "Host connection check passed (tcp, http, api)."
    assert site.box.link.snapshot()["ok"] == calls + 1
    assert driver.current_url.endswith("/#actions")
    screenshot(driver, "status-action-done.png")
    assert run_action(driver, "do-test-sale", PIN).startswith("Test sale on register TEST")


def test_actions_are_disabled_without_a_pin(driver, status_site):
    site = status_site(pin=None)
    driver.get(site.url + "/")
    notice = driver.find_element(By.ID, "actions-disabled").text
    assert "no site PIN is configured" in notice
    assert not driver.find_element(By.ID, "do-test-host").is_enabled()


def test_a_reader_gone_shows_and_the_page_refreshes_itself(driver, online_site):
    site = online_site
    site.app.config["STATUS_REFRESH_S"] = 1
    driver.get(site.url + "/")
    assert verdict_title(driver) == "All Systems Online"
    page = driver.find_element(By.TAG_NAME, "html")
    site.extra["readers"] = [
        {
            "name": "MagTek USB Swipe",
            "devnode": "/dev/connectbox/msr-1",
            "kind": "keyboard",
            "register_id": "2",
            "state": "gone",
            "detail": "unplugged",
            "last_verdict": "loyalty ID ******7894 (magstripe, track 2)",
            "last_read_at": None,
            "reads": 3,
        }
    ]
    expected = "Card reader MagTek USB Swipe (register 2) is not connected"
    WebDriverWait(driver, 10).until(lambda d: verdict_title(d) == expected)
    assert not _stale(page), "the page updated itself without a reload"
    readers = driver.find_element(By.ID, "readers").text
    assert "gone (unplugged)" in readers and "******7894" in readers
    screenshot(driver, "status-reader-gone.png")


def test_sections_still_to_come_are_shown_when_the_box_reports_them(driver, online_site):
    site = online_site
    now = time.time()
    site.extra.update(
        # listening on every address: the values are the box's address on the site network
        pos={**site.box.status()["pos"], "listen": f"0.0.0.0:{site.box.pos_server.port}"},
        network={
            "facts": {
                "hostname": "connectbox-d-demo",
                "primary": {
                    "interface": "eth0",
                    "address": "192.0.2.10",
                    "origin": "dhcp",
                    "gateway": "192.0.2.1",
                },
                "dns": {"servers": ["192.0.2.53"]},
            },
            "check": [
                {"layer": "link", "ok": True, "detail": "eth0 up, 1000 Mb/s"},
                {"layer": "address", "ok": True, "detail": "192.0.2.10/24 (dhcp)"},
                {"layer": "gateway", "ok": True, "detail": "192.0.2.1 answers"},
                {"layer": "dns", "ok": True, "detail": "host name resolves"},
                {"layer": "https", "ok": True, "detail": "TLS ok, 38 ms"},
            ],
            "mdns": "connectbox-d-demo.local",
        },
        enrollment={"state": "enrolled", "enrolled_at": "2026-11-01T09:00:00Z"},
        recent_transactions=[
            {
                "at": now - 40,
                "register_id": "1",
                "loyalty_id": "******0123",
                "origin": "host",
                "discount": "1.00",
            },
            {
                "at": now - 300,
                "register_id": "2",
                "loyalty_id": "******1B55",
                "origin": "offline",
                "discount": "0.00",
            },
        ],
    )
    driver.get(site.url + "/")
    assert verdict_title(driver) == "All Systems Online"
    assert driver.find_element(By.ID, "setup-address").text == "192.0.2.10"
    assert not driver.find_elements(By.ID, "setup-hint")
    host_card = driver.find_element(By.ID, "host").text
    assert "https ok TLS ok, 38 ms" in host_card
    assert "192.0.2.1" in driver.find_element(By.ID, "network").text
    assert "enrolled" in driver.find_element(By.ID, "policy").text
    transactions = driver.find_element(By.ID, "transactions").text
    assert "******0123" in transactions and "offline" in transactions and "$1.00" in transactions
    screenshot(driver, "status-all-sections.png")


def test_enrollment_state_is_shown(driver, online_site):
    driver.get(online_site.url + "/")
    assert "Enrollment: state\nenrolled" in driver.find_element(By.ID, "policy").text
    with pytest.raises(NoSuchElementException):
        driver.find_element(By.CSS_SELECTOR, ".flash")


def test_the_page_says_what_each_pos_was_last_told(driver, online_site):
    """The FAQ's "Is Loyalty Host Online on the Passport?": answered from the box's last
    GetLoyaltyOnlineStatus answer to each POS."""
    site = online_site
    driver.get(site.url + "/")
    pos_text = driver.find_element(By.ID, "pos").text
    assert "No POS has asked whether the loyalty host is online yet." in pos_text
    counter = sim.SequenceCounter()
    with sim.PosClient("127.0.0.1", site.box.pos_server.port) as pos:
        assert pos.send(sim.online_status(counter.next())).prompt_for_loyalty is True
    driver.get(site.url + "/")
    pos_text = driver.find_element(By.ID, "pos").text
    assert "What each POS was last told (Is Loyalty Host Online?)" in pos_text
    assert "127.0.0.1 Gilbarco 12.23.03.02" in pos_text
    assert "online: prompt for loyalty" in pos_text
    screenshot(driver, "status-pos-told.png")
