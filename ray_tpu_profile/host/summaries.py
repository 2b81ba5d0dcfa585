"""A host summarising its own traces once they are gathered (analysis/host_summary.py),
so that the driver's reports merge summaries instead of reading every host's events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.timeline import Placement


class HostSummaries:
    """Mixed into the host actor (host.HostActor), which sets host_name and output_dir and
    lists its files (host/files.HostFiles)."""

    host_name: str
    output_dir: Path

    list_paths: Callable[[], list[str]]
    sha256_of: Callable[[str], str]

    def summarise(
        self,
        top: int,
        max_timeline_events: int | None,
        trace_host: str | None = None,
        timeline_at: Placement | None = None,
    ) -> dict[str, Any]:
        """Writes summary.bin beside this host's traces, to be gathered with them
        (trace_host: the name they go under in the run directory, where it is not this
        host's: attach's traced processes; timeline_at: where its events go in the
        timeline, where the driver knows it already: timeline.Placement).
        Returns what it holds ({"seconds", "events", "bytes"}), or {"error": ...} where it
        could not be made: never raises, because a host whose summary fails still has its
        traces, and the driver then summarises them itself (and says why)."""
        from ray_tpu_profile.analysis.host_summary import SUMMARY, summarise, write_summary
        from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES
        from ray_tpu_profile.rundir.layout import host_file_dest

        path = self.output_dir / SUMMARY
        try:
            path.unlink(missing_ok=True)  # one from an earlier call: made from fewer traces
            traces = [rel for rel in self.list_paths() if rel.endswith(TRACE_SUFFIXES)]
            name = trace_host or self.host_name
            files = {host_file_dest(name, rel).as_posix(): self.output_dir / rel for rel in traces}
            sha256 = {host_file_dest(name, rel).as_posix(): self.sha256_of(rel) for rel in traces}
            summary = summarise(name, files, sha256, top, max_timeline_events, timeline_at)
            write_summary(path, summary)
        except Exception as e:  # returned, said by the driver and in the manifest; the traces stay
            path.unlink(missing_ok=True)
            return {"error": f"{type(e).__name__}: {e}"}
        return {"seconds": round(summary.seconds, 3), "events": summary.timeline.total, "bytes": path.stat().st_size}
