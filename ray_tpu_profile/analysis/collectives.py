"""Which chip or host the others wait for: every collective occurrence matched across its
participants (the devices of one engine, on one host and across hosts), on the driver's
clock. Pure: participants' events in, occurrences and stragglers out.

Matching. The same collective call carries different `run_id` / `all_reduce_unique_id` on
different chips (a chip that ran other programs first has other ids), so those are never
used: the calls of a collective op of one program (program_id, else the XLA module's name)
with one op name are matched in order across participants. Captures start at one instant
only to within a few ms, so one participant's trace may begin a call or two after
another's: each participant's sequence is aligned to the first's by the index shift that
brings their ends together (a collective completes on all participants together, once the
last one's data is in), and only calls every participant traced are occurrences.

Times. Every participant's times are shifted onto the driver's clock by its host's measured
offset (ClockOffset.to_driver_ns); the bound on a difference of two hosts' times is the sum
of their offsets' uncertainties. A collective's op starts on all participants together once
the last has arrived, so the spread of the op starts after correction is an independent
check of the correction: an occurrence whose spread exceeds the bound says so. (Host-level
ops hold their wait, so there it is their ends that meet: see Occurrence.together_at.)

Arrival. When the participant reached the collective: the start of a wait event of its own
just before the op where the trace has one (`barrier-cores`, `dependency-wait` on TPU),
else the start of its enclosing module execution where the trace has modules and the op is
the module's first collective, else the op's own start (host-level collectives, where the
op's duration includes its wait). Its wait is from its arrival until the last participant
arrived.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate

COLLECTIVE_CATEGORIES = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
    "send",
    "recv",
    "collective-broadcast",
)
TOGETHER_NS = 1_000
"""Arrivals closer than this (or than the clocks' bound) are together: no one was last."""
WAIT_EVENTS = ("barrier-cores", "dependency-wait")
"""TraceMe events in which a TPU chip waits for the others before a collective."""
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Participant:
    """A device (or, without device planes, a host's process) taking part in collectives."""

    host: str
    device: str
    """The plane name (`/device:TPU:0`); for a host-level participant (a traced process
    without device planes) `host`, or `rank N` where a host delivered several."""

    @property
    def host_level(self) -> bool:
        return not self.device.startswith("/device:")


@dataclass(frozen=True, slots=True)
class CollectiveOp:
    """One execution of a collective op on one participant, on its host's clock."""

    name: str
    program: str
    """program_id, else the XLA module's name (what one compiled program's calls share)."""
    start_ns: int
    duration_ns: int
    arrive_ns: int
    """When the participant reached it (see the module docstring); <= start_ns."""


@dataclass(slots=True)
class Arrival:
    """One participant's part in one occurrence, on the driver's clock."""

    participant: Participant
    arrive_ns: int
    start_ns: int
    duration_ns: int
    wait_ns: int = 0

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass
class Occurrence:
    """The k-th call of one collective of one program, across its participants."""

    name: str
    program: str
    occurrence: int
    arrivals: list[Arrival]
    bound_ns: int | None
    """Clock-alignment bound on differences between these participants' times (0 on one
    host; None when some host's offset was not measured)."""

    @cached_property
    def last(self) -> Arrival:
        return max(self.arrivals, key=lambda a: (a.arrive_ns, a.participant.host, a.participant.device))

    @property
    def max_wait_ns(self) -> int:
        return max(a.wait_ns for a in self.arrivals)

    @property
    def has_last(self) -> bool:
        """Whether someone arrived last by more than the clocks can tell apart."""
        return self.max_wait_ns > max(self.bound_ns or 0, TOGETHER_NS)

    @property
    def start_spread_ns(self) -> int:
        starts = [a.start_ns for a in self.arrivals]
        return max(starts) - min(starts)

    @property
    def end_spread_ns(self) -> int:
        ends = [a.end_ns for a in self.arrivals]
        return max(ends) - min(ends)

    @property
    def together_at(self) -> str:
        """Where the participants' ops meet, so where their spread checks the clocks: a
        device op starts on all chips together once the last has arrived; a host-level
        op (which holds its wait) ends on all ranks together."""
        return "end" if all(a.participant.host_level for a in self.arrivals) else "start"

    @property
    def spread_exceeds_bound(self) -> bool | None:
        if self.bound_ns is None:
            return None
        spread = self.end_spread_ns if self.together_at == "end" else self.start_spread_ns
        return spread > self.bound_ns

    def to_json(self) -> dict:
        last = self.last.participant
        return {
            "name": self.name,
            "program": self.program,
            "occurrence": self.occurrence,
            "participants": [
                {
                    "host": a.participant.host,
                    "device": a.participant.device,
                    "arrive_ns": a.arrive_ns,
                    "start_ns": a.start_ns,
                    "duration_ms": a.duration_ns / NS_PER_MS,
                    "wait_ms": a.wait_ns / NS_PER_MS,
                }
                for a in self.arrivals
            ],
            "last": {"host": last.host, "device": last.device},
            "max_wait_ms": self.max_wait_ns / NS_PER_MS,
            "start_spread_ms": self.start_spread_ns / NS_PER_MS,
            "end_spread_ms": self.end_spread_ns / NS_PER_MS,
            "together_at": self.together_at,
            "bound_ms": None if self.bound_ns is None else self.bound_ns / NS_PER_MS,
            "spread_exceeds_bound": self.spread_exceeds_bound,
        }


def is_collective(name: str, category: str | None) -> bool:
    """A collective op, by its hlo_category where the trace has one, else by its HLO name
    (`all-reduce.3`, `all-gather-start.1`, ...)."""
    text = (category or name).lower()
    return any(text.startswith(c) for c in COLLECTIVE_CATEGORIES)


def match_occurrences(
    ops: Mapping[Participant, Iterable[CollectiveOp]],
    to_driver_ns: Mapping[str, Callable[[int], int]] | None = None,
    uncertainty_ns: Mapping[str, int] | None = None,
) -> list[Occurrence]:
    """Occurrences of every collective that all participants ran, in time order.

    ops: each participant's collective ops (any order). to_driver_ns: host -> a callable
    taking a host-clock time to the driver's clock (ClockOffset.to_driver_ns); hosts
    without one keep their own clock. uncertainty_ns: host -> its offset's uncertainty.
    Occurrences some participant did not run (its trace ended first) are left out."""
    shift = dict(to_driver_ns or {})
    uncertainty = dict(uncertainty_ns or {})
    sequences: dict[tuple[str, str], dict[Participant, list[CollectiveOp]]] = defaultdict(dict)
    for participant, calls in ops.items():
        for op in sorted(calls, key=lambda o: o.start_ns):
            sequences[(op.program, op.name)].setdefault(participant, []).append(op)
    participants = list(ops)
    found = []
    for (program, name), by_participant in sequences.items():
        if set(by_participant) != set(participants):
            continue  # not a collective of all of them (another group's, or one trace lacks it)
        hosts = {p.host for p in participants}
        bound_ns: int | None = 0
        if len(hosts) > 1:
            known = sorted((uncertainty[h] for h in hosts if h in uncertainty), reverse=True)
            bound_ns = sum(known[:2]) if len(known) == len(hosts) else None
        on_driver = {p: [_on_driver(p, op, shift.get(p.host)) for op in by_participant[p]] for p in participants}
        reference = on_driver[participants[0]]
        shifts = {p: sequence_shift(reference, calls) for p, calls in on_driver.items()}
        first = max(0, *(-s for s in shifts.values()))
        past = min(len(reference), *(len(on_driver[p]) - s for p, s in shifts.items()))
        for k in range(first, past):
            # Each participant's call is in one occurrence at most: its Arrival is used as is.
            arrivals = [on_driver[p][k + shifts[p]] for p in participants]
            latest = max(a.arrive_ns for a in arrivals)
            for a in arrivals:
                a.wait_ns = latest - a.arrive_ns
            found.append(Occurrence(name, program, k - first, arrivals, bound_ns))
    found.sort(key=lambda o: (min(a.start_ns for a in o.arrivals), o.program, o.name))
    return found


SHIFT_PROBES = 5
"""Places in the reference sequence from which candidate shifts are taken."""
SHIFT_SAMPLES = 201
"""Calls compared to score a candidate shift (evenly spaced over the overlap)."""


def sequence_shift(reference: list[Arrival], calls: list[Arrival]) -> int:
    """The s for which calls[k + s] is the reference's k-th call: of the shifts that put a
    call's end nearest a reference call's end at a few probe places, the one whose median
    end difference over the overlap is smallest (ties: the smaller shift)."""
    if not reference or not calls:
        return 0
    ends = [a.end_ns for a in calls]
    reference_ends = [a.end_ns for a in reference]
    candidates = {0}
    for probe in {round(i * (len(reference) - 1) / max(1, SHIFT_PROBES - 1)) for i in range(SHIFT_PROBES)}:
        j = bisect.bisect_left(ends, reference_ends[probe])
        candidates.update(j + d - probe for d in (-1, 0) if 0 <= j + d < len(ends))

    def score(s: int) -> tuple[float, int, int]:
        overlap = range(max(0, -s), min(len(reference), len(ends) - s))
        if not overlap:
            return (float("inf"), 0, abs(s))
        step = max(1, len(overlap) // SHIFT_SAMPLES)
        gaps = [abs(ends[k + s] - reference_ends[k]) for k in overlap[::step]]
        return (statistics.median(gaps), -len(overlap), abs(s))

    return min(candidates, key=score)


def _on_driver(participant: Participant, op: CollectiveOp, to_driver: Callable[[int], int] | None) -> Arrival:
    def move(t: int) -> int:
        return to_driver(t) if to_driver else t

    return Arrival(participant, move(op.arrive_ns), move(op.start_ns), op.duration_ns)


@dataclass
class Straggler:
    """Per engine: who arrived last how often, and what it cost the others."""

    engine: str
    occurrences: int
    last_counts: dict[Participant, int] = field(default_factory=dict)
    waited_ns: dict[Participant, int] = field(default_factory=dict)
    """Total wait each participant inflicted on the others when it arrived last."""
    wait_per_step_ns: list[int] = field(default_factory=list)
    """Per step (engine step window), the others' wait summed over its occurrences."""
    step_ns: list[int] = field(default_factory=list)
    participants: int = 2
    """Participants per occurrence: by chance each is last at 1/participants of them."""

    @property
    def dominated(self) -> bool:
        """Whether the worst participant is last more often than chance explains (see
        dominates): with clocks known to microseconds every occurrence has a last arrival,
        and between even hosts it is a coin toss."""
        worst = self.worst
        if worst is None:
            return False
        total_wait_ns = sum(self.waited_ns.values())
        wait_share = self.waited_ns.get(worst, 0) / total_wait_ns if total_wait_ns else 0.0
        return dominates(self.last_counts[worst], sum(self.last_counts.values()), self.participants, wait_share)

    @property
    def worst(self) -> Participant | None:
        if not self.last_counts:
            return None
        return max(self.last_counts, key=lambda p: (self.last_counts[p], self.waited_ns.get(p, 0)))

    def to_json(self) -> dict:
        worst = self.worst
        return {
            "engine": self.engine,
            "occurrences": self.occurrences,
            "last": [
                {"host": p.host, "device": p.device, "times": n, "waited_ms": self.waited_ns.get(p, 0) / NS_PER_MS}
                for p, n in sorted(self.last_counts.items(), key=lambda kv: -kv[1])
            ],
            "straggler": None if worst is None or not self.dominated else {"host": worst.host, "device": worst.device},
            "wait_per_step_ms": _median_ms(self.wait_per_step_ns),
            "steps_wait_ms": [w / NS_PER_MS for w in self.wait_per_step_ns],
            "wait_share_of_step": _share(self.wait_per_step_ns, self.step_ns),
            "verdict": self.verdict(),
        }

    def verdict(self) -> str:
        """One line for report.txt."""
        worst = self.worst
        if not self.occurrences:
            return f"{self.engine}: no collective ran on every participant"
        if worst is None:
            return (
                f"{self.engine}: every participant arrived together (within the clocks' bound) "
                f"at all {self.occurrences} collectives: no straggler"
            )
        who = worst.host if worst.device == "host" else f"{worst.host} {worst.device}"
        line = (
            f"{self.engine}: {who} arrived last at {self.last_counts[worst]} of {self.occurrences} collectives; "
            f"the others waited {self.waited_ns.get(worst, 0) / NS_PER_MS:.1f} ms on it in all"
        )
        per_step = _median_ms(self.wait_per_step_ns)
        share = _share(self.wait_per_step_ns, self.step_ns)
        step_cost = "" if per_step is None else f"{per_step:.2f} ms per step (median)"
        if step_cost and share is not None:
            step_cost += f", {100 * share:.0f}% of the step"
        if self.dominated:
            return line + (f", {step_cost}" if step_cost else "")
        # Last by chance: the per-step wait is not on it.
        return line + "; no participant dominates" + (f"; waits at collectives {step_cost}" if step_cost else "")


CHANCE_P = 0.001
"""A participant dominates when being last at least that often has this probability or
less by chance alone (each of n participants last at 1/n of the occurrences)."""
WAIT_SHARE = 0.8
"""Or, with too few occurrences for chance ever to be ruled out (being last at every one
would still be likelier than CHANCE_P), when the others' waits on it are at least this
share of all their waits. Not with more: a few long stalls of a host on busy cores take
most of the waits without it being last more often than chance (seen: 55 of 89)."""


def dominates(last_times: int, counted: int, participants: int, wait_share: float = 0.0) -> bool:
    """Whether last_times of counted occurrences (with a last arrival) is more than chance:
    a majority of them, and a one-sided binomial tail P(X >= last_times), X ~
    B(counted, 1/participants), of at most CHANCE_P (normal approximation beyond 1000
    occurrences); with too few occurrences for that, wait_share (its part of the waits it
    and the others inflicted) of at least WAIT_SHARE. Between even hosts whose clocks are known to microseconds every
    occurrence has a last arrival: 49 of 96 is a coin toss, not a straggler."""
    if counted == 0 or last_times * 2 <= counted:
        return False
    p = 1 / max(participants, 2)
    if p**counted > CHANCE_P:  # too few occurrences for the count to say anything
        return wait_share >= WAIT_SHARE
    if counted <= 1000:
        tail = sum(math.comb(counted, k) * p**k * (1 - p) ** (counted - k) for k in range(last_times, counted + 1))
    else:
        mean, sd = counted * p, math.sqrt(counted * p * (1 - p))
        tail = 0.5 * math.erfc((last_times - 0.5 - mean) / (sd * math.sqrt(2)))
    return tail <= CHANCE_P


def stragglers(engine: str, occurrences: list[Occurrence], steps_ns: Iterable[tuple[int, int]] = ()) -> Straggler:
    """Who holds engine back: the last arrival of each occurrence, the wait it inflicts on the
    others, and per step (steps_ns: (start, end) on the driver's clock) the others' wait."""
    result = Straggler(engine, len(occurrences), participants=max((len(o.arrivals) for o in occurrences), default=2))
    for o in occurrences:
        if not o.has_last:
            continue  # arrived together, as far as the clocks can tell
        last = o.last
        result.last_counts[last.participant] = result.last_counts.get(last.participant, 0) + 1
        inflicted = sum(a.wait_ns for a in o.arrivals)
        result.waited_ns[last.participant] = result.waited_ns.get(last.participant, 0) + inflicted
    # What a step lost to late arrivals: the longest wait of each occurrence whose last
    # arrival falls in it, summed (occurrences sorted once; each step a bisect).
    ordered = sorted((o.last.arrive_ns, o.max_wait_ns) for o in occurrences)
    arrivals = [t for t, _ in ordered]
    lost = list(accumulate((w for _, w in ordered), initial=0))
    for start, end in steps_ns:
        first, past = bisect.bisect_left(arrivals, start), bisect.bisect_left(arrivals, end)
        if past > first:
            result.wait_per_step_ns.append(lost[past] - lost[first])
            result.step_ns.append(end - start)
    return result


def _median_ms(values: list[int]) -> float | None:
    return statistics.median(values) / NS_PER_MS if values else None


def _share(waits: list[int], steps: list[int]) -> float | None:
    if not waits or not steps:
        return None
    return statistics.median(w / s for w, s in zip(waits, steps) if s > 0)
