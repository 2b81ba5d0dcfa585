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

Where it is made: each host's kept events become its piece of the file's text on the host,
beside its traces (host_summary.py, trace_piece), compressed and placed where the driver
will put it (Placement: process id, clock shift, origin); the driver writes the processes,
the tool's own events and the collective waits, and splices the pieces in as they are
(gzip_splice.py). A piece made at another placement is moved (rebased) first.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ray_tpu_profile.analysis.gzip_splice import Piece
from ray_tpu_profile.core.files import written_whole
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.host_summary import HostSummary

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


@dataclass(frozen=True)
class Placement:
    """Where a host's events go in the timeline: its process id, and the shift that puts
    its clock on the driver's (clock_shift_ns) and `ts` 0 at origin_ns (driver's clock)."""

    pid: int
    origin_ns: int
    shift_ns: int


@dataclass(frozen=True)
class TracePiece:
    """A host's kept trace events as the timeline's text, compressed (gzip_splice): made
    where its traces are, spliced into timeline.json.gz by the driver without reading it.

    The text is `,{event}` for each kept event and each of its tracks' thread names, at
    `at`; first_start_ns: its earliest kept event (host clock), for the timeline's origin."""

    at: Placement
    text: Piece
    total: int
    kept: int
    shortest_kept_ns: int | None
    first_start_ns: int | None


def trace_piece(kept: Kept, at: Placement) -> TracePiece:
    """A host's kept events as timeline text at `at`: tracks numbered from 1 in order of
    first event (0 is the tool's own track, which the driver writes)."""
    from ray_tpu_profile.analysis.gzip_splice import compress

    tids: dict[str, int] = {TOOL_TRACK: 0}
    trace: list[dict[str, Any]] = []
    for event in kept.events:
        tid = tids.setdefault(event.track, len(tids))
        ts = (event.start_ns - at.shift_ns - at.origin_ns) / 1000
        trace.append(
            {"ph": "X", "name": event.name, "pid": at.pid, "tid": tid, "ts": ts, "dur": event.duration_ns / 1000}
        )
    del tids[TOOL_TRACK]
    trace += _thread_names(at.pid, tids)
    return TracePiece(
        at=at,
        text=compress(_listed(trace).encode()),
        total=kept.total,
        kept=len(kept.events),
        shortest_kept_ns=kept.shortest_kept_ns,
        first_start_ns=min((e.start_ns for e in kept.events), default=None),
    )


def rebased(piece: TracePiece, at: Placement) -> TracePiece:
    """The piece moved to `at` (another process id, origin or clock shift): where the
    host made it for other ones (attach's processes, whose origin comes after)."""
    from dataclasses import replace

    from ray_tpu_profile.analysis.gzip_splice import compress, decompress

    if piece.at == at:
        return piece
    text = decompress(piece.text).decode()
    events = json.loads(f"[{text[1:]}]") if text else []
    moved_ns = piece.at.origin_ns + piece.at.shift_ns - at.origin_ns - at.shift_ns
    for e in events:
        e["pid"] = at.pid
        if "ts" in e:
            e["ts"] = (round(e["ts"] * 1000) + moved_ns) / 1000
    return replace(piece, at=at, text=compress(_listed(events).encode()))


def _listed(events: list[dict[str, Any]]) -> str:
    """`,{event}` for each event: what follows the events before it in traceEvents."""
    # json.dumps, not json.dump: dump to a file takes the pure-Python encoder (~5x slower).
    return "," + json.dumps(events, separators=(",", ":"))[1:-1] if events else ""


def _thread_names(pid: int, tids: dict[str, int]) -> list[dict[str, Any]]:
    trace = []
    for track, tid in tids.items():
        trace.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
        trace.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return trace


def timeline_origin_ns(manifest: Manifest, first_starts: dict[str, int | None] | None = None) -> int:
    """`ts` 0 of the timeline: the earliest of the hosts' own events (their iterations and
    capture windows) and, where given, of their kept trace events, on the driver's clock.
    In a run the first warmup iteration comes before any trace, so the driver knows it
    before the hosts make their pieces."""
    starts = []
    for host in manifest["hosts"]:
        shift = clock_shift_ns(host)
        starts += [e.start_ns - shift for e in tool_events(host)]
        first = (first_starts or {}).get(host["name"])
        if first is not None:
            starts.append(first - shift)
    return min(starts, default=0)


def placements(manifest: Manifest, origin_ns: int) -> dict[str, Placement]:
    """Every host's Placement: process ids in manifest order."""
    return {h["name"]: Placement(pid, origin_ns, clock_shift_ns(h)) for pid, h in enumerate(manifest["hosts"], start=1)}


def build_timeline(
    manifest: Manifest, host_events: dict[str, tuple[list[Event], Kept]], max_events_per_host: int
) -> dict[str, Any]:
    """The Chrome trace (JSON object form) from each host's own events and kept trace
    events, in memory (what timeline.json.gz holds; tests read it this way)."""
    from ray_tpu_profile.analysis.gzip_splice import decompress

    first = {name: min((e.start_ns for e in kept.events), default=None) for name, (_, kept) in host_events.items()}
    at = placements(manifest, timeline_origin_ns(manifest, first))
    pieces = {name: trace_piece(kept, at[name]) for name, (_, kept) in host_events.items()}
    own = {name: events for name, (events, _) in host_events.items()}
    head, tail = _head_and_tail(manifest, own, pieces, max_events_per_host, {}, None)
    return json.loads(head + "".join(decompress(p.text).decode() for p in pieces.values()) + tail)


def _head_and_tail(
    manifest: Manifest,
    own: dict[str, list[Event]],
    pieces: dict[str, TracePiece],
    max_events_per_host: int,
    unreadable: dict[str, list[str]],
    collectives: list[dict[str, Any]] | None,
) -> tuple[str, str]:
    """The timeline's text before and after the hosts' pieces (which must be placed at
    this origin): each host's process and its own events, the collective waits, and
    otherData."""
    from ray_tpu_profile.rundir.layout import host_label, skew_by_shape

    by_name = {h["name"]: h for h in manifest["hosts"]}
    names = [name for name in by_name if name in pieces]
    origin_ns = next(iter(pieces.values())).at.origin_ns if pieces else 0
    trace: list[dict[str, Any]] = []
    for name in names:
        at = pieces[name].at
        trace += [
            {"ph": "M", "name": "process_name", "pid": at.pid, "tid": 0, "args": {"name": host_label(by_name[name])}},
            {"ph": "M", "name": "process_sort_index", "pid": at.pid, "tid": 0, "args": {"sort_index": at.pid}},
            *_thread_names(at.pid, {TOOL_TRACK: 0}),
        ]
        for e in own.get(name, []):
            ts = (e.start_ns - at.shift_ns - origin_ns) / 1000
            trace.append({"ph": "X", "name": e.name, "pid": at.pid, "tid": 0, "ts": ts, "dur": e.duration_ns / 1000})
    if collectives:
        trace += collective_waits(collectives, {name: pieces[name].at.pid for name in names}, origin_ns)
    other = {
        "tool": "ray-tpu-profile",
        "run_id": manifest["run_id"],
        "hosts": names,
        "origin_ns": origin_ns,
        "clock": "the driver's wall clock: each host's events minus its measured clock offset "
        "(clock_shift_ms); ts = microseconds since origin_ns (epoch ns)",
        "clock_shift_ms": {name: pieces[name].at.shift_ns / 1e6 for name in names},
        "capture_start_skew_ms_by_shape": skew_by_shape(manifest),
        "downsampling": _downsampling(pieces, max_events_per_host, unreadable),
    }
    head = '{"displayTimeUnit":"ms","traceEvents":[' + json.dumps(trace, separators=(",", ":"))[1:-1]
    return head, '],"otherData":' + json.dumps(other, separators=(",", ":")) + "}"


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


def _downsampling(
    pieces: dict[str, TracePiece], max_events_per_host: int, unreadable: dict[str, list[str]]
) -> dict[str, Any]:
    """The timeline's otherData.downsampling: the rule, and what was kept and dropped per host."""
    return {
        "rule": f"per host, the {max_events_per_host} longest trace events are kept (ties: the earlier one), "
        "the rest dropped; the tool's own iteration and capture events are always kept",
        "max_events_per_host": max_events_per_host,
        "hosts": {
            name: {
                "trace_events": piece.total,
                "kept": piece.kept,
                "dropped": piece.total - piece.kept,
                "shortest_kept_us": None if piece.shortest_kept_ns is None else piece.shortest_kept_ns / 1000,
                **({"unreadable": unreadable[name]} if name in unreadable else {}),
            }
            for name, piece in pieces.items()
        },
    }


def write_timeline(
    run_dir: Path,
    max_events_per_host: int = DEFAULT_MAX_EVENTS_PER_HOST,
    summaries: dict[str, HostSummary] | None = None,
    collectives: list[dict[str, Any]] | None = None,
) -> Path:
    """timeline.json.gz in the run directory, from its manifest and every host's summary
    (host_summary.py; made here from the traces where the caller has none): the driver
    writes each host's process and own events, and splices in each host's piece of kept
    events as it was compressed (gzip_splice), re-placing only a piece made at another
    origin, process id or clock shift. collectives: report.json's, drawn as waits linked
    across their participants."""
    from ray_tpu_profile.analysis.gzip_splice import compress, write_gzip
    from ray_tpu_profile.analysis.host_summary import summaries as host_summaries
    from ray_tpu_profile.rundir.layout import read_manifest

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if summaries is None:
        summaries, _ = host_summaries(run_dir, manifest, max_events_per_host)
    first = {name: s.timeline.first_start_ns for name, s in summaries.items()}
    at = placements(manifest, timeline_origin_ns(manifest, first))
    pieces = {h["name"]: rebased(summaries[h["name"]].timeline, at[h["name"]]) for h in manifest["hosts"]}
    own = {h["name"]: tool_events(h) for h in manifest["hosts"]}
    unreadable = {name: s.unreadable for name, s in summaries.items()}
    head, tail = _head_and_tail(manifest, own, pieces, max_events_per_host, unreadable, collectives)
    path = run_dir / TIMELINE
    with written_whole(path) as tmp:
        write_gzip(tmp, [compress(head.encode()), *(p.text for p in pieces.values()), compress(tail.encode())])
    return path
