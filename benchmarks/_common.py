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


def median_rate(
    fn: Callable[[], object], per_call: int, min_time_s: float, repeats: int, min_calls: int = 1
) -> float:
    """Median items/s of ``fn()`` (``per_call`` items a call) over ``repeats`` timed blocks.

    One untimed warm-up call, then one timed call sizes the blocks: each block makes
    ``max(min_calls, min_time_s / that call's time)`` calls, so it lasts about
    ``min_time_s`` seconds.
    """
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(min_calls, int(min_time_s / one))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rates.append(inner * per_call / (time.perf_counter() - t0))
    return statistics.median(rates)
