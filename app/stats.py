"""Small in-memory measurements for the status page and the benchmarks."""

from __future__ import annotations

import threading
from collections import Counter, deque


class LatencyWindow:
    """The last `size` samples (seconds), with percentiles in milliseconds."""

    def __init__(self, size: int = 10_000) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)

    def percentiles_ms(self, *points: float) -> dict[str, float | None]:
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return {f"p{p:g}": None for p in points}
        last = len(ordered) - 1
        return {f"p{p:g}": round(ordered[round(last * p / 100)] * 1000, 3) for p in points}

    def __len__(self) -> int:
        return len(self._samples)


class Counters:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
