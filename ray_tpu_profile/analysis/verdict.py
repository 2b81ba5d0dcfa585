"""Whether B is slower than A from two small sets of iteration latencies: the one rule every
verdict of `diff` uses. Pure (no numpy needed).

The test: Mann-Whitney (Wilcoxon rank-sum) on the logarithms of the kept iterations,
exact below EXACT_MAX_PAIRS pairs, normal approximation above, two-sided at ALPHA. Why
this test: iteration latencies are few, skewed and sometimes bimodal (a stray GC pause, a
late compile); a rank test assumes no shape, is exact at the sizes runs have, and needs no
resampling (a bootstrap of the median of 3 values can only return one of them). The
interval is the distribution-free one that goes with the test (Hodges-Lehmann / Moses:
order statistics of the pairwise differences log b - log a), so "the interval lies above
1" and "the test rejects towards slower" are the same statement. Deterministic: no seed.

Verdicts: "slower" / "faster" when the interval of B/A lies above / below 1; "too few
samples" below MIN_SAMPLES on either side (never "within noise": with 3 a side the exact
test cannot reject at all, smallest p = 0.10); else "within noise", reported with the
smallest ratio the test could have called slower with the noise at hand, so that "no
change" is never read where the samples could not have seen one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ALPHA = 0.05
"""Two-sided level: a 95% interval."""
MIN_SAMPLES = 5
"""Fewest kept iterations per side for a verdict. At 5 a side the exact two-sided test at 5%
calls a change while tolerating some overlap of the sides (U <= 2 of 25 pairs); at 4 a side
it calls only a complete separation (one stray iteration hides any change), at 3 never."""
RESOLVE_RATIO = 1.10
"""The change `need_n` is computed for: samples per side that decide a 10% change at the noise seen."""
EXACT_MAX_PAIRS = 2500
"""Above this many pairs (50 x 50) the normal approximation of U is used (error well under 1%)."""
NEED_N_MAX = 200
MIN_TIME = 1e-9
"""Times at or below zero are taken as this (the rank test only needs their order)."""


@dataclass(frozen=True)
class Comparison:
    """The verdict on one pair of sample sets (latencies in seconds, or any positive time)."""

    verdict: str
    ratio: float
    """median(B) / median(A)."""
    interval: tuple[float, float] | None
    """The 1 - ALPHA interval of the B/A shift ratio; None with too few samples."""
    smallest_slower_ratio: float | None
    """Smallest B/A the test would have called slower, given both sides' spread; None with too few samples."""
    need_n: int | None
    """Samples per side that decide a RESOLVE_RATIO change at this noise; None if more than NEED_N_MAX."""
    a_spread: float
    b_spread: float
    """Median absolute deviation as a share of the median (0.05 = 5%)."""


def kept_iterations(latency_s: Mapping[str, Any]) -> list[float]:
    """The samples of a host and shape: its warmup iterations after those its throwaway
    warm-up capture slowed (warmup_in_capture; at least the first, which also warms caches
    up), plus its profiled ones."""
    return list(latency_s.get("warmup", [])[warmups_skipped(latency_s) :]) + list(latency_s.get("profiled", []))


def warmups_skipped(latency_s: Mapping[str, Any]) -> int:
    """Leading warmup iterations that are no samples: those run in the warm-up capture, or
    the first (a run directory from before warmup_in_capture, a sweep's later shape)."""
    return max(1, latency_s.get("warmup_in_capture") or 0)


def spread(values: list[float]) -> float:
    """The median absolute deviation of values as a share of their median: robust to the
    one slow iteration a mean and standard deviation would be dominated by."""
    if not values:
        return math.nan
    middle = statistics.median(values)
    if middle == 0:
        return math.nan
    return statistics.median(abs(v - middle) for v in values) / abs(middle)


@lru_cache(maxsize=256)
def u_distribution(m: int, n: int) -> tuple[int, ...]:
    """Counts of each U = 0..m*n over the C(m+n, m) orderings of two samples without ties:
    the coefficients of the Gaussian binomial [m+n choose m]_q."""
    coefficients = [1] + [0] * (m * n)
    for i in range(1, m + 1):
        for j in range(m * n, n + i - 1, -1):  # times (1 - q^(n+i))
            coefficients[j] -= coefficients[j - n - i]
        for j in range(i, m * n + 1):  # divided by (1 - q^i): a running sum with stride i
            coefficients[j] += coefficients[j - i]
    return tuple(coefficients)


@lru_cache(maxsize=1024)
def critical_count(m: int, n: int, alpha: float = ALPHA) -> int:
    """k: the largest count with P(U <= k - 1) <= alpha / 2 under no change. The interval
    [D_(k), D_(mn+1-k)] of the sorted pairwise differences covers the shift with at least
    1 - alpha; k = 0 means the test cannot reject at these sizes."""
    if m * n > EXACT_MAX_PAIRS:
        return normal_critical_count(m, n, alpha)
    counts = u_distribution(m, n)
    total = math.comb(m + n, m)
    cumulative, k = 0, 0
    for u, count in enumerate(counts):
        cumulative += count
        if cumulative / total > alpha / 2:
            break
        k = u + 1
    return k


def normal_critical_count(m: int, n: int, alpha: float = ALPHA) -> int:
    """critical_count from the normal approximation of U (with continuity correction)."""
    pairs = m * n
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
    return max(0, math.floor(pairs / 2 - z * math.sqrt(pairs * (m + n + 1) / 12) + 0.5))


def _log(value: float) -> float:
    """A time's logarithm; a zero time (a step that ran nothing, a clock tick) counts as 1 ns."""
    return math.log(max(value, MIN_TIME))


def _centred_logs(values: list[float]) -> list[float]:
    logs = [_log(v) for v in values]
    middle = statistics.median(logs)
    return [v - middle for v in logs]


def smallest_slower_ratio(a: list[float], b: list[float]) -> float | None:
    """The smallest factor by which B, with its own spread, would have to be slower than A for
    the test to call it: exp(-D'_(k)) over the differences of each side's centred logs."""
    k = critical_count(len(a), len(b))
    if k == 0:
        return None
    return math.exp(-_differences_of(_centred_logs(a), _centred_logs(b))[k - 1])


def _differences_of(log_a: list[float], log_b: list[float]) -> list[float]:
    return sorted(y - x for y in log_b for x in log_a)


def samples_to_resolve(residuals: list[float], ratio: float = RESOLVE_RATIO) -> int | None:
    """Samples per side at which a shift of ratio, with the noise of the pooled residuals
    (centred logs), is called: both sides drawn as the residuals' n evenly spaced quantiles,
    one of them shifted. None above NEED_N_MAX. Bisection: more samples never resolve less."""
    ordered = sorted(residuals)
    shift = math.log(ratio)

    def resolves(n: int) -> bool:
        quantiles = [_quantile(ordered, (i + 0.5) / n) for i in range(n)]
        k = critical_count(n, n)
        return bool(k) and _differences_of(quantiles, [q + shift for q in quantiles])[k - 1] > 0

    if not resolves(NEED_N_MAX):
        return None
    low, high = MIN_SAMPLES - 1, NEED_N_MAX  # resolves(high) holds; low is below every candidate
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolves(middle) else (middle, high)
    return high


def _quantile(ordered: list[float], p: float) -> float:
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def compare(a: list[float], b: list[float]) -> Comparison:
    """The verdict on B against A (both non-empty, positive)."""
    ratio = statistics.median(b) / max(statistics.median(a), MIN_TIME)
    need_n = samples_to_resolve(_centred_logs(a) + _centred_logs(b))
    spreads = spread(a), spread(b)
    if min(len(a), len(b)) < MIN_SAMPLES:
        return Comparison("too few samples", ratio, None, None, need_n, *spreads)
    k = critical_count(len(a), len(b))
    differences = _differences_of([_log(x) for x in a], [_log(y) for y in b])
    low, high = math.exp(differences[k - 1]), math.exp(differences[len(differences) - k])
    verdict = "slower" if low > 1 else "faster" if high < 1 else "within noise"
    return Comparison(verdict, ratio, (low, high), smallest_slower_ratio(a, b), need_n, *spreads)


RULE = (
    f"Mann-Whitney rank test on the logarithms of the kept iterations (exact up to {EXACT_MAX_PAIRS} pairs), "
    f"two-sided at {ALPHA:g}, with its distribution-free {100 * (1 - ALPHA):.0f}% interval of B/A "
    "(Hodges-Lehmann): slower if the interval lies above 1, faster if below 1; "
    f"too few samples below {MIN_SAMPLES} iterations a side (need_n says how many decide a "
    f"{100 * (RESOLVE_RATIO - 1):.0f}% change at the noise seen); else within noise, with the smallest "
    "ratio the test could have called slower"
)
