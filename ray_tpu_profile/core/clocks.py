"""Each host's clock against the driver's, NTP-style, and what that means for the skew.
Pure: samples in, estimates out (the driver's exchange is in driver/clock_exchange.py, the host's
clock in host_clock.py).

The driver notes its clock before a call (sent), the host answers its own clock (host),
the driver notes its clock when the answer is back (received). Whatever the delays, the
host read its clock somewhere between sent and received, so with the host's offset o
(host clock = driver clock + o): host - received <= o <= host - sent. Every sample bounds
o so; together they bound it to the intersection of their intervals, which is never wider
than the shortest round trip's (NTP's midpoint of that one sample) and is narrower when
the host read its clock early in one call and late in another. The estimate is the
intersection's midpoint, known to +- half its width. Clocks that moved apart during the
exchange (a step, or drift over the few ms it takes) can leave no intersection: then the
shortest round trip alone is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ray_tpu_profile.core.schedule import NS_PER_MS, spread_ms
from ray_tpu_profile.errors import ToolError

MIN_SAMPLES = 3
"""Round trips needed for an estimate: one can be slowed by anything (a GC, a busy core)."""


@dataclass(frozen=True)
class ClockSample:
    """One exchange: driver clock before (sent_ns) and after (received_ns) the call, the
    host's clock as it answered (host_ns); all ns since the epoch."""

    sent_ns: int
    host_ns: int
    received_ns: int

    @property
    def round_trip_ns(self) -> int:
        return self.received_ns - self.sent_ns


class ClockError(ToolError, ValueError):
    """Too few usable round trips to say anything about a host's clock."""


@dataclass(frozen=True)
class ClockOffset:
    """A host's clock minus the driver's, as measured.

    Attributes:
        offset_ns: the estimate; the host's clock reads driver time + offset_ns.
        uncertainty_ns: the true offset lies within offset_ns +- this (half the width of what
            every sample allows; at most half the shortest round trip).
        round_trip_ns: the shortest round trip.
        round_trips_ns: every sample's round trip, in the order taken.
    """

    offset_ns: int
    uncertainty_ns: int
    round_trip_ns: int
    round_trips_ns: tuple[int, ...]

    def to_driver_ns(self, host_ns: int) -> int:
        """A time on the host's clock as the driver's clock read it then."""
        return host_ns - self.offset_ns

    def to_host_ns(self, driver_ns: int) -> int:
        """An instant on the driver's clock as the host's clock will read it."""
        return driver_ns + self.offset_ns

    def to_json(self) -> dict[str, Any]:
        return {
            "offset_ms": self.offset_ns / NS_PER_MS,
            "uncertainty_ms": self.uncertainty_ns / NS_PER_MS,
            "round_trip_ms": self.round_trip_ns / NS_PER_MS,
            "round_trips_ms": [rt / NS_PER_MS for rt in self.round_trips_ns],
        }


def estimate_offset(samples: Iterable[ClockSample], min_samples: int = MIN_SAMPLES) -> ClockOffset:
    """The offset bounded by every sample (see above). A sample whose answer came back
    before it was sent (the driver's clock stepped back meanwhile) says nothing and is
    dropped. Raises ClockError with fewer than min_samples usable ones."""
    samples = list(samples)
    usable = [s for s in samples if s.round_trip_ns >= 0]
    if len(usable) < min_samples:
        raise ClockError(f"{len(usable)} usable clock round trip(s) of {len(samples)}, need {min_samples}")
    low_ns = max(s.host_ns - s.received_ns for s in usable)
    high_ns = min(s.host_ns - s.sent_ns for s in usable)
    if low_ns > high_ns:  # no offset fits every sample: the clocks moved apart meanwhile
        best = min(usable, key=lambda s: s.round_trip_ns)
        low_ns, high_ns = best.host_ns - best.received_ns, best.host_ns - best.sent_ns
    width_ns = high_ns - low_ns
    # Midpoint without losing the odd nanosecond; the bound rounds up so it always covers.
    return ClockOffset(
        offset_ns=low_ns + width_ns // 2,
        uncertainty_ns=width_ns - width_ns // 2,
        round_trip_ns=min(s.round_trip_ns for s in usable),
        round_trips_ns=tuple(s.round_trip_ns for s in samples),
    )


@dataclass(frozen=True)
class Skew:
    """Capture start skew across hosts.

    Attributes:
        skew_ms: spread of the starts on the driver's time base (each host's start, read on
            its own clock, minus its offset); None with no start.
        uncertainty_ms: how far skew_ms can be off, from the offsets' uncertainties (the two
            largest: the spread's two ends can each be off by their own).
        raw_ms: spread of the starts as each host's own clock stamped them.
    """

    skew_ms: float | None
    uncertainty_ms: float | None
    raw_ms: float | None

    def describe(self) -> str:
        return describe_skew(self.skew_ms, self.uncertainty_ms, self.raw_ms)


def describe_skew(skew_ms: float | None, uncertainty_ms: float | None = None, raw_ms: float | None = None) -> str:
    """e.g. "0.210 ms (+-0.300 ms clock uncertainty; 0.190 ms on the hosts' own clocks)"."""
    if skew_ms is None:
        return "no capture start"
    notes = ([f"+-{uncertainty_ms:.3f} ms clock uncertainty"] if uncertainty_ms is not None else []) + (
        [f"{raw_ms:.3f} ms on the hosts' own clocks"] if raw_ms is not None else []
    )
    return f"{skew_ms:.3f} ms" + (f" ({'; '.join(notes)})" if notes else "")


def skew(starts_host_ns: Mapping[str, int], offsets: Mapping[str, ClockOffset]) -> Skew:
    """The skew of starts stamped by each host's clock. A host without an offset (none
    was measured) counts with offset 0 and leaves the bound unknown."""
    if not starts_host_ns:
        return Skew(None, None, None)
    on_driver = {name: offsets[name].to_driver_ns(t) if name in offsets else t for name, t in starts_host_ns.items()}
    uncertainty_ms = None
    if all(name in offsets for name in starts_host_ns):
        bounds = sorted((offsets[name].uncertainty_ns for name in starts_host_ns), reverse=True)
        uncertainty_ms = sum(bounds[:2]) / NS_PER_MS if len(bounds) > 1 else 0.0
    return Skew(skew_ms=spread_ms(on_driver), uncertainty_ms=uncertainty_ms, raw_ms=spread_ms(starts_host_ns))


@dataclass(frozen=True)
class NtpState:
    """What the host's kernel says of its own clock discipline (adjtimex, read-only).

    Attributes:
        synchronised: False when the kernel marks the clock unsynchronised (STA_UNSYNC or
            TIME_ERROR), which is what an NTP daemon that lost its servers leaves.
        estimated_error_ms, maximum_error_ms: the kernel's esterror and maxerror.
    """

    synchronised: bool
    estimated_error_ms: float
    maximum_error_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "synchronised": self.synchronised,
            "estimated_error_ms": self.estimated_error_ms,
            "maximum_error_ms": self.maximum_error_ms,
        }


def untrusted_reason(offset: ClockOffset, ntp: NtpState | None, max_uncertainty_ms: float) -> str | None:
    """Why a host's clock should not be trusted for sub-millisecond alignment, if it should not."""
    reasons = []
    if offset.uncertainty_ns / NS_PER_MS > max_uncertainty_ms:
        reasons.append(
            f"its clock offset is only known to +-{offset.uncertainty_ns / NS_PER_MS:.3f} ms "
            f"(over --max-clock-uncertainty-ms {max_uncertainty_ms:g})"
        )
    if ntp is not None and not ntp.synchronised:
        reasons.append("its kernel says the clock is not synchronised (NTP)")
    return "; ".join(reasons) or None
