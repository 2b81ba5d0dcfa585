"""timeline.json.gz: every host's trace merged into one Chrome/Perfetto trace, each host
its own process, all on one wall-clock axis. XProf's trace viewer shows one host at a
time; this shows them side by side.

Timestamps: each host's events are placed on the driver's clock: their wall-clock time
(epoch ns, as the host's profiler recorded it on the host's clock) minus that host's
measured clock offset (manifest hosts[].clock.offset_ms, the last measured), and `ts` is
microseconds since the earliest of them. So two hosts' capture starts in the timeline
differ by exactly the skew the manifest reports; the shift applied to each host is in
`otherData.clock_shift_ms`.

Size: a 3 s capture with the python tracer is ~1M events per host, more than a browser
trace viewer can open for several hosts. The rule: per host, keep the `max_events_per_host`
longest trace events (ties: the earlier one) and drop the rest. A subset of properly nested
events is still properly nested, and the long events are the ones visible at the zoom that
shows all hosts. The tool's own events (iterations, capture window) are always kept. What
was kept and dropped is in the file's `otherData`.
"""

from __future__ import annotations

import gzip
import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ray_tpu_profile.core.files import written_whole
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

TIMELINE = "timeline.json.gz"
DEFAULT_MAX_EVENTS_PER_HOST = 100_000
TOOL_TRACK = "ray-tpu-profile"
"""The track of the tool's own events (iterations, capture window) in each host's process."""


class Event(NamedTuple):
    """Readers yield plain tuples of these fields (a host's trace is ~1M events and
    building a NamedTuple for each costs more than reading it); kept ones become Events."""

    track: str
    name: str
    start_ns: int
    """Wall clock, epoch ns."""
    duration_ns: int


@dataclass(frozen=True)
class Kept:
    events: list[Event]
    total: int
    shortest_kept_ns: int | None


def keep_longest(events: Iterable[tuple[str, str, int, int]], cap: int) -> Kept:
    """The `cap` longest events (ties: the earlier start), in time order. Streams: holds at
    most `cap` events however many come in."""
    heap: list[tuple[int, int, int, tuple]] = []  # (duration, -start, -seq, event): the smallest goes first
    total = 0
    for total, event in enumerate(events, start=1):
        if len(heap) < cap:
            heapq.heappush(heap, (event[3], -event[2], -total, event))
        elif cap and event[3] >= heap[0][0]:
            item = (event[3], -event[2], -total, event)
            if item > heap[0]:
                heapq.heapreplace(heap, item)
    kept = sorted((Event(*item[3]) for item in heap), key=lambda e: (e.start_ns, -e.duration_ns))
    return Kept(kept, total, min((e.duration_ns for e in kept), default=None))


def tool_events(host: HostEntry) -> list[Event]:
    """The tool's own record of a host, from the manifest: each generate call (warmup and
    profiled, per shape) and, where its trace says when tracing ran, each capture window."""
    from ray_tpu_profile.rundir.layout import host_captures, host_iterations

    events = [
        Event(TOOL_TRACK, f"{kind} {i} {shape}", round(start_s * 1e9), round(latency_s * 1e9))
        for shape, kind, i, start_s, latency_s in host_iterations(host)
    ]
    events += [
        Event(TOOL_TRACK, f"capture {shape}", capture["start_ns"], capture["stop_ns"] - capture["start_ns"])
        for shape, capture in host_captures(host)
    ]
    return events


def clock_shift_ns(host: HostEntry) -> int:
    """What puts a host's events on the driver's clock: its last measured clock offset
    (0 where none was measured, e.g. a run from before clocks were measured)."""
    clock = host.get("clock")
    return round(clock["offset_ms"] * 1e6) if clock and clock.get("offset_ms") is not None else 0


def build_timeline(
    manifest: Manifest, host_events: dict[str, tuple[list[Event], Kept]], max_events_per_host: int
) -> dict[str, Any]:
    """The Chrome trace (JSON object form) from each host's own events and kept trace events."""
    from ray_tpu_profile.rundir.layout import host_label, skew_by_shape

    by_name = {h["name"]: h for h in manifest["hosts"]}
    names = [name for name in by_name if name in host_events]
    shift_ns = {name: clock_shift_ns(by_name[name]) for name in names}
    starts = [
        e.start_ns - shift_ns[name]
        for name in names
        for group in (host_events[name][0], host_events[name][1].events)
        for e in group
    ]
    origin_ns = min(starts, default=0)
    trace: list[dict[str, Any]] = []
    for pid, name in enumerate(names, start=1):
        own, kept = host_events[name]
        trace += _process_trace(pid, host_label(by_name[name]), [*own, *kept.events], shift_ns[name], origin_ns)
    return {
        "displayTimeUnit": "ms",
        "traceEvents": trace,
        "otherData": {
            "tool": "ray-tpu-profile",
            "run_id": manifest["run_id"],
            "hosts": names,
            "origin_ns": origin_ns,
            "clock": "the driver's wall clock: each host's events minus its measured clock offset "
            "(clock_shift_ms); ts = microseconds since origin_ns (epoch ns)",
            "clock_shift_ms": {name: shift / 1e6 for name, shift in shift_ns.items()},
            "capture_start_skew_ms_by_shape": skew_by_shape(manifest),
            "downsampling": _downsampling(host_events, max_events_per_host),
        },
    }


def _process_trace(pid: int, label: str, events: list[Event], shift_ns: int, origin_ns: int) -> list[dict[str, Any]]:
    """One host's process in the trace: its name, its events on the driver's clock, a thread per track."""
    trace: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
    ]
    tids: dict[str, int] = {TOOL_TRACK: 0}
    for event in events:
        tid = tids.setdefault(event.track, len(tids))
        trace.append(
            {
                "ph": "X",
                "name": event.name,
                "pid": pid,
                "tid": tid,
                "ts": (event.start_ns - shift_ns - origin_ns) / 1000,
                "dur": event.duration_ns / 1000,
            }
        )
    for track, tid in tids.items():
        trace.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
        trace.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return trace


WAIT_TID_BASE = 1_000_000
"""Waits go on tracks of their own, numbered apart from the trace's own tracks."""


def collective_waits(collectives: list[dict[str, Any]], pids: dict[str, int], origin_ns: int) -> list[dict[str, Any]]:
    """Each collective occurrence as a wait slice per participant (from its arrival until the
    last participant arrived, on a `collective waits <device>` track of its host; a host-
    level op holds its wait, so the slice is not its op's start minus its arrival), linked
    across the participants by one Perfetto flow in arrival order, ending at the last."""
    events: list[dict[str, Any]] = []
    tracks: dict[tuple[int, str], int] = {}
    for flow_id, o in enumerate(collectives, start=1):
        arrivals = sorted((p for p in o["participants"] if p["host"] in pids), key=lambda p: p["arrive_ns"])
        for i, p in enumerate(arrivals):
            pid = pids[p["host"]]
            tid = tracks.setdefault((pid, p["device"]), WAIT_TID_BASE + len(tracks))
            ts = (p["arrive_ns"] - origin_ns) / 1000
            name = f"{o['name']} #{o['occurrence']} wait"
            dur = max(p["wait_ms"] * 1000, 0.001)
            args = {"wait_ms": p["wait_ms"], "last": o["last"], "engine": o.get("engine")}
            events.append({"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args})
            phase = "s" if i == 0 else "f" if i == len(arrivals) - 1 else "t"
            flow = {"ph": phase, "id": flow_id, "name": o["name"], "cat": "collective", "pid": pid, "tid": tid}
            events.append({**flow, "ts": ts, **({"bp": "e"} if phase == "f" else {})})
    for (pid, device), tid in tracks.items():
        events.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": f"collective waits {device}"}}
        )
    return events


def _downsampling(host_events: dict[str, tuple[list[Event], Kept]], max_events_per_host: int) -> dict[str, Any]:
    """The timeline's otherData.downsampling: the rule, and what was kept and dropped per host."""
    return {
        "rule": f"per host, the {max_events_per_host} longest trace events are kept (ties: the earlier one), "
        "the rest dropped; the tool's own iteration and capture events are always kept",
        "max_events_per_host": max_events_per_host,
        "hosts": {
            name: {
                "trace_events": kept.total,
                "kept": len(kept.events),
                "dropped": kept.total - len(kept.events),
                "shortest_kept_us": None if kept.shortest_kept_ns is None else kept.shortest_kept_ns / 1000,
            }
            for name, (_, kept) in host_events.items()
        },
    }


def host_timeline(
    host: HostEntry, events: Iterable[tuple[str, str, int, int]], unreadable: list[str], max_events_per_host: int
) -> tuple[list[Event], Kept, list[str]]:
    """One host's part of the timeline: its tool events, its kept trace events, and the
    trace files that could not be read (filled while events are read)."""
    return tool_events(host), keep_longest(events, max_events_per_host), unreadable


def write_timeline(
    run_dir: Path,
    max_events_per_host: int = DEFAULT_MAX_EVENTS_PER_HOST,
    hosts: dict[str, tuple[list[Event], Kept, list[str]]] | None = None,
    collectives: list[dict[str, Any]] | None = None,
) -> Path:
    """timeline.json.gz in the run directory, from its manifest and every host's traces
    (hosts: each host's host_timeline, where the caller has read the traces already;
    collectives: report.json's, drawn as waits linked across their participants)."""
    from ray_tpu_profile.analysis.traces import host_trace_events
    from ray_tpu_profile.rundir.layout import read_manifest

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if hosts is None:
        hosts = {}
        for h in manifest["hosts"]:
            unreadable: list[str] = []  # streamed: only the kept events are held
            hosts[h["name"]] = host_timeline(
                h, host_trace_events(run_dir, h, unreadable), unreadable, max_events_per_host
            )
    host_events = {name: (own, kept) for name, (own, kept, _) in hosts.items()}
    trace = build_timeline(manifest, host_events, max_events_per_host)
    if collectives:
        pids = {name: pid for pid, name in enumerate(trace["otherData"]["hosts"], start=1)}
        trace["traceEvents"] += collective_waits(collectives, pids, trace["otherData"]["origin_ns"])
    for name, (_, _, problems) in hosts.items():
        trace["otherData"]["downsampling"]["hosts"][name]["unreadable"] = problems
    path = run_dir / TIMELINE
    # json.dumps, not json.dump: dump to a file takes the pure-Python encoder (~5x slower).
    text = json.dumps(trace, separators=(",", ":"))
    with written_whole(path) as tmp, gzip.open(tmp, "wt", compresslevel=6) as f:
        f.write(text)
    return path
