"""Each chip's events out of an xplane, and the collective ops each chip ran with when it
arrived at them: what devices.py and collectives.py work on. Reads only the device planes
(and, for XLA on CPU, the host plane's HLO-op events), one plane at a time (xspace.py).

Devices: `/device:TPU:N` and `/device:GPU:N` planes (not a TPU's `SparseCore` planes), each
line's events as they are; and where XLA ran on CPU (the TPU stack on JAX CPU), the host
threads' HLO-op thunk events (stats `hlo_op`, `device_ordinal`), as `/device:CPU:N` with
one `XLA Ops` line per ordinal.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_tpu_profile.analysis.collectives import WAIT_EVENTS, CollectiveOp, is_collective
from ray_tpu_profile.analysis.devices import MODULES_LINE, OPS_LINES, DeviceEvent

DEVICE_PLANE = re.compile(r"^/device:(TPU|GPU):\d+$")
HOST_PLANE = "/host:CPU"
WAIT_SLACK_NS = 1_000
"""A wait event belongs to the op that starts within this of its end (TPU: the op follows at once)."""


@dataclass
class DeviceTrace:
    """One device's plane: its name, kind, plane stats (peaks) and events on its host's clock."""

    device: str
    kind: str
    stats: dict[str, Any] = field(default_factory=dict)
    events: list[DeviceEvent] = field(default_factory=list)


def read_device_traces(path: Path) -> list[DeviceTrace]:
    """The devices of one xplane, in plane order (CPU devices of XLA on CPU first)."""
    return list(iter_device_traces(path))


def iter_device_traces(path: Path) -> Iterator[DeviceTrace]:
    """The devices of one xplane one at a time: a caller that summarises each and lets it go
    holds one device plane's events at once, not the host's."""
    from ray_tpu_profile.analysis.xspace import read_planes

    cpu: dict[int, DeviceTrace] = {}
    # The host plane only where XLA ran ops on CPU (its stats name hlo_op): a plane of
    # Python-tracer events is skipped unread.
    for plane in read_planes(path, select=lambda name: name == HOST_PLANE, requires_stat="hlo_op"):
        for event in _cpu_hlo_events(plane):
            ordinal = int(event.stats["device_ordinal"])
            trace = cpu.setdefault(ordinal, DeviceTrace(f"/device:CPU:{ordinal}", "CPU"))
            trace.events.append(event)
    yield from (cpu[k] for k in sorted(cpu))
    for plane in read_planes(path, select=lambda name: bool(DEVICE_PLANE.match(name))):
        kind = plane.name.split(":")[1]
        trace = DeviceTrace(plane.name, kind, dict(plane.stats))
        for line in plane.lines:
            trace.events.extend(
                DeviceEvent(line.name, e.name, e.start_ns, e.end_ns - e.start_ns, e.stats) for e in line.events
            )
        yield trace


def _cpu_hlo_events(plane: Any) -> Iterator[DeviceEvent]:
    for line in plane.lines:
        for e in line.events:
            if "hlo_op" in e.stats and "device_ordinal" in e.stats:
                yield DeviceEvent(OPS_LINES[0], e.name, e.start_ns, e.end_ns - e.start_ns, e.stats)


def collective_ops(trace: DeviceTrace) -> list[CollectiveOp]:
    """The collective ops a device ran, each with when the device arrived at it: the start of
    a wait event ending as the op starts (`barrier-cores`), else the end of the device's
    previous op in the same module execution, else the module execution's start, else the
    op's own start."""
    ops = sorted((e for e in trace.events if e.line in OPS_LINES), key=lambda e: e.start_ns)
    modules = sorted((e for e in trace.events if e.line == MODULES_LINE), key=lambda e: e.start_ns)
    module_starts = [m.start_ns for m in modules]
    waits = sorted((e for e in trace.events if e.name in WAIT_EVENTS), key=lambda e: e.start_ns + e.duration_ns)
    wait_ends = [w.start_ns + w.duration_ns for w in waits]
    found = []
    earlier: dict[int, list[int]] = defaultdict(list)  # per module execution: the ends of its ops so far
    for op in ops:
        i = bisect.bisect_right(module_starts, op.start_ns) - 1
        module = modules[i] if i >= 0 and modules[i].start_ns + modules[i].duration_ns >= op.start_ns else None
        if is_collective(op.name, _category(op)):
            # Busy until its last op that ended before this one (an op enclosing it does not count).
            done = [end for end in earlier[i] if end <= op.start_ns] if module else []
            arrive = _wait_start(waits, wait_ends, op, module) or max(done, default=0)
            arrive = max(arrive, module.start_ns if module else op.start_ns)
            program = op.stats.get("program_id")
            found.append(
                CollectiveOp(
                    op.name,
                    str(program) if program is not None else module.name if module else "?",
                    op.start_ns,
                    op.duration_ns,
                    min(arrive, op.start_ns),
                )
            )
        if module:
            earlier[i].append(op.start_ns + op.duration_ns)
    return found


def _category(op: DeviceEvent) -> str | None:
    category = op.stats.get("hlo_category")
    return str(category) if category else None


def _wait_start(waits: list[DeviceEvent], wait_ends: list[int], op: DeviceEvent, module: DeviceEvent | None) -> int:
    """The start of the wait event that ends as op starts (0 if none)."""
    i = bisect.bisect_right(wait_ends, op.start_ns + WAIT_SLACK_NS) - 1
    if i < 0 or wait_ends[i] < op.start_ns - WAIT_SLACK_NS:
        return 0
    wait = waits[i]
    if module is not None and wait.start_ns < module.start_ns:
        return 0
    return wait.start_ns
