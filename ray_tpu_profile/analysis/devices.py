"""What each chip did in the capture window, apart from its host's threads: busy and idle
time, time per HLO category, top ops by self time, executions per XLA module, and achieved
FLOP/s and HBM bandwidth against the chip's peak. Pure: a device's events in, its summary
out (report.json's `devices`). Host-side events keep their own ranking (ops.py); device
time is never mixed into it.

Categories: the op's `hlo_category` stat where the trace has one (TPU traces do), else
from its HLO name (`all-reduce.3` -> all-reduce, `dot.1` -> convolution as XProf counts it,
`loop_fusion.2` -> loop fusion, ...). Self time respects nesting on a line (an op inside
another counts once, in the inner one).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_tpu_profile.analysis.summary_stats import top_operations

OPS_LINES = ("XLA Ops",)
"""Lines of a device plane whose events are HLO ops (async ops' `Async XLA Ops` overlap them)."""
MODULES_LINE = "XLA Modules"
NS_PER_MS = 1_000_000
NAME_CATEGORIES = (
    (re.compile(r"^(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|collective-broadcast)"), None),
    (re.compile(r"^(send|recv)(-done)?\b"), "send/recv"),
    (re.compile(r"^(dot|convolution)\b"), "convolution"),
    (re.compile(r"^(loop|input|output|kloop|kinput|koutput)_?fusion"), None),
    (re.compile(r"^fusion\b"), "fusion"),
    (re.compile(r"^\w*_fusion\b"), "fusion"),  # XLA CPU's named fusions: bitcast_gather_fusion.3
    (re.compile(r"^copy(-start|-done)?\b"), "copy"),
    (re.compile(r"^custom-call\b"), "custom-call"),
)


def category_of(name: str, stats: Mapping[str, Any]) -> str:
    """An op's HLO category: its `hlo_category` stat, else one read from its name."""
    stated = stats.get("hlo_category")
    if stated:
        return str(stated)
    base = str(stats.get("hlo_op") or name).lower()
    for pattern, category in NAME_CATEGORIES:
        m = pattern.match(base)
        if m:
            if category is not None:
                return category
            word = m.group(1)
            return f"{word.removeprefix('k')} fusion" if "fusion" in m.group(0) else word
    return "other"


@dataclass(frozen=True)
class DeviceEvent:
    """One event of a device plane (or a device's events on host threads), on its host's clock."""

    line: str
    name: str
    start_ns: int
    duration_ns: int
    stats: Mapping[str, Any] = field(default_factory=dict)


def busy_ns(intervals: Iterable[tuple[int, int]], window: tuple[int, int]) -> int:
    """The length of the union of (start, end) intervals, clipped to window."""
    total, reached = 0, window[0]
    for start, end in sorted(intervals):
        start, end = max(start, reached), min(end, window[1])
        if end > start:
            total += end - start
            reached = end
    return total


class _OpColumns:
    """A device's ops as columns: line, name index, start, end (21 bytes an op), with each
    name's category (from its first op) and the FLOPs and bytes summed as they come."""

    def __init__(self) -> None:
        from array import array

        self.names: dict[str, int] = {}  # op name -> its index in the name column
        self.categories: list[str] = []  # by name index
        self.lines: dict[str, int] = {}
        self.line_ids, self.name_ids, self.starts, self.ends = array("b"), array("i"), array("q"), array("q")
        self.flops = self.bytes_accessed = 0.0

    def add(self, e: DeviceEvent) -> None:
        name_id = self.names.get(e.name)
        if name_id is None:
            name_id = self.names[e.name] = len(self.names)
            self.categories.append(category_of(e.name, e.stats))
        self.line_ids.append(self.lines.setdefault(e.line, len(self.lines)))
        self.name_ids.append(name_id)
        self.starts.append(e.start_ns)
        self.ends.append(e.start_ns + e.duration_ns)
        self.flops += float(e.stats.get("flops") or 0)
        self.bytes_accessed += float(e.stats.get("bytes_accessed") or 0)


def device_summary(
    host: str,
    device: str,
    kind: str,
    events: Iterable[DeviceEvent],
    window: tuple[int, int],
    plane_stats: Mapping[str, Any] | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """report.json's entry for one device: its ops and modules within window (host-clock ns).
    One pass over events (a generator is fine): each op becomes a few numbers in arrays
    (_OpColumns), not an object, so a chip's millions of ops fit."""
    ops, modules = _OpColumns(), []
    for e in events:
        if e.start_ns + e.duration_ns <= window[0] or e.start_ns >= window[1]:
            continue
        if e.line in OPS_LINES:
            ops.add(e)
        elif e.line == MODULES_LINE:
            modules.append(e)
    busy = _busy_ns(ops.starts, ops.ends, window)
    self_by_id = _self_ns(ops.line_ids, ops.name_ids, ops.starts, ops.ends, len(ops.names))
    self_ns = {name: int(self_by_id[i]) for name, i in ops.names.items()}
    categories: dict[str, float] = defaultdict(float)
    for i, category in enumerate(ops.categories):
        categories[category] += self_by_id[i] / NS_PER_MS
    stats = plane_stats or {}
    busy_s = busy / 1e9
    peak_tflops, peak_hbm_gbps = stats.get("peak_teraflops_per_second"), stats.get("peak_hbm_bw_gigabytes_per_second")
    return {
        "host": host,
        "device": device,
        "kind": kind,
        "window_ms": (window[1] - window[0]) / NS_PER_MS,
        "busy_ms": busy / NS_PER_MS,
        "idle_ms": (window[1] - window[0] - busy) / NS_PER_MS,
        "categories_ms": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
        "top_ops": top_operations({n: ns / NS_PER_MS for n, ns in self_ns.items()}, top),
        "modules": _modules(modules),
        "steps_ms": _steps_ms(modules),
        "flops_per_s": ops.flops / busy_s if busy_s and ops.flops else None,
        "peak_flops_per_s": float(peak_tflops) * 1e12 if peak_tflops else None,
        "hbm_bytes_per_s": ops.bytes_accessed / busy_s if busy_s and ops.bytes_accessed else None,
        "peak_hbm_bytes_per_s": float(peak_hbm_gbps) * 1e9 if peak_hbm_gbps else None,
    }


def _busy_ns(starts: Any, ends: Any, window: tuple[int, int]) -> int:
    """The length of the union of the [start, end) intervals, clipped to window."""
    import numpy as np

    if not len(starts):
        return 0
    start = np.clip(np.frombuffer(starts, dtype=np.int64), window[0], window[1])
    end = np.clip(np.frombuffer(ends, dtype=np.int64), window[0], window[1])
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    # What each interval adds is its part past the furthest end of those before it.
    reached = np.maximum.accumulate(np.concatenate(([window[0]], end[:-1])))
    return int(np.clip(end - np.maximum(start, reached), 0, None).sum())


CHUNK = 1 << 16
"""Ops walked per chunk by _self_ns (Python ints for a chunk, not for a chip's millions)."""


def _self_ns(line_ids: Any, name_ids: Any, starts: Any, ends: Any, name_count: int) -> list[int]:
    """Self time per name index: each op's duration less that of the ops nested in it on the
    same line (an op inside another counts once, in the inner one)."""
    import numpy as np

    totals = [0] * name_count
    if not len(starts):
        return totals
    start = np.frombuffer(starts, dtype=np.int64)
    end = np.frombuffer(ends, dtype=np.int64)
    line = np.frombuffer(line_ids, dtype=np.int8)
    name = np.frombuffer(name_ids, dtype=np.int32)
    # By line, then start, the longer first: a parent before what it encloses.
    order = np.lexsort((start - end, start, line))
    stack: list[list[int]] = []  # [end, name index, child time] of the enclosing ops
    previous_line = None
    for first in range(0, len(order), CHUNK):
        chunk = order[first : first + CHUNK]
        for ln, s, e, n in zip(line[chunk].tolist(), start[chunk].tolist(), end[chunk].tolist(), name[chunk].tolist()):
            if ln != previous_line:
                while stack:
                    _, done, child = stack.pop()
                    totals[done] -= child
                previous_line = ln
            while stack and stack[-1][0] <= s:
                _, done, child = stack.pop()
                totals[done] -= child
            if stack:
                stack[-1][2] += e - s
            totals[n] += e - s
            stack.append([e, n, 0])
    while stack:
        _, done, child = stack.pop()
        totals[done] -= child
    return totals


def _steps_ms(executions: list[DeviceEvent]) -> list[float]:
    """The durations of the device's step: diff's samples (step_module)."""
    if not executions:
        return []
    step = step_module(executions)
    return [e.duration_ns / NS_PER_MS for e in sorted(executions, key=lambda e: e.start_ns) if e.name == step]


def step_module(executions: list[DeviceEvent]) -> str:
    """A device's step: its most executed XLA module (one jitted step per execution), the
    one taking the most time among those executed as often (vLLM's TPU stack runs its
    model, logits and sampling modules once per step each)."""
    counts: dict[str, int] = defaultdict(int)
    total_ns: dict[str, float] = defaultdict(float)
    for e in executions:
        counts[e.name] += 1
        total_ns[e.name] += e.duration_ns
    return max(counts, key=lambda name: (counts[name], total_ns[name], name))


def _modules(executions: list[DeviceEvent]) -> list[dict[str, Any]]:
    """Executions per XLA module, most time first."""
    by_module: dict[str, list[int]] = defaultdict(list)
    for e in executions:
        by_module[e.name].append(e.duration_ns)
    return [
        {
            "name": name,
            "executions": len(durations),
            "total_ms": sum(durations) / NS_PER_MS,
            "mean_ms": sum(durations) / len(durations) / NS_PER_MS,
            "max_ms": max(durations) / NS_PER_MS,
        }
        for name, durations in sorted(by_module.items(), key=lambda kv: -sum(kv[1]))
    ]
