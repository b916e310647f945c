"""Zero-touch enrollment against the real reference host on 127.0.0.1."""

from __future__ import annotations

import stat
import threading

import pytest

from provisioning.api import HostClient, HostError
from provisioning.cli import enroll_main
from provisioning.enrollment import ClaimRejected, Enroller
from provisioning.store import CREDENTIALS_FILE, CredentialStore
from simulators.host.runner import start_in_thread
from tests.ports import free_port
from tests.provisioning.conftest import SITE, record
from tests.waiting import wait_for


def test_fresh_box_enrolls_and_stores_0600_credentials(host, tmp_path):
    host.store.add_claim_code("ABCD-1234", SITE)
    store = CredentialStore(tmp_path / "data" / CREDENTIALS_FILE)
    enroller = Enroller(host.url, store, "SN-42", "ABCD-1234", timeout_s=5)
    assert enroller.snapshot()["claim_code"] == "ABCD-1234"  # on the status page until enrolled

    creds = enroller.enroll_once()

    assert creds.site_id == SITE and creds.device_id.startswith("D-")
    assert store.load() == creds
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    device = host.store.get_device(creds.device_id)
    assert device is not None and device.token == creds.token
    snap = enroller.snapshot()
    assert snap["state"] == "enrolled" and snap["claim_code"] is None
    assert snap["device_id"] == creds.device_id and snap["serial"] == "SN-42"
    # The token works, and enroll itself carried no Authorization header.
    HostClient(host.url, creds.token, creds.device_id, timeout_s=5).config()
    enroll_calls = [c for c in host.recorder.snapshot() if c.path == "/v1/enroll"]
    assert len(enroll_calls) == 1 and enroll_calls[0].authorization is None


def test_lost_answer_is_replayed_not_refused(host, tmp_path):
    """Power cut after the host enrolled the box but before the box stored the answer: the
    same serial and claim code (same Idempotency-Key) get the same device back."""
    host.store.add_claim_code("ABCD-1234", SITE)
    first = Enroller(host.url, CredentialStore(tmp_path / "a.json"), "SN-1", "ABCD-1234")
    again = Enroller(host.url, CredentialStore(tmp_path / "b.json"), "SN-1", "ABCD-1234")
    assert first.enroll_once() == again.enroll_once()
    other_box = Enroller(host.url, CredentialStore(tmp_path / "c.json"), "SN-2", "ABCD-1234")
    with pytest.raises(ClaimRejected):
        other_box.enroll_once()


def test_host_down_at_first_then_enrolls_without_any_token_call(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = CredentialStore(tmp_path / CREDENTIALS_FILE)
    enroller = Enroller(
        url, store, "SN-7", "LATE-0001", timeout_s=2, backoff_base_s=0.1, backoff_max_s=0.4
    )
    stop = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(creds=enroller.run(stop)))
    worker.start()
    try:
        seen: dict = {}

        def failed_three_times() -> bool:  # one snapshot: a 4th try may be under way meanwhile
            seen.update(enroller.snapshot())
            return seen["state"] == "host_unreachable" and seen["attempts"] >= 3

        assert wait_for(failed_three_times), seen
        snap = seen
        assert "cannot reach the host" in snap["last_error"]
        assert snap["next_try_at"] is not None and snap["claim_code"] == "LATE-0001"
        assert store.load() is None

        host = start_in_thread("127.0.0.1", port)
        try:
            recorder = record(host)
            host.store.add_claim_code("LATE-0001", SITE)
            worker.join(10)
            assert not worker.is_alive()
            creds = result["creds"]
            assert creds is not None and store.load() == creds
            assert enroller.state == "enrolled"
            # What a box does next: a token-bearing call, only now.
            HostClient(url, creds.token, creds.device_id).config()
            calls = recorder.snapshot()
            assert calls[0].path == "/v1/enroll" and calls[0].authorization is None
            enrolls = [c for c in calls if c.path == "/v1/enroll"]
            assert all(c.authorization is None for c in enrolls)
            first_token_call = next(i for i, c in enumerate(calls) if c.authorization)
            assert all(c.path == "/v1/enroll" for c in calls[:first_token_call])
            assert calls[first_token_call].authorization == f"Bearer {creds.token}"
        finally:
            host.stop()
    finally:
        stop.set()
        worker.join(5)


def test_wrong_claim_code_is_rejected_and_not_retried(host, tmp_path):
    store = CredentialStore(tmp_path / CREDENTIALS_FILE)
    enroller = Enroller(host.url, store, "SN-1", "NOPE-0000", backoff_base_s=0.05)
    assert enroller.run(threading.Event()) is None
    snap = enroller.snapshot()
    assert snap["state"] == "claim_rejected"
    assert snap["attempts"] == 1
    assert "refused claim code NOPE-0000" in snap["last_error"]
    assert "box label" in snap["last_error"]
    assert store.load() is None
    with pytest.raises(ClaimRejected) as caught:
        enroller.enroll_once()
    assert caught.value.status == 403


def test_unreachable_is_a_host_error(tmp_path):
    enroller = Enroller(
        f"http://127.0.0.1:{free_port()}", CredentialStore(tmp_path / "c.json"), "S", "C"
    )
    with pytest.raises(HostError) as caught:
        enroller.enroll_once()
    assert caught.value.retryable and not isinstance(caught.value, ClaimRejected)


def test_waits_for_a_claim_code(host, tmp_path):
    host.store.add_claim_code("TYPED-0001", SITE)
    enroller = Enroller(host.url, CredentialStore(tmp_path / "c.json"), "SN-1", None)
    stop = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(creds=enroller.run(stop)))
    worker.start()
    # The worker says it waits for a code (not just the initial state), and tried nothing.
    assert wait_for(lambda: "no claim code yet" in (enroller.snapshot()["last_error"] or ""))
    assert enroller.snapshot()["state"] == "waiting" and enroller.attempts == 0
    enroller.set_claim_code("TYPED-0001")  # typed on the status page
    worker.join(15)
    stop.set()
    assert result["creds"] is not None and enroller.state == "enrolled"


def test_backoff_is_exponential_capped_and_jittered(tmp_path):
    enroller = Enroller(
        "http://127.0.0.1:1",
        CredentialStore(tmp_path / "c.json"),
        "S",
        "C",
        backoff_base_s=1,
        backoff_max_s=300,
    )
    for failures, step in ((1, 1), (2, 2), (5, 16), (9, 256), (10, 300), (50, 300)):
        delays = {enroller.backoff(failures) for _ in range(20)}
        assert all(step * 0.5 <= d <= step for d in delays)
        assert len(delays) > 1


def test_plain_http_only_for_loopback(tmp_path):
    store = CredentialStore(tmp_path / "c.json")
    with pytest.raises(ValueError, match="https"):
        Enroller("http://host.example.com", store, "S", "C")
    Enroller("https://host.example.com", store, "S", "C")
    Enroller("http://localhost:8700", store, "S", "C")


def test_cli(host, tmp_path, capsys):
    host.store.add_claim_code("CLI-0001", SITE)
    data = tmp_path / "data"
    base = ["--url", host.url, "--data-dir", str(data), "--serial", "SN-CLI"]
    base += ["--claim-file", str(tmp_path / "no-claim-file")]

    assert enroll_main([*base, "--claim", "WRONG-0000"]) == 1
    assert "Enrollment refused" in capsys.readouterr().out

    assert enroll_main([*base, "--claim", "CLI-0001"]) == 0
    out = capsys.readouterr().out
    creds = CredentialStore(data / CREDENTIALS_FILE).load()
    assert creds is not None and f"device {creds.device_id} at site {SITE}" in out

    assert enroll_main([*base, "--claim", "CLI-0001"]) == 0
    assert "Already enrolled" in capsys.readouterr().out

    dead = ["--url", f"http://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d2")]
    assert enroll_main([*dead, "--claim", "X-1", "--serial", "S"]) == 1
    assert "cannot reach the host" in capsys.readouterr().out

    assert enroll_main([*dead, "--serial", "S", "--claim-file", str(tmp_path / "none")]) == 1
    assert "No claim code" in capsys.readouterr().out
