"""Read back an xplane with xprof: proof that XProf can open it, and when tracing began."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ray_tpu_profile.errors import ToolError


class XplaneError(ToolError, ValueError):
    pass


XPROF_LIMIT_BYTES = 2 << 30
"""XProf reads an xplane as one protobuf message, and protobuf stops at 2 GiB."""
TOO_LARGE_ADVICE = (
    "capture less: a shorter --duration-ms, or --python-tracer-level 0 (the python tracer records every Python call)"
)


def size_problem(name: str, size_bytes: int) -> str | None:
    """Why an xplane of this size cannot be used, where its size alone says so."""
    if size_bytes == 0:
        return (
            f"{name}: 0 bytes. A profiler leaves an empty xplane when the capture outgrew XProf's 2 GiB "
            f"protobuf limit (tpu-inference users see this on long captures); {TOO_LARGE_ADVICE}"
        )
    if size_bytes >= XPROF_LIMIT_BYTES:
        return (
            f"{name}: {size_bytes:,} bytes, over XProf's 2 GiB protobuf limit, so XProf cannot open it; "
            f"{TOO_LARGE_ADVICE}"
        )
    return None


@dataclass(frozen=True)
class XplaneInfo:
    start_ns: int
    """`profile_start_time` the profiler wrote: when tracing began on that host (epoch ns)."""
    stop_ns: int
    planes: tuple[str, ...]
    events: int
    process_id: int | None = None
    """The traced process's pid, from the host planes' `process_id` stat (None: not recorded)."""


def read_xplane(path: Path) -> XplaneInfo:
    """Raises XplaneError for a missing, empty or unreadable file, or one with no events."""
    path = Path(path)
    if not path.is_file():
        raise XplaneError(f"{path.name}: no such file")
    problem = size_problem(path.name, path.stat().st_size)
    if problem:
        raise XplaneError(problem)
    from xprof.profile_data import ProfileData

    try:
        data = ProfileData.from_file(str(path))
    except Exception as e:  # xprof's own parse error, named in the host's failure reason
        raise XplaneError(f"{path.name}: xprof cannot read it ({e})") from None
    start, stop = _capture_times(data, path.name)
    planes = [plane.name for plane in data.planes]
    events = sum(len(line.events) for plane in data.planes for line in plane.lines)
    if events == 0:
        raise XplaneError(f"{path.name}: no trace event collected")
    stated = (dict(plane.stats).get("process_id") for plane in data.planes)
    pids = {pid for pid in stated if pid is not None}
    try:
        process_id = int(pids.pop()) if len(pids) == 1 else None
    except (TypeError, ValueError) as e:  # a crafted file's process_id: named, not a traceback
        raise XplaneError(f"{path.name}: unreadable process_id ({type(e).__name__}: {e})") from None
    return XplaneInfo(start_ns=start, stop_ns=stop, planes=tuple(planes), events=events, process_id=process_id)


def _capture_times(data, name: str) -> tuple[int, int]:
    """(profile_start_time, profile_stop_time) from the plane stats that carry them;
    XplaneError naming the file when they are missing or not numbers."""
    for plane in data.planes:
        stats = dict(plane.stats)
        if "profile_start_time" in stats:
            try:
                return int(stats["profile_start_time"]), int(stats["profile_stop_time"])
            except (KeyError, TypeError, ValueError) as e:
                raise XplaneError(f"{name}: unreadable capture times ({type(e).__name__}: {e})") from None
    raise XplaneError(f"{name}: no profile_start_time (not a profiler capture?)")


def capture_start_ns(path: Path) -> int:
    """When tracing began (epoch ns), without reading the events (read_xplane counts them)."""
    return capture_times_ns(path)[0]


def capture_times_ns(path: Path) -> tuple[int, int]:
    """When tracing began and ended (epoch ns), without reading the events."""
    from xprof.profile_data import ProfileData

    try:
        data = ProfileData.from_file(str(path))
    except Exception as e:  # xprof's own parse error, named in the message
        raise XplaneError(f"{Path(path).name}: xprof cannot read it ({e})") from None
    return _capture_times(data, Path(path).name)


def event_names(path: Path) -> set[str]:
    """Every distinct event name in the capture (for tests and reports)."""
    from xprof.profile_data import ProfileData

    data = ProfileData.from_file(str(path))
    return {event.name for plane in data.planes for line in plane.lines for event in line.events}


def trace_events(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """(track, name, start ns since `profile_start_time`, duration ns) of every event.

    Through xprof's own trace-viewer converter (C++, ~1 s per million events here; walking
    xprof's Python ProfileData takes ~8 s). The converter is the one XProf's UI uses before
    it turns the result into JSON (xprof.convert.raw_to_tool_data); it logs at INFO to fd 2,
    which would bury the run's own output, so that goes to a temporary file and is shown
    only if the conversion fails.
    """
    from xprof.convert import _pywrap_profiler_plugin
    from xprof.protobuf import trace_events_old_pb2

    # The converter keeps only the earliest 1M events unless TSL's cap (read from the
    # environment at each call) says otherwise; a 3 s capture is already ~1M: lift it.
    # INT32_MAX: a larger value (2**40 was tried) overflows to a cap of 0 events.
    with _env(TRACE_VIEWER_MAX_EVENTS_ENV, str(2**31 - 1)), _stderr_to_temp_file() as log:
        raw, ok = _pywrap_profiler_plugin.xspace_to_tools_data([str(path)], "trace_viewer", {"use_saved_result": False})
        if not ok:
            log.seek(0)
            log_tail = " | ".join(log.read().decode(errors="replace").strip().splitlines()[-5:])
    if not ok:
        detail = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        raise XplaneError(f"{Path(path).name}: xprof's trace converter failed: {detail}; its log: {log_tail}")
    trace = trace_events_old_pb2.Trace()
    trace.ParseFromString(raw)
    tracks = {
        (device_id, resource_id): f"{device.name} {resource.name}"
        for device_id, device in trace.devices.items()
        for resource_id, resource in device.resources.items()
    }
    for e in trace.trace_events:
        yield (
            tracks.get((e.device_id, e.resource_id), f"{e.device_id}/{e.resource_id}"),
            e.name,
            e.timestamp_ps // 1000,
            e.duration_ps // 1000,
        )


TRACE_VIEWER_MAX_EVENTS_ENV = "TF_PROFILER_TRACE_VIEWER_MAX_EVENTS"


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _stderr_to_temp_file() -> Iterator[BinaryIO]:
    """fd 2 (C++ logs bypass sys.stderr) into a temporary file for the duration."""
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
