"""Safe mode (app/safe_mode.py): when the service cannot start, the page, the heartbeat and the
provider's commands still work, with the last configuration the service started with if the
file itself is what broke."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.error
import urllib.request

from app.config import load_config
from app.safe_mode import GOOD_CONFIG, SafeMode, remember_config, safe_config
from simulators.demo import demo_config
from tests.ports import free_port
from tests.waiting import wait_for

JOURNAL = "2026-12-03T18:00:00 connectbox[1]: ERROR cannot open the journal: disk I/O error\n"


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # not listening yet
        return 0, b""


def test_safe_mode_keeps_the_page_the_heartbeat_and_the_commands(tmp_path, reference_host):
    port = free_port()
    config = demo_config(reference_host.url, 0, port, tmp_path / "data")
    (tmp_path / "data").mkdir()
    mode = SafeMode(config, journal=lambda lines, own: JOURNAL, retry_s=3600)
    thread = threading.Thread(target=mode.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: _get(port, "/healthz")[0] == 503)  # nothing serves the POS
        code, body = _get(port, "/api/status")
        status = json.loads(body)
        assert code == 200 and status["safe_mode"] is True
        assert "disk I/O error" in status["reason"]
        assert b"Safe mode" in _get(port, "/")[1]

        device = config.host.device_id
        logs = reference_host.store.queue_command(device, "upload_logs", {})
        restart = reference_host.store.queue_command(device, "restart", {})
        os_args = {
            "version": "2027.2",
            "url": "https://host.example/os-2027.2.tar",
            "size": 1024,
            "sha256": "ab" * 32,
            "signature": "c2ln",
        }
        update_os = reference_host.store.queue_command(device, "update_os", os_args)
        mode.agent.heartbeat_now()
        results = {c["command_id"]: c["result"] for c in reference_host.store.commands(device)}
        assert results[logs]["ok"] is True
        assert not results[restart]["ok"]  # no update unit here to start the service with
        # Safe mode takes OS updates too (here outside the image: no slot to write, refused).
        assert not results[update_os]["ok"]
        assert "does not say which OS slot" in results[update_os]["detail"]
        assert status["os_update"] is None
        [upload] = reference_host.store.logs(device)
        assert "disk I/O error" in gzip.decompress(upload["content"]).decode()
        beat = reference_host.store.heartbeats(device)[-1]
        assert beat["status"] == "degraded" and beat["components"]["safe_mode"] is True
    finally:
        mode.stopping.set()
        thread.join(15)


def test_a_configuration_that_broke_falls_back_to_the_last_one_that_started(tmp_path):
    path = tmp_path / "connectbox.toml"
    state = tmp_path / "state"
    path.write_text(f'[host]\nurl = "https://host.example"\n[storage]\ndata_dir = "{state}"\n')
    state.mkdir()  # the service made it before it got going
    remember_config(load_config(path))
    assert (state / GOOD_CONFIG).stat().st_mode & 0o077 == 0
    path.write_text("not [valid\n")
    config, problem = safe_config(str(path), state)
    assert config.host.url == "https://host.example"
    assert problem and "not valid TOML" in problem
    config, problem = safe_config(str(path), tmp_path / "nothing")
    assert problem and config.host.url == ""  # the built-in defaults: still the page
