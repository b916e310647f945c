"""Neighbours labelled with vendors from an OUI registry file; likely POS flagged."""

from __future__ import annotations

import json
import os

import pytest

from app.network.neighbours import (
    OUI_PATH,
    load_oui,
    parse_neighbours,
    parse_oui,
    pos_candidates,
    pos_vendor,
    vendor_of,
)
from tests.network.netns import site_and_box

# The layout of Debian's /usr/share/ieee-data/oui.txt (IEEE MA-L registry), a few entries.
FAKE_OUI = """OUI/MA-L                                                    Organization
company_id                                                  Organization
                                                            Address

00-0B-4F   (hex)\t\tVerifone
000B4F     (base 16)\t\tVerifone
\t\t\t\t2099 Gateway Place, Suite 600
\t\t\t\tSan Jose  CA  95110
\t\t\t\tUS

00-60-6E   (hex)\t\tGILBARCO, INC.
00606E     (base 16)\t\tGILBARCO, INC.
\t\t\t\tPO BOX 22087
\t\t\t\tGREENSBORO  NC  27420
\t\t\t\tUS

A0-B3-CC   (hex)\t\tHewlett Packard
a0b3cc     (base 16)\t\tHewlett Packard
\t\t\t\t11445 Compaq Center Drive
\t\t\t\tHouston    77070
\t\t\t\tUS

00-0B-86   (hex)\t\tAruba, a Hewlett Packard Enterprise Company
000B86     (base 16)\t\tAruba, a Hewlett Packard Enterprise Company
\t\t\t\t3333 Scott Blvd
\t\t\t\tSanta Clara  CA  95054
\t\t\t\tUS

A0-40-A0   (hex)\t\tNETGEAR
A040A0     (base 16)\t\tNETGEAR
\t\t\t\t350 East Plumeria Drive
\t\t\t\tSan Jose  CA  95134
\t\t\t\tUS
"""

NEIGH_JSON = json.dumps(
    [
        {"dst": "192.0.2.1", "dev": "eth0", "lladdr": "a0:40:a0:11:22:33", "state": ["REACHABLE"]},
        {"dst": "192.0.2.30", "dev": "eth0", "lladdr": "00:0B:4F:AA:BB:CC", "state": ["STALE"]},
        {"dst": "192.0.2.31", "dev": "eth0", "lladdr": "00:60:6e:01:02:03", "state": ["DELAY"]},
        {"dst": "192.0.2.40", "dev": "eth0", "lladdr": "a0:b3:cc:00:00:01", "state": ["STALE"]},
        {"dst": "192.0.2.41", "dev": "eth0", "lladdr": "00:0b:86:00:00:01", "state": ["STALE"]},
        {"dst": "192.0.2.50", "dev": "eth0", "lladdr": "da:a1:19:00:00:01", "state": ["STALE"]},
        {"dst": "192.0.2.60", "dev": "eth0", "lladdr": "3c:22:fb:00:00:01", "state": ["STALE"]},
        {"dst": "192.0.2.99", "dev": "eth0", "state": ["FAILED"]},
        {"dst": "192.0.2.98", "dev": "eth0", "lladdr": "00:0b:4f:00:00:09", "state": ["FAILED"]},
        {
            "dst": "fe80::1",
            "dev": "eth0",
            "lladdr": "a0:40:a0:11:22:33",
            "router": True,
            "state": ["STALE"],
        },
    ]  # fmt: skip
)


@pytest.fixture
def oui_file(tmp_path):
    path = tmp_path / "oui.txt"
    path.write_text(FAKE_OUI)
    return path


def test_parse_oui_reads_the_base16_lines():
    table = parse_oui(FAKE_OUI)
    assert table == {
        "000B4F": "Verifone",
        "00606E": "GILBARCO, INC.",
        "A0B3CC": "Hewlett Packard",
        "000B86": "Aruba, a Hewlett Packard Enterprise Company",
        "A040A0": "NETGEAR",
    }


@pytest.mark.parametrize(
    ("vendor", "label"),
    [
        ("GILBARCO, INC.", "Gilbarco"),
        ("Verifone Inc.", "Verifone"),
        ("NCR CORPORATION", "NCR"),
        ("CNCR-IT CO.,LTD,HangZhou P.R.CHINA", None),
        ("Dover Fueling Solutions", "Dover Fueling Solutions"),
        ("Dresser Wayne", "Wayne"),
        ("Hewlett-Packard Company", "HP"),
        ("HP Inc.", "HP"),
        ("Hewlett Packard Enterprise", None),
        ("Aruba, a Hewlett Packard Enterprise Company", None),
        ("Toshiba Global Commerce Solutions", "Toshiba Global Commerce"),
        ("NETGEAR", None),
        (None, None),
    ],
)
def test_pos_vendor_matching_is_case_insensitive(vendor, label):
    assert pos_vendor(vendor) == label


def test_vendor_of_mac_forms_and_random_addresses():
    table = parse_oui(FAKE_OUI)
    assert vendor_of("00:0B:4F:AA:BB:CC", table) == "Verifone"
    assert vendor_of("000b.4faa.bbcc", table) == "Verifone"
    assert vendor_of("da:a1:19:00:00:01", table) == "(locally administered address)"
    assert vendor_of("3c:22:fb:00:00:01", table) is None
    assert vendor_of("xx", table) is None


def test_candidates_are_labelled_and_likely_pos_first(oui_file):
    found = pos_candidates(oui_file, NEIGH_JSON)
    assert [(c["address"], c["pos_vendor"]) for c in found[:3]] == [
        ("192.0.2.30", "Verifone"),
        ("192.0.2.31", "Gilbarco"),
        ("192.0.2.40", "HP"),
    ]
    assert all(c["likely_pos"] for c in found[:3])
    assert not any(c["likely_pos"] for c in found[3:])
    by_address = {c["address"]: c for c in found}
    assert by_address["192.0.2.30"] == {
        "address": "192.0.2.30",
        "mac": "00:0b:4f:aa:bb:cc",
        "state": "STALE",
        "interface": "eth0",
        "vendor": "Verifone",
        "pos_vendor": "Verifone",
        "likely_pos": True,
    }
    assert by_address["192.0.2.1"]["vendor"] == "NETGEAR"
    assert by_address["192.0.2.41"]["vendor"].startswith("Aruba")
    assert by_address["192.0.2.60"]["vendor"] is None
    assert "192.0.2.99" not in by_address and "192.0.2.98" not in by_address  # failed entries
    assert "fe80::1" in by_address


def test_missing_registry_leaves_vendors_unknown(tmp_path):
    found = pos_candidates(tmp_path / "missing.txt", NEIGH_JSON)
    assert len(found) == len(parse_neighbours(NEIGH_JSON))
    assert not any(c["likely_pos"] for c in found)


def test_only_the_wanted_ouis_are_kept_and_a_changed_registry_is_read_again(oui_file):
    assert load_oui(oui_file, {"000001"}) == {}
    oui_file.write_text(FAKE_OUI + "\n00-00-01   (hex)\t\tXEROX\n000001     (base 16)\t\tXEROX\n")
    os.utime(oui_file, (1, 1))
    assert load_oui(oui_file, {"000001"}) == {"000001": "XEROX"}
    assert load_oui(oui_file, {"000001", "FFFFFF"}) == {"000001": "XEROX"}


def test_debian_registry_when_installed():
    if not OUI_PATH.exists():
        pytest.skip(f"{OUI_PATH} not installed (Debian package ieee-data)")
    table = load_oui(OUI_PATH)
    assert len(table) > 10000
    assert pos_vendor(table["000B4F"]) == "Verifone"


def test_neighbour_table_inside_a_namespace(oui_file):
    """A 'POS' with a Verifone MAC talks to the box; the box lists it without scanning."""
    with site_and_box() as net:
        net.site.ip("link", "set", net.site_if, "address", "00:0b:4f:12:34:56")
        # the POS opens a connection to the box: the box learns its MAC from the traffic
        done = net.site.run(["ping", "-c1", "-W1", "192.0.2.10"])
        assert done.returncode == 0, done.stderr
        code = (
            "import json, sys\n"
            "from app.network.neighbours import pos_candidates\n"
            "print(json.dumps(pos_candidates(sys.argv[1])))\n"
        )
        listed = net.box.python(code, str(oui_file))
        assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    pos = next(c for c in found if c["address"] == "192.0.2.1")
    assert pos["mac"] == "00:0b:4f:12:34:56"
    assert pos["interface"] == net.box_if
    assert pos["vendor"] == "Verifone" and pos["likely_pos"]
