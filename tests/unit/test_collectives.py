"""Collectives matched across participants on the driver's clock: arrivals, waits, the last
arrival, the start spread as a check of the clock correction, and stragglers."""

from __future__ import annotations

from ray_tpu_profile.analysis.collectives import (
    CollectiveOp,
    Participant,
    is_collective,
    match_occurrences,
    stragglers,
)
from ray_tpu_profile.core.clocks import ClockOffset

MS = 1_000_000
A0, A1 = Participant("host-a", "/device:TPU:0"), Participant("host-a", "/device:TPU:1")
B0, B1 = Participant("host-b", "/device:TPU:0"), Participant("host-b", "/device:TPU:1")
SKEW_NS = 40 * MS
"""host-b's clock reads 40 ms ahead of the driver's (and of host-a's, which is exact)."""


def op(arrive_ms: float, start_ms: float, name="all-reduce.1", program="7", host_b=False, duration_ms=0.5):
    shift = SKEW_NS if host_b else 0
    return CollectiveOp(
        name, program, round(start_ms * MS) + shift, round(duration_ms * MS), round(arrive_ms * MS) + shift
    )


def steps_with_a1_late():
    """Three steps of one all-reduce each: every chip arrives at 10 ms into the step except
    host-a's TPU 1, 3 ms late; the op starts on all chips once it is there (plus 2 us jitter)."""
    ops = {p: [] for p in (A0, A1, B0, B1)}
    for step in range(3):
        t0 = 100.0 * step
        for p in ops:
            late = 3.0 if p == A1 else 0.0
            jitter = 0.002 if p.host == "host-b" else 0.0
            ops[p].append(op(t0 + 10 + late, t0 + 13 + jitter, host_b=p.host == "host-b"))
    return ops


def corrections(offset_ns=SKEW_NS, uncertainty_ns=50_000):
    offsets = {"host-a": ClockOffset(0, uncertainty_ns, 0, ()), "host-b": ClockOffset(offset_ns, uncertainty_ns, 0, ())}
    return {h: o.to_driver_ns for h, o in offsets.items()}, {h: o.uncertainty_ns for h, o in offsets.items()}


def test_on_the_driver_s_clock_the_late_chip_is_last_and_the_others_wait_for_it():
    shift, bound = corrections()
    found = match_occurrences(steps_with_a1_late(), shift, bound)
    assert [(o.name, o.program, o.occurrence) for o in found] == [("all-reduce.1", "7", k) for k in range(3)]
    for o in found:
        assert o.last.participant == A1
        waits = {a.participant: a.wait_ns for a in o.arrivals}
        assert waits == {A0: 3 * MS, A1: 0, B0: 3 * MS, B1: 3 * MS}
        assert o.max_wait_ns == 3 * MS
        # The op starts together once corrected: 2 us apart, within the 100 us bound.
        assert o.start_spread_ns == 2_000 and o.bound_ns == 100_000 and not o.to_json()["spread_exceeds_bound"]


def test_without_the_correction_the_answer_is_wrong_and_the_start_spread_says_so():
    found = match_occurrences(steps_with_a1_late())
    for o in found:
        assert o.last.participant.host == "host-b"  # 40 ms "late" by its own clock alone
        assert o.start_spread_ns > 39 * MS
    # With the offsets known but the correction's bound exceeded, each occurrence says so.
    shift, _ = corrections(offset_ns=SKEW_NS - 5 * MS)  # off by 5 ms, claiming 50 us
    off = match_occurrences(steps_with_a1_late(), shift, {"host-a": 50_000, "host-b": 50_000})
    assert all(o.to_json()["spread_exceeds_bound"] for o in off)


def test_occurrences_match_by_program_name_and_order_not_by_ids():
    # Chips ran the same program's two all-reduces and an all-gather, listed in any order;
    # a collective only some participants ran (another group's) is not an occurrence.
    ops = {
        A0: [op(30, 30, "all-gather.2"), op(10, 10), op(20, 20), op(5, 5, "all-reduce.9", program="other")],
        B0: [op(20.5, 20.5, host_b=True), op(10.5, 10.5, host_b=True), op(30.5, 30.5, "all-gather.2", host_b=True)],
    }
    shift, bound = corrections()
    found = match_occurrences(ops, shift, bound)
    assert [(o.name, o.occurrence) for o in found] == [("all-reduce.1", 0), ("all-reduce.1", 1), ("all-gather.2", 0)]
    assert all(o.last.participant == B0 and o.max_wait_ns == MS // 2 for o in found)


def test_stragglers_name_the_chip_the_others_wait_for_per_step():
    shift, bound = corrections()
    found = match_occurrences(steps_with_a1_late(), shift, bound)
    result = stragglers("engine0", found, [(round(100 * s * MS), round(100 * (s + 1) * MS)) for s in range(3)])
    out = result.to_json()
    assert out["straggler"] == {"host": "host-a", "device": "/device:TPU:1"}
    assert out["last"][0] == {"host": "host-a", "device": "/device:TPU:1", "times": 3, "waited_ms": 27.0}
    assert out["wait_per_step_ms"] == 3.0 and out["wait_share_of_step"] == 0.03
    assert out["verdict"] == (
        "engine0: host-a /device:TPU:1 arrived last at 3 of 3 collectives; the others waited 27.0 ms on it in all, "
        "3.00 ms per step (median), 3% of the step"
    )


def test_no_participant_dominates_when_the_last_one_changes():
    ops = {A0: [op(10, 11), op(20.2, 21)], B0: [op(10.2, 11, host_b=True), op(20, 21, host_b=True)]}
    shift, bound = corrections()
    result = stragglers("engine0", match_occurrences(ops, shift, bound))
    assert result.verdict().endswith("no participant dominates")


def test_collectives_by_category_or_name():
    assert is_collective("fusion.3", "all-reduce") and is_collective("all-gather-start.1", None)
    assert not is_collective("dot.4", "convolution") and not is_collective("copy.1", None)


def test_a_trace_that_begins_a_call_later_is_aligned_by_the_calls_ends_not_by_index():
    """Captures start at one instant only to within ms: host-b's trace misses the first call
    and host-a's the last, so matching by index would pair each call with the next one."""
    shift, bound = corrections()
    ops = steps_with_a1_late()
    ops = {p: calls[1:] if p.host == "host-b" else calls[:-1] for p, calls in ops.items()}
    found = match_occurrences(ops, shift, bound)
    assert len(found) == 1  # only the second step's call was traced by all four
    (o,) = found
    assert {a.participant: a.start_ns for a in o.arrivals}[B0] - 100 * MS == 13 * MS + 2_000
    assert o.last.participant == A1 and o.max_wait_ns == 3 * MS and o.start_spread_ns == 2_000


def test_host_level_participants_arrive_at_their_transport_call_and_the_slow_one_is_last():
    """Host-level ops (no device plane): arrival is the op's start and the op ends together
    on both ranks; host-b reaches every call 5 ms late and its trace begins one call later."""
    from ray_tpu_profile.analysis.host_collectives import host_collective_ops

    def rank_events(late_ms: float, skip: int, clock_ns: int):
        events = []
        for k in range(6):
            t0 = 20.0 * k
            arrive, end = t0 + 2 + late_ms, t0 + 8
            # the Python tracer's nesting: the outer wrapper starts before the slow rank's delay
            events.append(("/host:CPU ", "$communication_op.py:12 tensor_model_parallel_all_reduce", t0 * MS, 8.5 * MS))
            events.append(("/host:CPU ", "$distributed_c10d.py:3155 all_reduce", arrive * MS, (end - arrive) * MS))
        events = [(t, n, round(s) + clock_ns, round(d)) for t, n, s, d in events]
        return events[2 * skip :]

    ops = {
        Participant("host-a", "host"): host_collective_ops(rank_events(0.0, 0, 0)),
        Participant("host-b", "host"): host_collective_ops(rank_events(5.0, 1, SKEW_NS)),
    }
    assert {op.name for calls in ops.values() for op in calls} == {"$distributed_c10d.py:3155 all_reduce"}
    shift, bound = corrections()
    found = match_occurrences(ops, shift, bound)
    assert len(found) == 5
    for o in found:
        assert o.last.participant == Participant("host-b", "host") and o.max_wait_ns == 5 * MS
    result = stragglers("engine0", found, [(20 * MS * k, 20 * MS * (k + 1)) for k in range(6)])
    assert result.last_counts == {Participant("host-b", "host"): 5}
    assert result.verdict().startswith("engine0: host-b arrived last at 5 of 5 collectives")
    assert result.to_json()["wait_per_step_ms"] == 5.0


def test_a_host_with_several_ranks_traced_gives_a_participant_per_rank_and_its_steps():
    """torch traces of an engine within one host: one file per rank. The process group's
    transport events are its ops (c10d's own op only enqueues them); steps are vLLM's."""
    from ray_tpu_profile.analysis.host_collectives import host_collectives

    def rank(late_ms):
        return [
            ("python", "execute_context_1(4)_generation_0(0)", 0, 30 * MS),
            ("python", "c10d::allreduce_", round((10 + late_ms) * MS), 50_000),
            ("gloo worker", "gloo:all_reduce", round((10 + late_ms) * MS), round((5 - late_ms) * MS)),
        ]

    found = host_collectives(
        {"hosts/h/torch/h_rank0.1.pt.trace.json.gz": rank(0), "hosts/h/torch/h_rank1.2.pt.trace.json.gz": rank(3)}
    )
    assert sorted(found.ops) == ["rank 0", "rank 1"]
    assert {op.name for ops in found.ops.values() for op in ops} == {"gloo:all_reduce"}
    assert found.steps_ns == [(0, 30 * MS), (0, 30 * MS)]
    (o,) = match_occurrences({Participant("h", label): ops for label, ops in found.ops.items()})
    assert o.last.participant == Participant("h", "rank 1") and o.max_wait_ns == 3 * MS and o.end_spread_ns == 0
    assert o.together_at == "end" and o.bound_ns == 0


def test_a_coin_toss_between_even_participants_is_not_a_straggler():
    """Clocks known to microseconds give every occurrence a last arrival: between two even
    hosts that is chance (seen on a real TP 2 run: 49 of 96 against 47). A real straggler
    is last far more often than chance, or takes most of the waits."""
    from ray_tpu_profile.analysis.collectives import dominates

    assert not dominates(49, 96, 2, wait_share=0.51)
    assert not dominates(55, 89, 2, wait_share=0.85)  # seen in CI: a few long stalls, not a straggler
    assert dominates(96, 96, 2) and dominates(70, 96, 2)  # P(X >= 70) ~ 4e-6 by chance
    assert not dominates(60, 96, 2)  # ~0.009: not rare enough
    assert dominates(3, 3, 4, wait_share=1.0)  # too few to rule out chance; all the waits on it
    assert not dominates(2, 4, 2, wait_share=1.0)  # not a majority
    assert dominates(1100, 2000, 4) and not dominates(1030, 2000, 2)  # normal approximation beyond 1000
