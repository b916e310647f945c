"""PolicyManager against the real reference host (and a tiny stand-in host for odd answers),
all on 127.0.0.1: install, 304, restart from disk, every refusal, clock checks, the refresher."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.offline.policy import MAX_CLOCK_SKEW_S, PolicyManager
from app.programs.policy import canonical_json, sign_policy, verify_policy
from provisioning.api import HostClient
from provisioning.releases import public_key_b64
from simulators.host.keys import TEST_KEY_ID, TEST_PUBLIC_KEY_B64, test_private_key
from simulators.host.runner import RunningHost, start_in_thread
from simulators.host.store import Device, HostStore

SITE = "S-1001"
TRUSTED = {TEST_KEY_ID: TEST_PUBLIC_KEY_B64}


class FakeClock:
    """The box clock, movable by tests; starts at the real time (the hosts' Date is real)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


class ConfigHost:
    """A stand-in host on 127.0.0.1 answering GET config with `config` as given, its ETag, and
    whatever Date header `date()` returns (None: no Date header at all)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = config
        self.etag = '"c1"'
        self.date: Callable[[], str | None] = lambda: format_datetime(
            datetime.now(UTC), usegmt=True
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ConfigHandler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, config: dict[str, Any], etag: str) -> None:
        self.config, self.etag = config, etag

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _ConfigHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        host: ConfigHost = self.server.owner  # type: ignore[attr-defined]
        if self.headers.get("If-None-Match") == host.etag:
            self._reply(304, b"", host)
            return
        self._reply(200, json.dumps(host.config).encode(), host)

    def _reply(self, status: int, body: bytes, host: ConfigHost) -> None:
        self.send_response_only(status)  # no automatic Date: the test chooses it
        date = host.date()
        if date is not None:
            self.send_header("Date", date)
        self.send_header("ETag", host.etag)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# Fixtures and helpers.


@pytest.fixture
def host() -> Iterator[RunningHost]:
    running = start_in_thread("127.0.0.1", 0)
    yield running
    running.stop()


@pytest.fixture
def hosts() -> Iterator[Callable[..., RunningHost]]:
    """Start reference hosts with options (another key, clock, store); all stopped after."""
    started: list[RunningHost] = []

    def start(**options: Any) -> RunningHost:
        running = start_in_thread("127.0.0.1", 0, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def config_host() -> Iterator[ConfigHost]:
    stand_in = ConfigHost()
    yield stand_in
    stand_in.close()


def client(url: str, token: str = "demo-token") -> HostClient:
    return HostClient(url, token, "D-DEMO", timeout_s=5)


def manager(
    url: str,
    state: Path,
    clock: Callable[[], datetime] | None = None,
    trusted: dict[str, str] | None = None,
    site: str = SITE,
) -> PolicyManager:
    return PolicyManager(
        client(url), TRUSTED if trusted is None else trusted, site, state, clock or FakeClock()
    )


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A state file holding a valid policy, fetched from a reference host now stopped."""
    state = tmp_path / "policy.json"
    with start_in_thread("127.0.0.1", 0) as good:
        assert manager(good.url, state).refresh() is True
    return state


def policy_doc(version: int = 7, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    doc = {
        "policy_version": version,
        "site_id": SITE,
        "issued_at": (now - timedelta(hours=1)).isoformat(),
        "expires_at": (now + timedelta(days=14)).isoformat(),
        "subscription_valid_until": "2099-12-31",
        "programs": [{"program_id": "scan-data", "kind": "scan_data", "loyalty_id": "us_phone"}],
        "offline_limits": {"max_offline_hours": 24, "max_discount_per_transaction": "5.00"},
    }
    doc.update(changes)
    return doc


def config_with(policy: Any) -> dict[str, Any]:
    return {"config_version": 1, "site": {"site_id": SITE}, "heartbeat_s": 60, "policy": policy}


def signed(doc: dict[str, Any]) -> dict[str, str]:
    return sign_policy(doc, test_private_key(), TEST_KEY_ID)


def assert_refused_keeps_previous(state: Path, url: str, reason: str) -> PolicyManager:
    """A box restarted from `state` refuses what `url` serves, keeping the saved policy."""
    saved = state.read_bytes()
    box = manager(url, state)
    before = box.current()
    assert before is not None and box.refused is None
    assert box.refresh() is False
    assert box.refused is not None and reason in box.refused
    assert box.current() == before  # the previous valid policy stays in force
    assert box.snapshot()["refused"] == box.refused
    assert state.read_bytes() == saved  # and stays on disk
    return box


# Installing, 304 and restarting.


def test_refresh_installs_policy_and_writes_state_file(host: RunningHost, tmp_path: Path):
    state = tmp_path / "state" / "policy.json"
    box = manager(host.url, state)
    assert box.current() is None and box.snapshot()["in_force"] is False

    assert box.refresh() is True

    doc = box.current()
    assert doc is not None and doc["site_id"] == SITE and doc["policy_version"] == 7
    saved = json.loads(state.read_text())
    assert set(saved["policy"]) == {"document", "signature", "key_id"}
    assert saved["etag"]
    assert verify_policy(saved["policy"], TRUSTED, SITE, datetime.now(UTC)) == doc
    assert [p.name for p in state.parent.iterdir()] == ["policy.json"]  # no temp file left
    snap = box.snapshot()
    assert snap["policy_version"] == 7 and snap["key_id"] == TEST_KEY_ID
    assert snap["issued_at"] == doc["issued_at"] and snap["expires_at"] == doc["expires_at"]
    assert snap["in_force"] is True and snap["refused"] is None and snap["last_error"] is None
    assert snap["last_refresh_at"] is not None
    assert abs(snap["clock_skew_s"]) < 5 and snap["clock_problem"] is None


def test_second_refresh_gets_304_and_changes_nothing(host: RunningHost, tmp_path: Path):
    state = tmp_path / "policy.json"
    box = manager(host.url, state)
    assert box.refresh() is True
    saved, doc = state.read_bytes(), box.current()
    etag = json.loads(saved)["etag"]
    assert client(host.url).config(etag) == (None, etag)  # the host does answer 304

    assert box.refresh() is False

    assert box.current() is doc
    assert state.read_bytes() == saved
    assert box.refused is None and box.last_error is None


def test_restart_from_state_file_without_host(installed: Path, dead_host_url: str):
    box = manager(dead_host_url, installed)
    doc = box.current()
    assert doc is not None and doc["policy_version"] == 7 and box.refused is None

    assert box.refresh() is False  # host down: logged and recorded, never raised

    assert box.current() == doc
    assert box.last_error and "cannot reach the host" in box.last_error
    assert box.snapshot()["last_error"] == box.last_error


def test_host_error_answer_is_recorded_not_raised(host: RunningHost, tmp_path: Path):
    box = PolicyManager(client(host.url, token="revoked"), TRUSTED, SITE, tmp_path / "p.json")
    assert box.refresh() is False
    assert box.last_error and "401" in box.last_error
    assert box.current() is None
    assert box.clock_skew_s is not None  # the 401 still carried the host's Date


def test_new_policy_replaces_current_and_same_policy_is_not_new(
    config_host: ConfigHost, tmp_path: Path
):
    state = tmp_path / "policy.json"
    first = signed(policy_doc(7))
    config_host.serve(config_with(first), '"v7"')
    box = manager(config_host.url, state)
    assert box.refresh() is True and box.current()["policy_version"] == 7

    config_host.serve(config_with(signed(policy_doc(8))), '"v8"')
    assert box.refresh() is True
    assert box.current()["policy_version"] == 8
    assert json.loads(state.read_text())["etag"] == '"v8"'

    # Only the config around the policy changed: nothing new installed, the new ETag kept.
    config_host.serve({**config_with(box_signed(state)), "heartbeat_s": 30}, '"v8b"')
    assert box.refresh() is False
    assert box.current()["policy_version"] == 8
    assert json.loads(state.read_text())["etag"] == '"v8b"'


def box_signed(state: Path) -> dict[str, str]:
    return json.loads(state.read_text())["policy"]


# Refusals: each keeps the previous valid policy.


def test_tampered_document_is_refused(installed: Path, config_host: ConfigHost):
    policy = signed(policy_doc(9))
    doc = json.loads(base64.b64decode(policy["document"]))
    doc["programs"][0]["discount"] = {"method": "amount_off", "value": "50.00"}
    policy["document"] = base64.b64encode(canonical_json(doc)).decode()
    config_host.serve(config_with(policy), '"tampered"')
    assert_refused_keeps_previous(installed, config_host.url, "signature does not verify")


def test_policy_signed_with_another_key_is_refused(installed: Path, hosts):
    forger = hosts(private_key=Ed25519PrivateKey.generate())  # claims key_id test-k1
    assert_refused_keeps_previous(installed, forger.url, "signature does not verify")


def test_unknown_key_id_is_refused(installed: Path, hosts):
    other = hosts(key_id="prod-k2")
    assert_refused_keeps_previous(installed, other.url, "unknown key_id 'prod-k2'")


def test_box_without_the_key_id_trusts_neither_host_nor_saved_file(
    installed: Path, host: RunningHost
):
    other_key = {"prod-k1": public_key_b64(Ed25519PrivateKey.generate())}
    saved = installed.read_bytes()
    box = manager(host.url, installed, trusted=other_key)
    assert box.current() is None and box.latest() is None
    assert box.refused and box.refused.startswith("saved policy not used")
    assert "unknown key_id 'test-k1'" in box.refused

    assert box.refresh() is False
    assert box.current() is None
    assert "unknown key_id 'test-k1'" in (box.refused or "")
    assert installed.read_bytes() == saved  # kept, in case the key comes back


def test_policy_for_another_site_is_refused(installed: Path, hosts):
    other_site = hosts(store=HostStore(devices=[Device("D-DEMO", "demo-token", "S-2002")]))
    assert_refused_keeps_previous(installed, other_site.url, "policy is for site 'S-2002'")


def test_expired_policy_is_refused(installed: Path, hosts):
    month_ago = datetime.now(UTC) - timedelta(days=30)
    stale = hosts(clock=lambda: month_ago)  # signs a policy that expired 16 days ago
    assert_refused_keeps_previous(installed, stale.url, "policy expired at")


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (None, "config carries no policy"),
        ("not an object", "malformed policy"),
        ({"key_id": TEST_KEY_ID, "signature": "AAAA"}, "document is missing"),
        (signed(policy_doc(9, policy_version="9")), "policy_version is not an integer"),
        (signed(policy_doc(9, issued_at="yesterday")), "issued_at"),
        (signed(policy_doc(9, subscription_valid_until=20270630)), "subscription_valid_until"),
        (
            signed(policy_doc(9, offline_limits={"max_discount_per_transaction": 5.0})),
            "max_discount_per_transaction",
        ),
        (
            signed(policy_doc(9, programs=[{"program_id": "c", "card": {"min_length": "8"}}])),
            "program 'c': card.min_length is not an integer",
        ),
        (
            signed(policy_doc(9, programs=[{"program_id": "c", "card": {"ranges": [{}]}}])),
            "program 'c': card.ranges",
        ),
    ],
)
def test_malformed_policy_is_refused(installed: Path, config_host, policy, reason):
    config_host.serve(config_with(policy), '"odd"')
    assert_refused_keeps_previous(installed, config_host.url, reason)


def test_refused_policy_is_fetched_again_and_a_good_one_clears_the_reason(
    config_host: ConfigHost, tmp_path: Path
):
    box = manager(config_host.url, tmp_path / "p.json")
    config_host.serve(config_with(signed(policy_doc(7, site_id="S-9"))), '"bad"')
    assert box.refresh() is False and box.refused
    config_host.serve(config_with(signed(policy_doc(7))), '"good"')
    assert box.refresh() is True
    assert box.refused is None and box.current()["policy_version"] == 7


# Expiry by the box clock.


def test_policy_stops_at_expiry_and_restart_keeps_but_does_not_use_it(
    host: RunningHost, tmp_path: Path
):
    state = tmp_path / "policy.json"
    clock = FakeClock()
    box = manager(host.url, state, clock)
    assert box.refresh() is True
    expires = datetime.fromisoformat(box.current()["expires_at"])

    clock.offset = expires - datetime.now(UTC) - timedelta(seconds=30)
    assert box.current() is not None  # still in force 30 s before expiry
    clock.advance(timedelta(seconds=31))
    assert box.current() is None  # checked on every call
    assert box.latest()["policy_version"] == 7
    assert box.snapshot()["in_force"] is False

    saved = state.read_bytes()
    restarted = manager(host.url, state, clock)
    assert restarted.current() is None
    assert (
        restarted.refused
        == f"saved policy not used: policy expired at {expires:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert restarted.latest()["policy_version"] == 7
    assert state.read_bytes() == saved  # kept on disk


# Clock checks.


def test_clock_ahead_of_host_date_is_a_problem(host: RunningHost, tmp_path: Path):
    box = manager(host.url, tmp_path / "p.json", FakeClock(timedelta(minutes=10)))
    assert box.refresh() is True
    assert box.clock_skew_s == pytest.approx(600, abs=5)
    problem = box.clock_problem()
    assert problem and "ahead of the host's clock" in problem
    assert box.snapshot()["clock_problem"] == problem
    assert box.current() is not None  # the policy is fine; the engine stops on the clock


def test_clock_behind_host_date_is_a_problem(config_host: ConfigHost, tmp_path: Path):
    config_host.serve(config_with(signed(policy_doc(7))), '"p"')
    later = datetime.now(UTC) + timedelta(seconds=MAX_CLOCK_SKEW_S + 60)
    config_host.date = lambda: format_datetime(later, usegmt=True)
    box = manager(config_host.url, tmp_path / "p.json")
    box.refresh()
    assert box.clock_skew_s == pytest.approx(-(MAX_CLOCK_SKEW_S + 60), abs=5)
    assert "behind the host's clock" in (box.clock_problem() or "")


def test_a_clock_not_yet_set_holds_offline_decisions_back(host: RunningHost, tmp_path: Path):
    # app/clock.py's word while neither NTP nor the host has confirmed the clock.
    unset = "the box clock is not set yet"
    box = PolicyManager(
        client(host.url), TRUSTED, SITE, tmp_path / "p.json", clock_check=lambda: unset
    )
    assert box.refresh() is True
    assert box.clock_problem() == unset and box.snapshot()["clock_problem"] == unset


def test_small_skew_is_fine(host: RunningHost, tmp_path: Path):
    box = manager(host.url, tmp_path / "p.json", FakeClock(timedelta(seconds=60)))
    box.refresh()
    assert box.clock_skew_s == pytest.approx(60, abs=5)
    assert box.clock_problem() is None


@pytest.mark.parametrize("date_header", [None, "not a date", ""])
def test_missing_or_unreadable_date_header_means_skew_unknown(
    config_host: ConfigHost, tmp_path: Path, date_header
):
    config_host.serve(config_with(signed(policy_doc(7))), '"p"')
    config_host.date = lambda: date_header
    box = manager(config_host.url, tmp_path / "p.json", FakeClock(timedelta(hours=1)))
    assert box.refresh() is True
    assert box.clock_skew_s is None and box.clock_problem() is None


def test_box_clock_before_policy_issue_time_is_a_problem(hosts, tmp_path: Path):
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    early = hosts(clock=lambda: in_an_hour)  # issues a policy dated an hour from now
    box = manager(early.url, tmp_path / "p.json")
    assert box.refresh() is True
    assert abs(box.clock_skew_s) < 5  # the Date header agrees with the box
    problem = box.clock_problem()
    assert problem and "before the policy's issue time" in problem


def test_box_clock_just_before_issue_time_is_within_tolerance(hosts, tmp_path: Path):
    soon = datetime.now(UTC) + timedelta(seconds=30)
    box = manager(hosts(clock=lambda: soon).url, tmp_path / "p.json")
    assert box.refresh() is True
    assert box.clock_problem() is None


# The state file and the refresher.


def test_unreadable_state_file_is_kept_and_reported(tmp_path: Path, dead_host_url: str):
    state = tmp_path / "policy.json"
    state.write_text("{half a file")
    box = manager(dead_host_url, state)
    assert box.current() is None
    assert box.refused and "unreadable" in box.refused
    assert state.read_text() == "{half a file"


def test_refresher_installs_at_start_and_stops_promptly(host: RunningHost, tmp_path: Path):
    box = manager(host.url, tmp_path / "p.json")
    box.start(interval_s=3600)
    deadline = time.monotonic() + 5
    while box.current() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert box.current() is not None

    box.stop()  # gives the thread 5 s; asleep for its hour it would still be there after
    assert not any(t.name == "policy-refresh" and t.is_alive() for t in threading.enumerate())


def test_refresher_keeps_refreshing_every_interval(config_host: ConfigHost, tmp_path: Path):
    config_host.serve(config_with(signed(policy_doc(7))), '"v7"')
    box = manager(config_host.url, tmp_path / "p.json")
    box.start(interval_s=0.05)
    try:
        deadline = time.monotonic() + 5
        while box.current() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        config_host.serve(config_with(signed(policy_doc(8))), '"v8"')
        while box.current()["policy_version"] != 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert box.current()["policy_version"] == 8
    finally:
        box.stop()
