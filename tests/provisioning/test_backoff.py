"""The one backoff every retry loop uses: exponential from the first failure, capped, jittered."""

from __future__ import annotations

from provisioning.backoff import NO_JITTER, backoff_delay


def test_steps_double_from_the_first_failure_up_to_the_cap():
    steps = [backoff_delay(n, 1.0, 60.0, jitter=NO_JITTER) for n in range(1, 9)]
    assert steps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff_delay(0, 1.0, 60.0, jitter=NO_JITTER) == 1.0  # nothing failed yet: the base


def test_growth_and_jitter_are_the_callers():
    assert backoff_delay(3, 2.0, 100.0, growth=1.5, jitter=NO_JITTER) == 4.5
    delays = {backoff_delay(4, 1.0, 300.0, jitter=(0.5, 1.5)) for _ in range(200)}
    assert all(4.0 <= d <= 12.0 for d in delays) and max(delays) - min(delays) > 2.0


def test_thousands_of_failures_wait_the_cap():
    assert backoff_delay(10_000, 1.0, 300.0, jitter=NO_JITTER) == 300.0
    assert 150.0 <= backoff_delay(10**9, 1.0, 300.0) <= 300.0
