"""What one host's traces give the end-of-run reports, from one read of them where they
are: its operations (self times, engine steps), its host-level collectives, its devices'
summaries and collective ops, and the events the timeline keeps of it.

Made on each host once its traces are gathered, all hosts in parallel (host/summaries.py),
and gathered the same way; the driver then merges them (report.py, device_analysis.py,
timeline.py) and reads no trace event. A host without a usable one (a run directory from
before summaries, a summary that failed on its host, or one made for other options) is
summarised where the reports are made, in parallel processes where that pays (summaries()).

Stored as gzip'd JSON and the timeline piece's raw deflate bytes after it (write_summary
says the layout), never pickle: a run directory may come from a shared bucket, and
unpickling runs code. The piece is not base64 in the JSON: that made the driver gunzip and
decode a third more text than the piece itself, per host. A summary names the sha256 of
every trace file it was made from, and is used only if they are the files the manifest lists.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_tpu_profile.analysis.collectives import CollectiveOp
from ray_tpu_profile.analysis.device_analysis import HostDevices
from ray_tpu_profile.analysis.devices import DeviceEvent
from ray_tpu_profile.analysis.gzip_splice import Piece
from ray_tpu_profile.analysis.host_collectives import HostCollectives
from ray_tpu_profile.analysis.ops import StepSummary
from ray_tpu_profile.analysis.summary_stats import Operation
from ray_tpu_profile.analysis.timeline import Kept, Placement, TracePiece, trace_piece
from ray_tpu_profile.errors import ToolError
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

SUMMARY = "summary.bin"
"""Its name in a host's output directory; gathered to hosts/<host>/summary.bin."""
SUMMARY_FORMAT = 2
SUMMARY_MAGIC = b"ray-tpu-profile host summary\n"
MADE_ON_HOST = "host"
TOP_OPERATIONS = 10
"""Operations (and a device's categories) a summary ranks: report.json's `top`."""


class SummaryError(ToolError, ValueError):
    """A summary file that cannot be used (unreadable, another format, other traces)."""


@dataclass
class HostSummary:
    """One host's summary. traces: each trace file it was made from (its path in the run
    directory) -> sha256; top, max_timeline_events: what it was made for."""

    host: str
    traces: dict[str, str]
    top: int
    max_timeline_events: int
    devices: HostDevices
    top_operations: list[Operation] = field(default_factory=list)
    steps: StepSummary = field(default_factory=lambda: StepSummary(count=0, total_ms=0.0, mean_ms=None))
    left_out_of_operations_ms: dict[str, float] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    collectives: HostCollectives = field(default_factory=HostCollectives)
    timeline: TracePiece = field(default_factory=lambda: trace_piece(Kept([], 0, None), Placement(1, 0, 0)))
    """The timeline's kept events of this host, as its text (timeline.trace_piece)."""
    seconds: float = 0.0
    """How long making it took (where it was made)."""


def summarise(
    host: str,
    files: Mapping[str, Path],
    sha256: Mapping[str, str],
    top: int = TOP_OPERATIONS,
    max_timeline_events: int | None = None,
    timeline_at: Placement | None = None,
) -> HostSummary:
    """One host's summary from its trace files (path in the run directory -> where the
    file is now; sha256: of each, as its manifest entry will say). timeline_at: where its
    events go in the timeline, if known (else process 1, its own first event at 0, its own
    clock: the driver moves them). Its device planes are read first, one plane at a time
    (device_analysis.devices_of_files); then each file once for the operations,
    collectives and timeline."""
    from ray_tpu_profile.analysis.device_analysis import devices_of_files
    from ray_tpu_profile.analysis.host_collectives import host_collectives
    from ray_tpu_profile.analysis.ops import operation_profile
    from ray_tpu_profile.analysis.summary_stats import top_operations
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST, keep_longest
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES, read_trace_files

    started = time.monotonic()
    max_events = max_timeline_events or DEFAULT_MAX_EVENTS_PER_HOST
    devices = devices_of_files(host, files, top)  # one device plane in memory at a time, before the events
    traces = read_trace_files(files)
    ops = operation_profile(traces.events)
    summary = HostSummary(
        host=host,
        traces={name: sha256[name] for name in files if name.endswith(TRACE_SUFFIXES)},
        top=top,
        max_timeline_events=max_events,
        devices=devices,
        top_operations=top_operations(ops.self_ms, top) if ops.self_ms else [],
        steps=ops.steps(),
        left_out_of_operations_ms=dict(sorted(ops.left_out_ms.items(), key=lambda kv: -kv[1])[:top]),
        unreadable=traces.unreadable,
        collectives=host_collectives(traces.file_events()),
    )
    kept = keep_longest(traces.events, max_events)
    first_ns = min((e.start_ns for e in kept.events), default=0)
    summary.timeline = trace_piece(kept, timeline_at or Placement(1, first_ns, 0))
    summary.seconds = time.monotonic() - started
    return summary


def summarise_from_run_dir(
    run_dir: Path, host: HostEntry, top: int, max_timeline_events: int, timeline_at: Placement | None = None
) -> HostSummary:
    """A host's summary from its files in a run directory (what its host did not make)."""
    files = {f["path"]: Path(run_dir) / f["path"] for f in host["files"]}
    sha256 = {f["path"]: f.get("sha256", "") for f in host["files"]}
    return summarise(host["name"], files, sha256, top, max_timeline_events, timeline_at)


def problem(summary: HostSummary, host: HostEntry, top: int, max_timeline_events: int) -> str | None:
    """Why a host's summary cannot stand for its traces in the manifest, or None."""
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES

    listed = {f["path"]: f.get("sha256", "") for f in host["files"] if f["path"].endswith(TRACE_SUFFIXES)}
    if summary.host != host["name"]:
        return f"made for host {summary.host}"
    if summary.traces != listed:
        return "made from other trace files than the manifest lists"
    if (summary.top, summary.max_timeline_events) != (top, max_timeline_events):
        return f"made for top {summary.top} and {summary.max_timeline_events} timeline events"
    return None


def summaries(
    run_dir: Path,
    manifest: Manifest,
    max_timeline_events: int,
    top: int = TOP_OPERATIONS,
    workers: int | None = None,
) -> tuple[dict[str, HostSummary], dict[str, str]]:
    """Every host's summary, and where each was made: MADE_ON_HOST (its own, shipped with
    its files), else why its own could not be used and it was made here. Those made here are made in
    parallel processes where their traces are big enough for that to pay
    (device_analysis.parallel_hosts). A host whose summary cannot be made raises."""
    found: dict[str, HostSummary] = {}
    made_where: dict[str, str] = {}
    missing = []
    for host in manifest["hosts"]:
        summary, why = shipped_summary(Path(run_dir), host, top, max_timeline_events)
        if summary is not None:
            found[host["name"]], made_where[host["name"]] = summary, MADE_ON_HOST
        else:
            missing.append(host)
            made_where[host["name"]] = why
    from ray_tpu_profile.analysis.device_analysis import per_host
    from ray_tpu_profile.analysis.timeline import placements, timeline_origin_ns
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES

    at = placements(manifest, timeline_origin_ns(manifest))  # what the driver will most likely want
    sizes = [sum(f["bytes"] for f in h["files"] if f["path"].endswith(TRACE_SUFFIXES)) for h in missing]
    calls = [(run_dir, h, top, max_timeline_events, at[h["name"]]) for h in missing]
    made_here = per_host(summarise_from_run_dir, calls, sizes, workers)
    for host, summary in zip(missing, made_here):
        found[host["name"]] = summary
    return {h["name"]: found[h["name"]] for h in manifest["hosts"]}, made_where


def shipped_summary(
    run_dir: Path, host: HostEntry, top: int, max_timeline_events: int | None
) -> tuple[HostSummary | None, str]:
    """(The summary the host shipped, "") where it stands for the traces its manifest lists
    (problem; max_timeline_events None: made for any), else (None, why not)."""
    try:
        summary = read_summary(run_dir, host)
        why = problem(summary, host, top, max_timeline_events or summary.max_timeline_events)
    except SummaryError as e:
        return None, str(e)
    return (None, why) if why else (summary, "")


def summary_path(run_dir: Path, host: HostEntry) -> Path | None:
    """Where the host's summary is in the run directory, if its files list one."""
    from ray_tpu_profile.rundir.layout import host_file_dest

    dest = host_file_dest(host["name"], SUMMARY).as_posix()
    return Path(run_dir) / dest if any(f["path"] == dest for f in host["files"]) else None


def read_summary(run_dir: Path, host: HostEntry) -> HostSummary:
    path = summary_path(run_dir, host)
    if path is None:
        raise SummaryError("its host shipped none")
    return read_summary_file(path)


def read_summary_file(path: Path) -> HostSummary:
    """SummaryError where the file is not a whole summary of this format."""
    try:
        whole = Path(path).read_bytes()
    except OSError as e:
        raise SummaryError(f"unreadable ({type(e).__name__}: {e})") from None
    if not whole.startswith(SUMMARY_MAGIC):
        raise SummaryError(f"not a summary of format {SUMMARY_FORMAT} (it starts {whole[:16]!r})")
    at = len(SUMMARY_MAGIC) + 8
    json_end = at + int.from_bytes(whole[at - 8 : at], "big")
    try:
        data = json.loads(gzip.decompress(whole[at:json_end]))
    except (OSError, EOFError, ValueError) as e:
        raise SummaryError(f"unreadable ({type(e).__name__}: {e})") from None
    return from_json(data, whole[json_end:])


def write_summary(path: Path, summary: HostSummary) -> None:
    """SUMMARY_MAGIC, the gzip'd JSON's length (8 bytes, big-endian), the gzip'd JSON
    (to_json), then the timeline piece's raw deflate bytes to the end of the file."""
    from ray_tpu_profile.core.files import written_whole

    packed = gzip.compress(json.dumps(to_json(summary), separators=(",", ":")).encode(), compresslevel=6)
    with written_whole(path) as tmp, open(tmp, "wb") as f:
        f.write(SUMMARY_MAGIC + len(packed).to_bytes(8, "big"))
        f.write(packed)
        f.write(summary.timeline.text.deflate)


def to_json(s: HostSummary) -> dict[str, Any]:
    """The summary as JSON, all but its timeline piece's bytes. Event names repeat (one op
    name per call): each list of events names them by index into `names`, which keeps the
    file a fraction of the size."""
    names: dict[str, int] = {}

    def name(text: str) -> int:
        return names.setdefault(text, len(names))

    def ops(calls: list[CollectiveOp]) -> list[list[int]]:
        return [[name(c.name), name(c.program), c.start_ns, c.duration_ns, c.arrive_ns] for c in calls]

    body = {
        "format": SUMMARY_FORMAT,
        "host": s.host,
        "traces": s.traces,
        "top": s.top,
        "max_timeline_events": s.max_timeline_events,
        "seconds": s.seconds,
        "top_operations": s.top_operations,
        "steps": s.steps,
        "left_out_of_operations_ms": s.left_out_of_operations_ms,
        "unreadable": s.unreadable,
        "host_collectives": {
            "ops": {label: ops(calls) for label, calls in s.collectives.ops.items()},
            "steps_ns": s.collectives.steps_ns,
        },
        "devices": {
            "devices": s.devices.devices,
            "ops": {device: ops(calls) for device, calls in s.devices.ops.items()},
            "executions": [[name(e.line), name(e.name), e.start_ns, e.duration_ns] for e in s.devices.executions],
            "unreadable": s.devices.unreadable,
        },
        "timeline": _piece_json(s.timeline),
    }
    return {**body, "names": list(names)}


def from_json(data: Any, deflate: bytes) -> HostSummary:
    """From to_json's JSON and its timeline piece's bytes; SummaryError where data is not a
    summary of this format or the piece is not the one it describes."""
    if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SummaryError(f"not a summary of format {SUMMARY_FORMAT} (found {found!r})")
    try:
        summary = _from_json(data, deflate)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise SummaryError(f"malformed ({type(e).__name__}: {e})") from None
    if len(deflate) != data["timeline"]["deflate_bytes"]:
        raise SummaryError(f"its timeline piece is {len(deflate)} bytes, not {data['timeline']['deflate_bytes']}")
    return summary


def _from_json(data: dict[str, Any], deflate: bytes) -> HostSummary:
    names: list[str] = data["names"]

    def ops(rows: list[list[int]]) -> list[CollectiveOp]:
        return [CollectiveOp(names[n], names[p], int(s), int(d), int(a)) for n, p, s, d, a in rows]

    device_part, collective_part = data["devices"], data["host_collectives"]
    return HostSummary(
        host=str(data["host"]),
        traces={str(k): str(v) for k, v in data["traces"].items()},
        top=int(data["top"]),
        max_timeline_events=int(data["max_timeline_events"]),
        top_operations=list(data["top_operations"]),
        steps=data["steps"],
        left_out_of_operations_ms=dict(data["left_out_of_operations_ms"]),
        unreadable=list(data["unreadable"]),
        collectives=HostCollectives(
            ops={label: ops(rows) for label, rows in collective_part["ops"].items()},
            steps_ns=[(int(a), int(b)) for a, b in collective_part["steps_ns"]],
        ),
        devices=HostDevices(
            str(data["host"]),
            devices=list(device_part["devices"]),
            ops={device: ops(rows) for device, rows in device_part["ops"].items()},
            executions=[DeviceEvent(names[ln], names[n], int(s), int(d)) for ln, n, s, d in device_part["executions"]],
            unreadable=list(device_part["unreadable"]),
        ),
        timeline=_piece(data["timeline"], deflate),
        seconds=float(data["seconds"]),
    )


def _piece_json(piece: TracePiece) -> dict[str, Any]:
    return {
        "pid": piece.at.pid,
        "origin_ns": piece.at.origin_ns,
        "shift_ns": piece.at.shift_ns,
        "deflate_bytes": len(piece.text.deflate),
        "crc32": piece.text.crc32,
        "length": piece.text.length,
        "total": piece.total,
        "kept": piece.kept,
        "shortest_kept_ns": piece.shortest_kept_ns,
        "first_start_ns": piece.first_start_ns,
    }


def _piece(data: dict[str, Any], deflate: bytes) -> TracePiece:
    optional = {key: None if data[key] is None else int(data[key]) for key in ("shortest_kept_ns", "first_start_ns")}
    return TracePiece(
        at=Placement(int(data["pid"]), int(data["origin_ns"]), int(data["shift_ns"])),
        text=Piece(deflate, int(data["crc32"]), int(data["length"])),
        total=int(data["total"]),
        kept=int(data["kept"]),
        **optional,
    )


def describe_made_where(made_where: Mapping[str, str]) -> str:
    """Where the hosts' summaries came from, in one line (summaries()' made_where)."""
    here = {name: where for name, where in made_where.items() if where != MADE_ON_HOST}
    text = f"{len(made_where) - len(here)} host(s) summarised their own traces"
    if here:
        reasons = "; ".join(f"{name}: {why}" for name, why in list(here.items())[:3])
        text += f", {len(here)} summarised here ({reasons}{'; ...' if len(here) > 3 else ''})"
    return text
