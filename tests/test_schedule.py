"""Capture instant arithmetic (pure)."""

from ray_tpu_profile.schedule import (CALL_TOLERANCE_NS, CLIENT_SETUP_MS, LEAD_IN_MS, NS_PER_MS, capture_instant_ns,
                                     capture_instants_ns, plan_again, split_trace_delay, spread_ms)


def test_instant_is_lead_ahead():
    assert capture_instant_ns(10 * NS_PER_MS, lead_ms=300) == 310 * NS_PER_MS


def test_split_delay_lands_on_the_start():
    start = 1_000_000 * NS_PER_MS + 123_456  # not on a millisecond boundary
    for now in (start - 500 * NS_PER_MS, start - 21 * NS_PER_MS - 7, start - 5 * NS_PER_MS, start + NS_PER_MS):
        call_at, delay_ms = split_trace_delay(start, now)
        assert delay_ms >= 0
        if delay_ms:
            # calling at call_at with a whole-ms delay starts exactly at `start`,
            # leaving the client at least CLIENT_SETUP_MS to reach the server.
            assert call_at + delay_ms * NS_PER_MS == start
            assert start - call_at >= CLIENT_SETUP_MS * NS_PER_MS
            assert call_at >= now
        else:
            assert call_at == now  # too close to be exact: call at once, no delay


def test_instants_with_and_without_delay():
    t = 7_000 * NS_PER_MS
    # a delay: iterations at T, the trace delay_ms into them
    assert capture_instants_ns(t, 250) == (t, t + 250 * NS_PER_MS)
    # no delay: the trace opens at T, on a quiet host, and the iterations follow it
    iterations, trace = capture_instants_ns(t, 0)
    assert trace == t and iterations == t + LEAD_IN_MS * NS_PER_MS


def test_late_client_call_is_planned_again_while_the_lead_allows():
    start = 1_000_000 * NS_PER_MS
    call_at, delay_ms = split_trace_delay(start, start - 300 * NS_PER_MS + 1)
    assert not plan_again(call_at, call_at, delay_ms)  # on time
    assert not plan_again(call_at, call_at + CALL_TOLERANCE_NS, delay_ms)
    late = call_at + CALL_TOLERANCE_NS + 1
    assert plan_again(call_at, late, delay_ms)
    # planned again from the late instant: the next whole ms, still landing on start
    again_at, again_ms = split_trace_delay(start, late)
    assert again_at >= late and again_at + again_ms * NS_PER_MS == start and again_ms == delay_ms - 1
    # with only the client's set-up time left, a late call goes ahead (late beats never)
    call_at, delay_ms = split_trace_delay(start, start - (CLIENT_SETUP_MS + 1) * NS_PER_MS)
    assert delay_ms == CLIENT_SETUP_MS + 1 and not plan_again(call_at, call_at + NS_PER_MS // 2, delay_ms)
    call_at, delay_ms = split_trace_delay(start, start - NS_PER_MS)  # too late to be exact: at once
    assert not plan_again(call_at, call_at + NS_PER_MS, delay_ms)


def test_spread():
    assert spread_ms({}) is None
    assert spread_ms({"a": 5 * NS_PER_MS, "b": 5 * NS_PER_MS + 250_000}) == 0.25
