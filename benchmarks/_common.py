"""Small helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warm_ups: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warm_ups`` untimed calls, s."""
    for _ in range(warm_ups):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
