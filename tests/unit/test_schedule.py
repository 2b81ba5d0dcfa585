"""Capture instant arithmetic (pure)."""

from ray_tpu_profile.core.schedule import (
    CALL_TOLERANCE_NS,
    CLIENT_SETUP_MS,
    LEAD_IN_MS,
    NS_PER_MS,
    capture_instant_ns,
    capture_instants_ns,
    plan_again,
    split_trace_delay,
    spread_ms,
)


def test_instant_is_lead_ahead():
    assert capture_instant_ns(10 * NS_PER_MS, lead_ms=300) == 310 * NS_PER_MS


def test_split_delay_lands_on_the_start():
    start = 1_000_000 * NS_PER_MS + 123_456  # not on a millisecond boundary
    for now in (start - 500 * NS_PER_MS, start - 21 * NS_PER_MS - 7, start - 5 * NS_PER_MS - 7, start + NS_PER_MS):
        call_at, delay_ms = split_trace_delay(start, now)
        assert delay_ms >= 0
        if start - now >= CLIENT_SETUP_MS * NS_PER_MS:
            # calling at call_at with a whole-ms delay starts exactly at `start`,
            # leaving the client at least CLIENT_SETUP_MS to reach the server.
            assert call_at + delay_ms * NS_PER_MS == start
            assert start - call_at >= CLIENT_SETUP_MS * NS_PER_MS
            assert call_at >= now
        else:
            # too close to be exact: call at once, never asking for a start before `start`
            assert call_at == now and now + delay_ms * NS_PER_MS >= start
            assert delay_ms == (6 if now < start else 0)


def test_instants_with_and_without_delay():
    t = 7_000 * NS_PER_MS
    # a delay: iterations at T, the trace delay_ms into them
    assert capture_instants_ns(t, 250) == (t, t + 250 * NS_PER_MS)
    # no delay: the trace opens at T, on a quiet host, and the iterations follow it
    iterations, trace = capture_instants_ns(t, 0)
    assert trace == t and iterations == t + LEAD_IN_MS * NS_PER_MS
    # a phase window measures from the iterations' start: no lead-in
    assert capture_instants_ns(t, 0, lead_in=False) == (t, t)


def test_late_client_call_is_planned_again_while_the_lead_allows():
    start = 1_000_000 * NS_PER_MS
    call_at, delay_ms = split_trace_delay(start, start - 300 * NS_PER_MS + 1)
    assert not plan_again(start, call_at, call_at)  # on time
    assert not plan_again(start, call_at, call_at + CALL_TOLERANCE_NS)
    late = call_at + CALL_TOLERANCE_NS + 1
    assert plan_again(start, call_at, late)
    # planned again from the late instant: the next whole ms, still landing on start
    again_at, again_ms = split_trace_delay(start, late)
    assert again_at >= late and again_at + again_ms * NS_PER_MS == start and again_ms == delay_ms - 1
    # a plan 22 ms ahead woken 2.5 ms late: a new plan would leave the client less than its
    # set-up time (and start at once, early), so the late call goes ahead as planned
    call_at, delay_ms = split_trace_delay(start, start - (CLIENT_SETUP_MS + 2) * NS_PER_MS)
    assert delay_ms == CLIENT_SETUP_MS + 2
    assert not plan_again(start, call_at, call_at + 2_500_000)
    assert plan_again(start, call_at, call_at + 1_500_000)  # 20.5 ms left: still worth a new plan


def test_spread():
    assert spread_ms({}) is None
    assert spread_ms({"a": 5 * NS_PER_MS, "b": 5 * NS_PER_MS + 250_000}) == 0.25
