"""Read back an xplane with xprof: proof that XProf can open it, and when tracing began."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class XplaneError(ValueError):
    pass


@dataclass(frozen=True)
class XplaneInfo:
    start_ns: int
    """`profile_start_time` the profiler wrote: when tracing began on that host (epoch ns)."""
    stop_ns: int
    planes: tuple[str, ...]
    events: int


def read_xplane(path: Path) -> XplaneInfo:
    """Raises XplaneError for a missing, empty or unreadable file, or one with no events."""
    path = Path(path)
    if not path.is_file():
        raise XplaneError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise XplaneError(f"{path.name}: 0 bytes")
    from xprof.profile_data import ProfileData

    try:
        data = ProfileData.from_file(str(path))
    except Exception as e:  # xprof's own parse error, named in the host's failure reason
        raise XplaneError(f"{path.name}: xprof cannot read it ({e})") from None
    start = stop = None
    planes, events = [], 0
    for plane in data.planes:
        planes.append(plane.name)
        stats = dict(plane.stats)
        if "profile_start_time" in stats:
            start, stop = int(stats["profile_start_time"]), int(stats["profile_stop_time"])
        events += sum(len(line.events) for line in plane.lines)
    if start is None:
        raise XplaneError(f"{path.name}: no profile_start_time (not a profiler capture?)")
    if events == 0:
        raise XplaneError(f"{path.name}: no trace event collected")
    return XplaneInfo(start_ns=start, stop_ns=stop, planes=tuple(planes), events=events)


def event_names(path: Path) -> set[str]:
    """Every distinct event name in the capture (for tests and reports)."""
    from xprof.profile_data import ProfileData

    data = ProfileData.from_file(str(path))
    return {event.name for plane in data.planes for line in plane.lines for event in line.events}
