"""The clock exchange over UDP (issue 26): a real echo thread and real datagrams on
loopback, the driver's sampler and estimator; the fallback to actor calls."""

from __future__ import annotations

import socket
import time
from concurrent.futures import Future

import pytest

from ray_tpu_profile.core import host_clock
from ray_tpu_profile.driver import clock_exchange
from ray_tpu_profile.host.clock_echo import REPLY, REQUEST, TOKEN_BYTES, ClockEcho

LOOPBACK = "127.0.0.1"
MS = 1_000_000


@pytest.fixture
def token():
    import secrets

    return secrets.token_bytes(TOKEN_BYTES)


def test_offsets_over_udp_are_known_to_a_fraction_of_a_millisecond(monkeypatch, token):
    """A host whose clock reads 7 ms ahead of the driver's: found within its uncertainty,
    which is half the shortest round trip of 48 datagrams (tens of microseconds here)."""
    monkeypatch.setattr(host_clock, "now_ns", lambda: time.time_ns() + 7 * MS)
    echo = ClockEcho(token, LOOPBACK, LOOPBACK)
    try:
        found = clock_exchange.measure_offsets(
            {"h": clock_exchange.udp_sampler(echo.address, token, source_ip=LOOPBACK)}
        )["h"]
    finally:
        counts = echo.close()
    assert abs(found.offset_ns - 7 * MS) <= found.uncertainty_ns < MS, found
    assert len(found.round_trips_ns) == clock_exchange.UDP_ROUND_TRIPS
    assert counts == {"answered": clock_exchange.UDP_ROUND_TRIPS, "ignored": 0}


def test_the_echo_answers_only_its_token_from_the_drivers_address(token):
    echo = ClockEcho(token, LOOPBACK, LOOPBACK)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            sock.sendto(REQUEST.pack(b"x" * TOKEN_BYTES, 1), echo.address)  # wrong token
            sock.sendto(b"short", echo.address)  # not a request
            with pytest.raises(TimeoutError):
                sock.recv(64)
            sock.sendto(REQUEST.pack(token, 2), echo.address)
            answered_token, seq, host_ns = REPLY.unpack(sock.recv(64))
            assert (answered_token, seq) == (token, 2) and abs(host_ns - time.time_ns()) < 1000 * MS
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
            elsewhere.bind(("127.0.0.2", 0))  # another source address (loopback's /8)
            elsewhere.settimeout(0.3)
            elsewhere.sendto(REQUEST.pack(token, 3), echo.address)
            with pytest.raises(TimeoutError):
                elsewhere.recv(64)
    finally:
        counts = echo.close()
    assert counts == {"answered": 1, "ignored": 3}
    assert len(REPLY.pack(token, 1, 1)) <= len(REQUEST.pack(token, 1)) + 8  # no amplification beyond the clock


def test_a_host_whose_echo_does_not_answer_is_measured_over_actor_calls_and_says_why(token):
    echo = ClockEcho(token, LOOPBACK, LOOPBACK)
    address = echo.address
    echo.close()  # nothing answers there now

    def clock_call() -> Future:
        future: Future = Future()
        future.set_result(time.time_ns())
        return future

    found = clock_exchange.measure_with_fallback(
        {"a": clock_exchange.udp_sampler(address, token, reply_timeout_s=0.05, max_lost=2)},
        {"a": clock_exchange.actor_call_sampler(clock_call), "b": clock_exchange.actor_call_sampler(clock_call)},
    )
    offset, channel = found["a"]
    assert channel.startswith("actor call (udp: clock echo at 127.0.0.1:") and "3 of 3 datagrams unanswered" in channel
    assert abs(offset.offset_ns) <= offset.uncertainty_ns
    assert found["b"][1] == "actor call (no clock echo)"
    assert len(offset.round_trips_ns) == clock_exchange.ROUND_TRIPS


def test_datagrams_from_another_of_the_drivers_addresses_are_not_answered(token):
    """The echo answers the driver's address only: a sampler sending from another address
    of the same machine (127.0.0.2 here) gets nothing back and gives up after max_lost."""
    echo = ClockEcho(token, LOOPBACK, LOOPBACK)
    try:
        sampler = clock_exchange.udp_sampler(
            echo.address, token, reply_timeout_s=0.05, max_lost=1, source_ip="127.0.0.2"
        )
        with pytest.raises(clock_exchange.ClockError, match="2 of 2 datagrams unanswered"):
            sampler()
    finally:
        counts = echo.close()
    assert counts == {"answered": 0, "ignored": 2}


def test_an_echo_left_open_is_closed_by_close_and_says_what_it_answered(token):
    echo = ClockEcho(token, LOOPBACK, LOOPBACK)
    assert echo.close() == {"answered": 0, "ignored": 0}
    assert not echo._thread.is_alive()  # woken by close, not left to its idle timeout
    assert echo.close() == {"answered": 0, "ignored": 0}  # twice is harmless
    with pytest.raises(ValueError, match="16 bytes, not 3"):
        ClockEcho(b"abc", LOOPBACK, LOOPBACK)
