"""Capture instant arithmetic (pure)."""

from ray_tpu_profile.schedule import CLIENT_SETUP_MS, NS_PER_MS, capture_instant_ns, split_trace_delay, spread_ms


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


def test_spread():
    assert spread_ms({}) is None
    assert spread_ms({"a": 5 * NS_PER_MS, "b": 5 * NS_PER_MS + 250_000}) == 0.25
