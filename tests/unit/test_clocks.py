"""The clock offset estimator and the skew on the driver's time base, on synthetic
exchanges whose true offset is known (clocks.py is pure)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from ray_tpu_profile.core.clocks import (
    ClockError,
    ClockOffset,
    ClockSample,
    NtpState,
    describe_skew,
    estimate_offset,
    skew,
    untrusted_reason,
)
from ray_tpu_profile.driver import clock_exchange

MS = 1_000_000
T0 = 1_800_000_000 * 10**9


def exchange(sent_ns: int, out_ns: int, back_ns: int, true_offset_ns: int) -> ClockSample:
    """A call that took out_ns to reach the host and back_ns to come back."""
    return ClockSample(sent_ns, sent_ns + out_ns + true_offset_ns, sent_ns + out_ns + back_ns)


def test_symmetric_delays_give_the_offset_exactly():
    samples = [exchange(T0 + i * 10 * MS, 300_000, 300_000, 7 * MS) for i in range(5)]
    est = estimate_offset(samples)
    assert est.offset_ns == 7 * MS and est.uncertainty_ns == 300_000 and est.round_trip_ns == 600_000


@pytest.mark.parametrize("out_ns, back_ns", [(50_000, 950_000), (950_000, 50_000), (1, 999_999)])
def test_asymmetric_delays_stay_within_the_uncertainty(out_ns, back_ns):
    true = -3 * MS
    est = estimate_offset([exchange(T0 + i * MS, out_ns, back_ns, true) for i in range(3)])
    assert est.offset_ns != true  # the midpoint is fooled by the asymmetry...
    assert abs(est.offset_ns - true) <= est.uncertainty_ns == 500_000  # ...but only as far as it says


def test_the_shortest_round_trip_is_used_and_outliers_do_not_count():
    true = 12 * MS
    samples = [
        exchange(T0, 40 * MS, 2 * MS, true),  # queued on the way out: 21 ms off at the midpoint
        exchange(T0 + 100 * MS, 200_000, 250_000, true),
        exchange(T0 + 200 * MS, 1 * MS, 30 * MS, true),
        exchange(T0 + 300 * MS, 600_000, 600_000, true),
    ]
    est = estimate_offset(samples)
    assert est.round_trip_ns == 450_000 and abs(est.offset_ns - true) <= est.uncertainty_ns
    assert est.round_trips_ns == (42 * MS, 450_000, 31 * MS, 1_200_000)


def test_samples_together_bound_the_offset_tighter_than_the_shortest_round_trip():
    """The host read its clock early in one call and late in another: each call alone
    allows +-0.5 ms, the two together +-0.1 ms around the truth."""
    true = 5 * MS
    samples = [
        exchange(T0, 100_000, 900_000, true),
        exchange(T0 + MS, 900_000, 100_000, true),
        exchange(T0 + 2 * MS, 500_000, 500_000, true),
    ]
    est = estimate_offset(samples)
    assert est.offset_ns == true and est.uncertainty_ns == 100_000 and est.round_trip_ns == MS


def test_clocks_that_moved_apart_during_the_exchange_fall_back_to_the_shortest_round_trip():
    # the host's clock stepped 3 ms forward between the second and third call
    samples = [
        exchange(T0, 200_000, 200_000, 0),
        exchange(T0 + MS, 300_000, 300_000, 0),
        exchange(T0 + 2 * MS, 300_000, 300_000, 3 * MS),
    ]
    est = estimate_offset(samples)
    assert est.offset_ns == 0 and est.uncertainty_ns == 200_000


def test_too_few_samples_say_so():
    with pytest.raises(ClockError, match="2 usable clock round trip"):
        estimate_offset([exchange(T0, 1, 1, 0), exchange(T0 + MS, 1, 1, 0)])
    # an answer "received" before it was sent (the driver's clock stepped back) is no sample
    backwards = ClockSample(T0, T0, T0 - MS)
    with pytest.raises(ClockError, match="2 usable clock round trip.*of 3"):
        estimate_offset([exchange(T0, 1, 1, 0), exchange(T0 + MS, 1, 1, 0), backwards])


def test_odd_round_trips_keep_the_bound_covering():
    est = estimate_offset([ClockSample(T0, T0 + 2, T0 + 3)] * 3)  # host read its clock at T0+2 of [T0, T0+3]
    assert est.uncertainty_ns == 2 and abs(est.offset_ns) <= est.uncertainty_ns


def test_to_host_and_back():
    offset = ClockOffset(offset_ns=5 * MS, uncertainty_ns=100, round_trip_ns=200, round_trips_ns=(200,))
    assert offset.to_host_ns(T0) == T0 + 5 * MS and offset.to_driver_ns(T0 + 5 * MS) == T0
    assert offset.to_json()["offset_ms"] == 5.0 and offset.to_json()["round_trips_ms"] == [0.0002]


def offset(offset_ms: float, uncertainty_ms: float) -> ClockOffset:
    return ClockOffset(round(offset_ms * MS), round(uncertainty_ms * MS), round(2 * uncertainty_ms * MS), ())


def test_skew_on_the_driver_clock_with_its_bound_and_the_raw_figure():
    # host b's clock is 20 ms ahead; it began 0.3 ms after a in driver time, i.e. 20.3 ms later on its own clock
    starts = {"a": T0, "b": T0 + 20 * MS + 300_000, "c": T0 + 100_000}
    result = skew(starts, {"a": offset(0, 0.1), "b": offset(20, 0.4), "c": offset(0, 0.2)})
    assert result.skew_ms == pytest.approx(0.3) and result.raw_ms == pytest.approx(20.3)
    assert result.uncertainty_ms == pytest.approx(0.6)  # the two largest: 0.4 + 0.2
    assert result.describe() == "0.300 ms (+-0.600 ms clock uncertainty; 20.300 ms on the hosts' own clocks)"


def test_skew_of_one_host_is_exact_and_unmeasured_offsets_leave_the_bound_unknown():
    assert skew({"a": T0}, {"a": offset(1, 0.5)}).uncertainty_ms == 0.0
    partial = skew({"a": T0, "b": T0 + MS}, {"a": offset(0, 0.1)})
    assert partial.skew_ms == pytest.approx(1.0) and partial.uncertainty_ms is None
    assert skew({}, {}).skew_ms is None and describe_skew(None) == "no capture start"


def test_untrusted_clocks_are_named():
    good = NtpState(synchronised=True, estimated_error_ms=0.1, maximum_error_ms=1.0)
    assert untrusted_reason(offset(3, 0.2), good, 1.0) is None
    assert (
        untrusted_reason(offset(3, 1.5), good, 1.0)
        == "its clock offset is only known to +-1.500 ms (over --max-clock-uncertainty-ms 1)"
    )
    unsync = NtpState(synchronised=False, estimated_error_ms=16000, maximum_error_ms=16000)
    assert "not synchronised" in untrusted_reason(offset(0, 0.1), unsync, 1.0)
    assert untrusted_reason(offset(0, 0.1), None, 1.0) is None  # no NTP state known: only the bound counts


def test_measure_offsets_on_host_handles_with_shifted_clocks():
    """clock_exchange over plain futures: each host answers its clock + a known shift."""
    import time

    def clock(shift_ns: int):
        def call() -> Future:
            future: Future = Future()
            future.set_result(time.time_ns() + shift_ns)
            return future

        return call

    def broken() -> Future:
        future: Future = Future()
        future.set_exception(ConnectionError("actor gone"))
        return future

    found = clock_exchange.measure_offsets(
        {
            name: clock_exchange.actor_call_sampler(call)
            for name, call in (("a", clock(0)), ("b", clock(-40 * MS)), ("c", broken))
        }
    )
    assert abs(found["a"].offset_ns) <= found["a"].uncertainty_ns
    assert abs(found["b"].offset_ns + 40 * MS) <= found["b"].uncertainty_ns
    assert len(found["a"].round_trips_ns) == clock_exchange.ROUND_TRIPS
    assert isinstance(found["c"], ConnectionError)
