"""timeline.json.gz: every host's trace merged into one Chrome/Perfetto trace, each host
its own process, all on one wall-clock axis. XProf's trace viewer shows one host at a
time; this shows them side by side.

Timestamps: each host's events are placed at their wall-clock time (epoch ns, as the
host's profiler recorded it), and `ts` is microseconds since the earliest of them. So two
hosts' capture starts in the timeline differ by exactly the skew the manifest reports.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

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


def xplane_events(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """Every event of an xplane at its wall-clock time: the converter gives times since the
    capture's `profile_start_time`."""
    from ray_tpu_profile.xplane import capture_start_ns, trace_events

    start_ns = capture_start_ns(path)
    for track, name, offset_ns, duration_ns in trace_events(path):
        yield track, name, start_ns + offset_ns, duration_ns


def torch_trace_events(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """Complete events of a torch profiler trace at their wall-clock time: Kineto writes
    `ts` in microseconds since `baseTimeNanoseconds`."""
    with gzip.open(path) if str(path).endswith(".gz") else open(path, "rb") as f:
        trace = json.load(f)
    base_ns = int(trace.get("baseTimeNanoseconds", 0))
    threads = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in trace["traceEvents"]
               if e.get("ph") == "M" and e.get("name") == "thread_name" and "name" in e.get("args", {})}
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and "dur" in e:
            track = threads.get((e.get("pid"), e.get("tid")), f"thread {e.get('tid')}")
            yield track, e.get("name", "?"), base_ns + round(e["ts"] * 1000), round(e["dur"] * 1000)


def trace_events(run_dir: Path, host: dict[str, Any]) -> Iterator[tuple[str, str, int, int]]:
    """Every event of every trace file a healthy host delivered (a failed host's files
    were not verified and may be half written)."""
    if host["status"] != "ok":
        return
    for f in host["files"]:
        path = Path(run_dir) / f["path"]
        if f["path"].endswith(".xplane.pb"):
            yield from xplane_events(path)
        elif f["path"].endswith((".pt.trace.json.gz", ".pt.trace.json")):
            yield from torch_trace_events(path)


def tool_events(host: dict[str, Any]) -> list[Event]:
    """The tool's own record of a host, from the manifest: each generate call (warmup and
    profiled, per shape) and, where an xplane says when tracing ran, the capture window."""
    events = []
    shapes = host.get("shapes") or {"": {"phases": host["phases"]}}
    for shape, done in shapes.items():
        for kind in ("warmup", "profiled"):
            phase = done["phases"].get(kind)
            if not phase:
                continue
            for i, (start_s, latency_s) in enumerate(zip(phase["iteration_starts_s"], phase["latencies_s"])):
                label = f"{kind} {i}" + (f" {shape}" if shape else "")
                events.append(Event(TOOL_TRACK, label, round(start_s * 1e9), round(latency_s * 1e9)))
    # Each shape of a sweep has its own capture; a manifest without shapes has one, top-level.
    captures = {shape: done.get("capture") for shape, done in host["shapes"].items()} if host.get("shapes") \
        else {"": host.get("capture")}
    for shape, capture in captures.items():
        if capture and capture.get("start_ns") is not None and capture.get("stop_ns") is not None:
            events.append(Event(TOOL_TRACK, "capture" + (f" {shape}" if shape else ""), capture["start_ns"],
                                capture["stop_ns"] - capture["start_ns"]))
    return events


def build_timeline(manifest: dict[str, Any], host_events: dict[str, tuple[list[Event], Kept]],
                   max_events_per_host: int) -> dict[str, Any]:
    """The Chrome trace (JSON object form) from each host's own events and kept trace events."""
    names = [h["name"] for h in manifest["hosts"] if h["name"] in host_events]
    starts = [e.start_ns for name in names for group in (host_events[name][0], host_events[name][1].events) for e in group]
    origin_ns = min(starts, default=0)
    trace: list[dict[str, Any]] = []
    for pid, name in enumerate(names, start=1):
        own, kept = host_events[name]
        trace.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
        trace.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        tids: dict[str, int] = {TOOL_TRACK: 0}
        for event in [*own, *kept.events]:
            tid = tids.setdefault(event.track, len(tids))
            trace.append({"ph": "X", "name": event.name, "pid": pid, "tid": tid,
                          "ts": (event.start_ns - origin_ns) / 1000, "dur": event.duration_ns / 1000})
        for track, tid in tids.items():
            trace.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
            trace.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return {
        "displayTimeUnit": "ms",
        "traceEvents": trace,
        "otherData": {
            "tool": "ray-tpu-profile",
            "run_id": manifest["run_id"],
            "hosts": names,
            "origin_ns": origin_ns,
            "clock": "each host's wall clock; ts = microseconds since origin_ns (epoch ns)",
            "capture_start_skew_ms": manifest["capture"].get("start_skew_ms"),
            "downsampling": {
                "rule": f"per host, the {max_events_per_host} longest trace events are kept (ties: the earlier one), "
                        "the rest dropped; the tool's own iteration and capture events are always kept",
                "max_events_per_host": max_events_per_host,
                "hosts": {
                    name: {"trace_events": kept.total, "kept": len(kept.events), "dropped": kept.total - len(kept.events),
                           "shortest_kept_us": None if kept.shortest_kept_ns is None else kept.shortest_kept_ns / 1000}
                    for name, (_, kept) in host_events.items()
                },
            },
        },
    }


def write_timeline(run_dir: Path, max_events_per_host: int = DEFAULT_MAX_EVENTS_PER_HOST) -> Path:
    """timeline.json.gz in the run directory, from its manifest and every host's traces."""
    from ray_tpu_profile.layout import MANIFEST

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / MANIFEST).read_text())
    host_events = {h["name"]: (tool_events(h), keep_longest(trace_events(run_dir, h), max_events_per_host))
                   for h in manifest["hosts"]}
    path = run_dir / TIMELINE
    tmp = path.with_name(f".{path.name}.tmp")
    # json.dumps, not json.dump: dump to a file takes the pure-Python encoder (~5x slower).
    text = json.dumps(build_timeline(manifest, host_events, max_events_per_host), separators=(",", ":"))
    with gzip.open(tmp, "wt", compresslevel=6) as f:
        f.write(text)
    tmp.replace(path)
    return path
