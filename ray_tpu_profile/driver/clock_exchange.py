"""The driver's side of the clock exchange: round trips to each host's clock, one after
another per host and hosts side by side, each timed on the driver's clock; each host's
offset estimated from them (clocks.estimate_offset).

Two channels. UDP (the default): datagrams to a small echo in each host's actor
(host/clock_echo.py) at the host's node address, UDP_ROUND_TRIPS of them; a round trip is
tens of microseconds, not the millisecond of an actor call through Ray. Actor calls (the
fallback, for a host whose echo could not be opened or answered): ROUND_TRIPS calls of its
clock. Works on plain callables, so it runs without a cluster in tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray_tpu_profile.core.clocks import ClockError, ClockOffset, ClockSample, estimate_offset

ROUND_TRIPS = 8
"""Per host per measurement over actor calls: enough that one of them usually meets no
queue on the way (the round-trip floor on this machine is in bench/RESULTS.md)."""
UDP_ROUND_TRIPS = 48
"""Per host per measurement over UDP: cheap (48 round trips are a few ms), and more of them
narrow the intersected bounds."""
UDP_REPLY_TIMEOUT_S = 0.2
UDP_MAX_LOST = 8
"""Datagrams lost (no reply within UDP_REPLY_TIMEOUT_S) before the channel is given up for
that host: it falls back to actor calls."""
CALL_TIMEOUT_S = 30.0
"""One clock call on a live host answers in milliseconds; a host that does not within this
is not going to."""
PARALLEL_HOSTS = 16
"""Hosts measured at once: more would queue on the driver and lengthen every round trip."""

CHANNEL_UDP = "udp"
CHANNEL_ACTOR_CALL = "actor call"

Sampler = Callable[[], list[ClockSample]]
"""One host's round trips, taken when called."""


def actor_call_sampler(
    clock_call: Callable[[], Any], round_trips: int = ROUND_TRIPS, timeout_s: float = CALL_TIMEOUT_S
) -> Sampler:
    """round_trips exchanges with one host; clock_call() returns a future of its clock (ns)."""

    def sample() -> list[ClockSample]:
        samples = []
        for _ in range(round_trips):
            sent_ns = time.time_ns()
            host_ns = clock_call().result(timeout=timeout_s)
            samples.append(ClockSample(sent_ns, int(host_ns), time.time_ns()))
        return samples

    return sample


def udp_sampler(
    address: tuple[str, int],
    token: bytes,
    round_trips: int = UDP_ROUND_TRIPS,
    reply_timeout_s: float = UDP_REPLY_TIMEOUT_S,
    max_lost: int = UDP_MAX_LOST,
    source_ip: str | None = None,
) -> Sampler:
    """round_trips datagrams to one host's clock echo at address (host/clock_echo.py), sent
    from source_ip where given (the driver's address the echo answers: on a host with
    several addresses the kernel might pick another); ClockError when more than max_lost go
    unanswered."""
    from ray_tpu_profile.host.clock_echo import REPLY, REQUEST

    def sample() -> list[ClockSample]:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        samples: list[ClockSample] = []
        lost = 0
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if source_ip is not None:
                sock.bind((source_ip, 0))
            sock.connect(address)  # only that address's datagrams are received
            sock.settimeout(reply_timeout_s)
            seq = 0
            while len(samples) < round_trips:
                seq += 1
                sent_ns = time.time_ns()
                sock.send(REQUEST.pack(token, seq))
                try:
                    while True:  # a late answer to an earlier datagram is passed over
                        data = sock.recv(REPLY.size + 1)
                        received_ns = time.time_ns()
                        if len(data) == REPLY.size:
                            answered_token, answered_seq, host_ns = REPLY.unpack(data)
                            if answered_token == token and answered_seq == seq:
                                break
                except (TimeoutError, ConnectionRefusedError) as e:
                    lost += 1
                    if lost > max_lost:
                        raise ClockError(
                            f"clock echo at {address[0]}:{address[1]}: {lost} of {seq} datagrams unanswered "
                            f"({type(e).__name__})"
                        ) from None
                    continue
                samples.append(ClockSample(sent_ns, host_ns, received_ns))
        return samples

    return sample


def measure_offsets(samplers: dict[str, Sampler]) -> dict[str, ClockOffset | BaseException]:
    """Each host's offset, or the error that kept it from being measured (that host's alone)."""

    def one(name: str) -> ClockOffset | BaseException:
        try:
            return estimate_offset(samplers[name]())
        except Exception as e:  # returned per host: the caller fails that host, the rest go on
            return e

    if not samplers:
        return {}
    with ThreadPoolExecutor(max_workers=min(PARALLEL_HOSTS, len(samplers))) as pool:
        return dict(zip(samplers, pool.map(one, samplers)))


def measure_with_fallback(
    udp: dict[str, Sampler], actor_calls: dict[str, Sampler]
) -> dict[str, tuple[ClockOffset | BaseException, str]]:
    """Each host's (offset or error, channel): over UDP where it has a sampler there, else,
    or where UDP failed, over actor calls (the channel then says why UDP was not used)."""
    results: dict[str, tuple[ClockOffset | BaseException, str]] = {}
    udp_errors: dict[str, str] = {}
    for name, found in measure_offsets(udp).items():
        if isinstance(found, BaseException):
            udp_errors[name] = f"udp: {found}"
        else:
            results[name] = (found, CHANNEL_UDP)
    fallback = {name: sampler for name, sampler in actor_calls.items() if name not in results}
    for name, found in measure_offsets(fallback).items():
        results[name] = (found, f"{CHANNEL_ACTOR_CALL} ({udp_errors.get(name, 'no clock echo')})")
    return results
