"""`connectbox network`: show, static, dhcp; outside the image nothing is applied and it says so."""

from __future__ import annotations

import json

from app.cli import main


def _config(tmp_path) -> str:
    path = tmp_path / "connectbox.toml"
    path.write_text(
        f'[host]\nurl = "https://h.example.com"\n[storage]\ndata_dir = "{tmp_path}/d"\n'
    )
    return str(path)


def test_static_then_dhcp_then_show(tmp_path, capsys):
    config = _config(tmp_path)
    argv = ["network", "--config", config, "static", "192.0.2.50/24", "--gateway", "192.0.2.1"]
    assert main([*argv, "--dns", "192.0.2.1,203.0.113.9", "--dns", "203.0.113.1"]) == 0
    out = capsys.readouterr().out
    assert "Fixed address 192.0.2.50/24, gateway 192.0.2.1, DNS 192.0.2.1, 203.0.113.9" in out
    assert "not applied: this machine is not a Connect Box image" in out
    request = json.loads((tmp_path / "d" / "network-request.json").read_text())
    assert request["source"] == "connectbox network"
    assert request["setting"]["dns"] == ["192.0.2.1", "203.0.113.9", "203.0.113.1"]
    assert main(["network", "--config", config, "show"]) == 0
    out = capsys.readouterr().out
    assert "Setting:     fixed 192.0.2.50/24, gateway 192.0.2.1" in out
    assert "Applied:     no" in out and "Now:" in out
    assert main(["network", "--config", config, "dhcp"]) == 0
    assert "DHCP saved, not applied" in capsys.readouterr().out


def test_a_bad_address_changes_nothing(tmp_path, capsys):
    config = _config(tmp_path)
    argv = ["network", "--config", config, "static", "192.0.2.50/24", "--gateway", "198.51.100.7"]
    assert main([*argv, "--dns", "203.0.113.1"]) == 2
    assert "nothing changed: gateway: 198.51.100.7 is not an address" in capsys.readouterr().err
    assert not (tmp_path / "d" / "network-request.json").exists()
