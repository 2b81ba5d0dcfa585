"""Collectives where there is no device plane: what a host's process did at each collective
call, from its trace events (traces.py), as host-level participants of collectives.py.
Pure: events in, collective ops and engine steps out.

Which events. The transport of each call, as the process waited in it:
- torch traces: the process group's own events (`gloo:all_reduce`, `nccl:all_gather`, ...).
  Not `c10d::allreduce_`: with gloo that op only enqueues the work (tens of µs) and returns;
  the transport runs on the process group's worker threads, and its event starts when the
  call reached it and ends when the last rank's data was in, on every rank alike.
- xplanes with the Python tracer: the innermost traced Python function of a collective
  (`$distributed_c10d.py:N all_reduce` inside `$communication_op.py:N
  tensor_model_parallel_all_reduce`): work a rank does before the transport (its
  wrappers, a slow rank's compute) is then before the arrival, not inside it.
Arrival is the event's start: a host-level event's duration holds its wait for the others.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ray_tpu_profile.analysis.collectives import CollectiveOp
from ray_tpu_profile.analysis.ops import DEVICE_TRACK_PREFIX, XPLANE_STEP
from ray_tpu_profile.analysis.steps import STEP

COLLECTIVE_WORDS = r"all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|broadcast|barrier"
HOST_COLLECTIVE = re.compile(
    rf"^((gloo|nccl|ucc|mpi):\w*({COLLECTIVE_WORDS}|send|recv)\w*"
    rf"|\$\w+\.py:\d+ \w*({COLLECTIVE_WORDS})\w*)$"
)
"""A process group's transport event (torch), or a traced Python function of a collective."""
HOST_PROGRAM = "host"
"""The `program` of host-level collective ops: one process's calls, in order."""
RANK_IN_FILE = re.compile(r"_rank(\d+)\.")
"""Trace files of one rank each name it (`<host>_rank<N>.<id>.pt.trace.json.gz`)."""


@dataclass
class HostCollectives:
    """One host's host-level collective ops per traced process, and its engine steps.

    ops: participant device label -> ops; the label is `host` where the host delivered one
        trace file with collectives, else `rank N` (from the file's name) for each file.
    steps_ns: (start, end) of each engine step (vLLM's step annotations, the model runner's
        `execute_model` in an xplane), in time order, on the host's clock.
    """

    ops: dict[str, list[CollectiveOp]] = field(default_factory=dict)
    steps_ns: list[tuple[int, int]] = field(default_factory=list)


def host_collective_ops(events: Iterable[tuple[str, str, int, int]]) -> list[CollectiveOp]:
    """The innermost collective events of each track of one process's trace (device tracks
    left to device_traces.py), as collective ops arriving at their start."""
    by_track: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for track, name, start_ns, duration_ns in events:
        if not track.startswith(DEVICE_TRACK_PREFIX) and HOST_COLLECTIVE.match(name):
            by_track[track].append((start_ns, -duration_ns, name))
    found = []
    for calls in by_track.values():
        calls.sort()
        for i, (start_ns, neg_duration_ns, name) in enumerate(calls):
            end_ns = start_ns - neg_duration_ns
            # Properly nested and sorted by start: the next call starts inside this one
            # exactly when this one encloses it.
            if i + 1 < len(calls) and calls[i + 1][0] < end_ns:
                continue
            found.append(CollectiveOp(name, HOST_PROGRAM, start_ns, -neg_duration_ns, start_ns))
    found.sort(key=lambda op: op.start_ns)
    return found


def host_collectives(files: Mapping[str, Iterable[tuple[str, str, int, int]]]) -> HostCollectives:
    """One host's HostCollectives from its trace files' events (file path -> events, each
    read once)."""
    per_file: dict[str, list[CollectiveOp]] = {}
    steps: list[tuple[int, int]] = []
    for path, events in files.items():
        wanted = []
        for event in events:
            if HOST_COLLECTIVE.match(event[1]):
                wanted.append(event)
            elif STEP.match(event[1]) or XPLANE_STEP.match(event[1]):
                steps.append((event[2], event[2] + event[3]))
        if ops := host_collective_ops(wanted):
            per_file[path] = ops
    result = HostCollectives(steps_ns=sorted(steps))
    for path, ops in per_file.items():
        file_name = path.rsplit("/", 1)[-1]
        rank = RANK_IN_FILE.search(file_name)
        label = "host" if len(per_file) == 1 else f"rank {rank.group(1)}" if rank else file_name
        result.ops[label] = ops
    return result
