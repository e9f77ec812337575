"""Timers shared by the benchmarks (run as scripts, so ``from timing import ...`` finds this file)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def repeated_times(function: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of ``repeats`` calls of ``function`` on ``clock``, after one untimed warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = clock()
        function()
        times.append(clock() - start)
    return times


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls (after a warm-up): the least disturbed run."""
    return min(repeated_times(function, repeats))


def median_cpu_time(function: Callable[[], object], repeats: int) -> float:
    """Median CPU seconds of this process over ``repeats`` calls (after a warm-up)."""
    return statistics.median(repeated_times(function, repeats, time.process_time))
