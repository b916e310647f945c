"""Nothing the technician can see shows a full loyalty ID, the device token or the site PIN.

Real sales (a phone number keyed in, a QR-code loyalty ID scanned) go through a real box, on the
normal path and on the host-failure path (which logs the IDs, masked); then the page, the live
part, /api/status, /metrics and every file of the diagnostics bundle are searched.
"""

from __future__ import annotations

import io
import re
import time
import zipfile

import pytest
import requests

from provisioning.redaction import REDACTED
from simulators import pos as sim
from tests.status.conftest import PHONE, PIN, sale

QR_ID = "QRLOYALTY7F3A9C2E1B55"  # a loyalty app's QR code, as the POS scanner reads it
TOKEN = "demo-token"


def forbidden(text: str) -> list[str]:
    found = [s for s in (PHONE, PHONE[:6], QR_ID, QR_ID[:-4], TOKEN, PIN) if s in text]
    return found


def everything_shown(site) -> dict[str, str]:
    """Every page, API answer and bundle file, by name."""
    session = requests.Session()
    shown = {}
    for base in (site.url, f"http://127.0.0.1:{site.box.status_port}"):  # test app, box's own
        for path in ("/", "/live", "/api/status", "/metrics", "/healthz"):
            reply = session.get(base + path, timeout=5)
            assert reply.status_code == 200, (base, path)
            shown[base + path] = reply.text
    page = session.get(site.url + "/", timeout=5).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    reply = session.post(
        site.url + "/actions/diagnostics", data={"csrf": csrf, "pin": PIN}, timeout=10
    )
    assert reply.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    for name in archive.namelist():
        shown[name] = archive.read(name).decode()
    return shown


@pytest.fixture
def sold(status_site, host, caplog):
    caplog.set_level("DEBUG")  # every log line reaches the diagnostics bundle's buffer
    site = status_site()
    with sim.PosClient("127.0.0.1", site.box.pos_server.port) as pos:
        sale(site.box, PHONE, pos=pos)
        sale(site.box, QR_ID, pos=pos, entry="scan")
        # The failure path logs the loyalty IDs (masked) and keeps the events in the outbox.
        requests.post(host.url + "/_sim/fault", json={"mode": "error500"}, timeout=5)
        sale(site.box, PHONE, pos=pos)
        sale(site.box, QR_ID, pos=pos, entry="scan")
    assert [r["loyalty_id"]["value"] for r in host.store.rewards_requests()] == [PHONE, QR_ID] * 2
    return site


def test_no_full_id_token_or_pin_anywhere(sold):
    shown = everything_shown(sold)
    leaks = {name: forbidden(text) for name, text in shown.items() if forbidden(text)}
    assert leaks == {}
    logs = next(text for name, text in shown.items() if name.endswith("/log.txt"))
    assert "******0123" in logs and "******1B55" in logs  # the sales are there, masked
    assert f'"token": "{REDACTED}"' in next(
        t for n, t in shown.items() if n.endswith("config.json")
    )


def test_ids_and_secrets_from_sections_still_to_come_are_masked_anyway(sold):
    """A later section that forgets to mask still shows nothing it must not."""
    sold.extra.update(
        recent_transactions=[
            {"at": time.time(), "register_id": "1", "loyalty_id": PHONE, "origin": "host"},
            {"at": time.time(), "register_id": "2", "masked_id": QR_ID, "origin": "offline"},
        ],
        readers=[
            {
                "name": "msr",
                "register_id": "1",
                "state": "connected",
                "last_verdict": {"result": "id", "loyalty_id": QR_ID},
            }
        ],
        enrollment={"state": "enrolled", "token": TOKEN, "pin": PIN},
    )
    shown = everything_shown(sold)
    leaks = {name: forbidden(text) for name, text in shown.items() if forbidden(text)}
    assert leaks == {}
    page = shown[sold.url + "/"]
    assert "******0123" in page and "******1B55" in page
