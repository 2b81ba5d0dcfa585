"""What the traces and latencies say, per host: statistics and top operations by self
time. Pure: the events come from traces.py."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable

from typing_extensions import TypedDict


class LatencyStats(TypedDict):
    """summary_stats.latency_stats of a list of iteration latencies, in seconds."""

    n: int
    mean: float
    p50: float
    p90: float
    max: float
    std: float


class Operation(TypedDict):
    name: str
    self_ms: float
    share: float


def latency_stats(values: list[float]) -> LatencyStats | None:
    """mean, p50, p90, max, std of iteration latencies (seconds)."""
    if not values:
        return None
    ordered = sorted(values)

    def pct(p: float) -> float:  # nearest-rank percentile
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "n": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": pct(50),
        "p90": pct(90),
        "max": ordered[-1],
        "std": statistics.pstdev(ordered),
    }


def self_times(intervals: Iterable[tuple[str, str, float, float]]) -> dict[str, float]:
    """Self time per event name from (track, name, start, duration): an event's duration
    less that of the events nested in it on the same track. Units are the caller's."""
    by_track: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for track, name, start, duration in intervals:
        by_track[track].append((start, duration, name))
    totals: dict[str, float] = defaultdict(float)
    for events in by_track.values():
        events.sort(key=lambda e: (e[0], -e[1]))
        stack: list[list] = []  # [end, name, child time]
        for start, duration, name in events:
            while stack and stack[-1][0] <= start:
                end, done_name, child = stack.pop()
                totals[done_name] -= child
            if stack:
                stack[-1][2] += duration
            totals[name] += duration
            stack.append([start + duration, name, 0.0])
        while stack:
            _, done_name, child = stack.pop()
            totals[done_name] -= child
    return dict(totals)


def top_operations(self_time: dict[str, float], count: int = 10) -> list[Operation]:
    total = sum(v for v in self_time.values() if v > 0) or 1.0
    ranked = sorted(self_time.items(), key=lambda kv: kv[1], reverse=True)[:count]
    return [{"name": name, "self_ms": value, "share": value / total} for name, value in ranked]
