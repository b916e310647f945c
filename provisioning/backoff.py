"""How long to wait after failures in a row: exponential, capped and jittered.

One rule for every retry loop of the box (enrollment, the host link's probes, the outbox, the
mDNS announcement): after the n-th failure in a row wait `base_s * growth ** (n - 1)`, at most
`max_s`, times a random factor from `jitter`, so that boxes which failed together (a host outage
ends for all of them at once) do not all come back in the same second. Here, not in `app/`, so
that `provisioning/` can use it too.
"""

from __future__ import annotations

import random

NO_JITTER = (1.0, 1.0)  # for a loop that only this box runs (nothing to spread apart)


def backoff_delay(
    failures: int,
    base_s: float,
    max_s: float,
    *,
    growth: float = 2.0,
    jitter: tuple[float, float] = (0.5, 1.0),
) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 for the first): the step
    `base_s * growth ** (failures - 1)`, capped at `max_s`, times a random factor in `jitter`."""
    try:
        step = min(max_s, base_s * float(growth) ** max(0, failures - 1))
    except OverflowError:  # failures in the thousands: long past the cap
        step = max_s
    low, high = jitter
    return step * random.uniform(low, high)
