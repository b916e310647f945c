"""The service's side of the image's root helpers, against stand-in helper sockets: the journal
sync after a warning (app/logs.py), the clock set from the host's `Date` (app/clock.py), and the
clock helper's own rules (image/overlay/usr/lib/connectbox/set-clock)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import time
from email.utils import formatdate
from pathlib import Path
from types import ModuleType

import pytest

from app.clock import ClockKeeper
from app.logs import JournalSync
from tests.unix_helper import Helper
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def logger():
    log = logging.getLogger("test.journal_sync")
    log.propagate = False
    yield log
    log.handlers.clear()


def test_a_warning_asks_for_a_journal_sync_and_info_does_not(tmp_path, logger):
    helper = Helper(tmp_path / "sync.sock")
    sync = JournalSync(tmp_path / "sync.sock", min_gap_s=0.0)
    logger.addHandler(sync)
    logger.setLevel(logging.INFO)
    logger.info("routine")
    time.sleep(0.3)
    assert helper.requests == []
    logger.warning("the host refused")
    assert wait_for(lambda: sync.syncs == 1, timeout=5)
    logger.error("worse")
    assert wait_for(lambda: sync.syncs == 2, timeout=5)
    helper.close()


def test_a_burst_of_warnings_during_a_sync_costs_one_more_sync(tmp_path, logger):
    helper = Helper(tmp_path / "sync.sock", delay_s=0.5)  # a slow disk
    sync = JournalSync(tmp_path / "sync.sock", min_gap_s=0.0)
    logger.addHandler(sync)
    logger.warning("first")
    assert wait_for(lambda: len(helper.requests) == 1, timeout=5)
    for n in range(50):
        logger.warning("burst %d", n)
    assert wait_for(lambda: sync.syncs == 2, timeout=5)
    time.sleep(0.8)
    assert sync.syncs == 2
    helper.close()


def test_a_missing_helper_never_breaks_logging(tmp_path, logger, capsys):
    sync = JournalSync(tmp_path / "absent.sock", min_gap_s=0.0)
    logger.addHandler(sync)
    logger.warning("no helper here")
    assert wait_for(lambda: sync.last_error is not None, timeout=5)
    assert "journal sync helper" in capsys.readouterr().err


class Source:
    def __init__(self, header: str | None, at: float | None) -> None:
        self.last_date_header, self.last_date_at = header, at


def _keeper(tmp_path: Path, offset_s: float, helper: Path | None, synced: bool = False):
    """A box clock `offset_s` ahead of the host's (whose `Date` came 2 s ago)."""
    flag = tmp_path / "synchronized"
    if synced:
        flag.touch()
    host_now = 1_800_000_000.0
    source = Source(formatdate(host_now - 2, usegmt=True), at=100.0)
    steps: list[bool] = []
    keeper = ClockKeeper(
        source,
        helper,
        synced_flag=flag,
        on_step=lambda: steps.append(True),
        wall=lambda: host_now + offset_s,
        monotonic=lambda: 102.0,
    )
    return keeper, steps, host_now


def test_a_clock_two_hours_behind_is_set_from_the_host_through_the_helper(tmp_path):
    helper = Helper(tmp_path / "clock.sock", answer=b"stepped +7200.0 s\n")
    keeper, steps, host_now = _keeper(tmp_path, -7200, tmp_path / "clock.sock")
    assert keeper.problem() is not None  # offline decisions wait
    keeper.tick()
    [sent] = helper.requests
    assert abs(float(sent) - host_now) <= 1.0
    assert keeper.last_answer == "stepped +7200.0 s" and steps == [True]
    assert keeper.problem() is not None  # until a tick sees the clock right
    helper.close()


def test_a_clock_in_step_with_the_host_or_ntp_is_trusted_and_left_alone(tmp_path):
    keeper, steps, _ = _keeper(tmp_path, 2.0, tmp_path / "absent.sock")
    keeper.tick()
    assert keeper.state == "host" and keeper.problem() is None and steps == []
    keeper, steps, _ = _keeper(tmp_path, -7200, tmp_path / "absent.sock", synced=True)
    keeper.tick()
    assert keeper.state == "ntp" and keeper.problem() is None and steps == []


def test_without_a_helper_the_clock_is_only_checked(tmp_path):
    keeper, steps, _ = _keeper(tmp_path, -7200, None)
    keeper.tick()
    assert keeper.problem() is None and steps == [] and keeper.state == "unchecked"


def _set_clock() -> ModuleType:
    path = REPO / "image" / "overlay" / "usr" / "lib" / "connectbox" / "set-clock"
    loader = importlib.machinery.SourceFileLoader("set_clock", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("set_clock", loader))
    loader.exec_module(module)
    return module


def test_the_clock_helper_bounds_each_step_and_refuses_insane_times():
    helper = _set_clock()
    floor, now = 1_790_000_000.0, 1_790_000_100.0
    new, said = helper.decide(now + 7200, now, floor, synced=False)
    assert new == now + 7200 and said.startswith("stepped +7200.0 s")
    new, _ = helper.decide(now + 90 * 86400, now, floor, synced=False)
    assert new == now + helper.MAX_STEP_S  # bounded: a day per request
    assert helper.decide(floor - 60, now, floor, synced=False)[0] is None  # before the build
    assert helper.decide(floor + 40 * 365 * 86400, now, floor, synced=False)[0] is None
    assert helper.decide(now + 7200, now, floor, synced=True)[0] is None  # NTP knows better
    assert helper.decide(now + 0.4, now, floor, synced=False)[0] is None
