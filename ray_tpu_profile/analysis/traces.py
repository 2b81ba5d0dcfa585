"""Every event of a run's trace files at its wall-clock time (epoch ns): the one reader
behind report.json's self times and timeline.json.gz. A file that cannot be read is
named in the caller's error list; the host's other files are still read."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ray_tpu_profile.core.files import open_trace
from ray_tpu_profile.rundir.manifest_types import HostEntry

TRACE_SUFFIXES = (".xplane.pb", ".pt.trace.json.gz", ".pt.trace.json")
"""Files the driver itself reads (verification, skew, reports)."""


def xplane_events(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """Every event of an xplane at its wall-clock time: the converter gives times since the
    capture's `profile_start_time`."""
    from ray_tpu_profile.analysis.xplane import capture_start_ns, trace_events

    start_ns = capture_start_ns(path)
    for track, name, offset_ns, duration_ns in trace_events(path):
        yield track, name, start_ns + offset_ns, duration_ns


def torch_trace_events(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """Complete events of a torch profiler trace at their wall-clock time: Kineto writes
    `ts` in microseconds since `baseTimeNanoseconds`."""
    with open_trace(path) as f:
        trace = json.load(f)
    base_ns = int(trace.get("baseTimeNanoseconds", 0))
    threads = {
        (e.get("pid"), e.get("tid")): e["args"]["name"]
        for e in trace["traceEvents"]
        if e.get("ph") == "M" and e.get("name") == "thread_name" and "name" in e.get("args", {})
    }
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and "dur" in e:
            track = threads.get((e.get("pid"), e.get("tid")), f"thread {e.get('tid')}")
            yield track, e.get("name", "?"), base_ns + round(e["ts"] * 1000), round(e["dur"] * 1000)


def host_trace_events(run_dir: Path, host: HostEntry, errors: list[str]) -> Iterator[tuple[str, str, int, int]]:
    """(track, name, start epoch ns, duration ns) of every trace file a host delivered. Its
    listed files were verified on arrival, a failed host's too; one that is still not a
    readable trace (what failed the host at verify, say) goes into errors."""
    for _, events in host_trace_files(run_dir, host, errors):
        yield from events


def host_trace_files(
    run_dir: Path, host: HostEntry, errors: list[str]
) -> Iterator[tuple[str, Iterator[tuple[str, str, int, int]]]]:
    """(path in the run directory, its events) for each trace file of a host (errors: as
    host_trace_events)."""
    for f in host["files"]:
        if f["path"].endswith(TRACE_SUFFIXES):
            yield f["path"], _file_events(Path(run_dir) / f["path"], f["path"], errors)


def _file_events(path: Path, name: str, errors: list[str]) -> Iterator[tuple[str, str, int, int]]:
    from ray_tpu_profile.analysis.xplane import XplaneError

    reader = xplane_events if name.endswith(".xplane.pb") else torch_trace_events
    try:
        # Both readers parse the whole file before the first event: a bad file yields none.
        yield from reader(path)
    except (XplaneError, OSError, ValueError, KeyError) as e:
        errors.append(f"{name}: {type(e).__name__}: {e}")


@dataclass
class HostTraces:
    """One host's trace events, read once for everything derived from them at the end of
    a run (report and timeline each reading them again cost a second full read).

    files: path in the run directory -> (first, past) index of its events in `events`."""

    events: list[tuple[str, str, int, int]]
    unreadable: list[str] = field(default_factory=list)
    files: dict[str, tuple[int, int]] = field(default_factory=dict)

    def file_events(self) -> dict[str, Iterator[tuple[str, str, int, int]]]:
        """Each file's events, without copying them."""
        return {path: (self.events[i] for i in range(first, past)) for path, (first, past) in self.files.items()}


def read_trace_files(files: Mapping[str, Path]) -> HostTraces:
    """The events of a host's trace files (name in the run directory -> where the file is
    now: in the run directory, or on the host before the gather); other files are skipped."""
    traces = HostTraces(events=[])
    for name, path in files.items():
        if name.endswith(TRACE_SUFFIXES):
            first = len(traces.events)
            traces.events.extend(_file_events(path, name, traces.unreadable))
            traces.files[name] = (first, len(traces.events))
    return traces
