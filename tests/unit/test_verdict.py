"""The verdict rule on synthetic samples: too few, a real change, no change, a bimodal side,
and the exact test's own numbers against its textbook values."""

from __future__ import annotations

import math
import random

import pytest

from ray_tpu_profile.analysis.verdict import (
    MIN_SAMPLES,
    compare,
    critical_count,
    kept_iterations,
    normal_critical_count,
    samples_to_resolve,
    spread,
    u_distribution,
)


def noisy(n: int, scale: float, noise: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [scale * math.exp(noise * rng.gauss(0, 1)) for _ in range(n)]


def test_three_against_three_with_a_2x_change_is_too_few_samples():
    c = compare(noisy(3, 1.0, 0.05, 1), noisy(3, 2.0, 0.05, 2))
    assert c.verdict == "too few samples" and c.interval is None and c.ratio > 1.8
    assert c.need_n is not None and c.need_n >= MIN_SAMPLES


def test_ten_against_ten_with_a_1_3x_change_and_5_percent_noise_is_slower():
    c = compare(noisy(10, 1.0, 0.05, 3), noisy(10, 1.3, 0.05, 4))
    assert c.verdict == "slower" and c.interval[0] > 1 and c.interval[0] < c.ratio < c.interval[1]
    assert compare(noisy(10, 1.3, 0.05, 4), noisy(10, 1.0, 0.05, 3)).verdict == "faster"


def test_the_same_distribution_twice_is_within_noise_with_what_it_could_have_seen():
    c = compare(noisy(10, 1.0, 0.05, 5), noisy(10, 1.0, 0.05, 6))
    assert c.verdict == "within noise" and c.interval[0] <= 1 <= c.interval[1]
    assert 1 < c.smallest_slower_ratio < 1.15
    assert 0.01 < c.a_spread < 0.1 and 0.01 < c.b_spread < 0.1


def test_a_bimodal_side_is_judged_by_ranks_not_by_its_slow_mode():
    # A fifth of A's iterations hit a slow mode (a stray compile, a GC pause): B is the fast mode throughout.
    a = noisy(8, 1.0, 0.02, 7) + noisy(2, 1.6, 0.02, 8)
    assert compare(a, noisy(10, 1.0, 0.02, 9)).verdict == "within noise"
    # A real 1.3x change of B is still seen past A's slow mode: ranks, not means (A's mean is 1.12).
    assert compare(a, noisy(10, 1.3, 0.02, 10)).verdict == "slower"


def test_the_verdict_is_deterministic():
    a, b = noisy(7, 1.0, 0.1, 11), noisy(7, 1.1, 0.1, 12)
    assert compare(a, b) == compare(a, b)


def test_exact_distribution_and_critical_values_match_the_tables():
    assert u_distribution(2, 2) == (1, 1, 2, 1, 1)
    assert sum(u_distribution(5, 5)) == math.comb(10, 5)
    # Two-sided 5% critical values of U for n1 = n2 (reject when U <= value): 4 -> 0, 5 -> 2, 8 -> 13, 10 -> 23.
    assert [critical_count(n, n) - 1 for n in (4, 5, 8, 10)] == [0, 2, 13, 23]
    assert critical_count(3, 3) == 0  # no change can be called at all
    # The normal approximation used above the exact range agrees with the exact count at its edge.
    assert normal_critical_count(50, 50) == critical_count(50, 50) == 966
    assert critical_count(60, 60) == normal_critical_count(60, 60)


def test_more_noise_needs_more_samples_and_none_need_no_more_than_the_minimum():
    assert samples_to_resolve([0.0] * 6) == MIN_SAMPLES
    quiet, loud = (
        samples_to_resolve([0.02 * x for x in range(-3, 4)]),
        samples_to_resolve([0.2 * x for x in range(-3, 4)]),
    )
    assert quiet < loud
    assert samples_to_resolve([5.0 * x for x in range(-3, 4)]) is None


def test_kept_iterations_and_spread():
    assert kept_iterations({"warmup": [9.0, 1.0, 2.0], "profiled": [3.0]}) == [1.0, 2.0, 3.0]
    # The warmups the throwaway warm-up capture spanned are no samples; at least the first is not.
    assert kept_iterations({"warmup": [9.0, 4.0, 1.0, 2.0], "warmup_in_capture": 2, "profiled": [3.0]}) == [1, 2, 3]
    assert kept_iterations({"warmup": [9.0, 1.0, 2.0], "warmup_in_capture": 0, "profiled": [3.0]}) == [1, 2, 3]
    assert spread([1.0, 1.0, 1.1, 0.9, 10.0]) == pytest.approx(0.1)


def test_zero_times_do_not_break_the_rule():
    c = compare([0.0, 1.0, 1.0, 1.1, 0.9], [1.0, 1.0, 1.05, 0.95, 1.0])
    assert c.verdict == "within noise"
