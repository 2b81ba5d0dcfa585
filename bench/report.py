"""What the end-of-run reports cost, against reading the traces they come from.

For a run directory: the baseline is reading every healthy host's traces once (xplanes
through xprof's trace converter, torch traces through gzip + json), measured in the same
run; then report.json (statistics and self time per operation), timeline.json.gz (merge
and downsample) and report.png, each on its own as a ratio of the baseline, and all three
as the end of a run writes them (write_report: each host's traces read once for both the
report and the timeline) against the sum of the three on their own.

    .venv/bin/python bench/report.py RUN_DIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ray_tpu_profile.analysis.plot import write_plot
from ray_tpu_profile.analysis.report import build_report, write_report
from ray_tpu_profile.analysis.timeline import write_timeline
from ray_tpu_profile.analysis.traces import host_trace_events
from ray_tpu_profile.rundir.layout import read_manifest


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    manifest = read_manifest(args.run_dir)

    def read_traces() -> int:
        return sum(1 for h in manifest["hosts"] for _ in host_trace_events(args.run_dir, h, []))

    events = read_traces()
    parts = {
        "read traces (baseline)": read_traces,
        "report.json (stats, self times)": lambda: build_report(args.run_dir),
        "timeline.json.gz": lambda: write_timeline(args.run_dir),
        "report.png": lambda: write_plot(args.run_dir, manifest),
        "all three (write_report, one read)": lambda: write_report(args.run_dir),
    }
    medians = {name: statistics.median(timed(fn) for _ in range(args.repeats)) for name, fn in parts.items()}
    base = medians["read traces (baseline)"]
    print(
        f"run {manifest['run_id']}: {len(manifest['hosts'])} host(s), {events:,} trace events, "
        f"profiler {manifest['capture'].get('profiler')}; median of {args.repeats}"
    )
    for name, seconds in medians.items():
        print(f"{name:<36} {seconds:7.2f} s  {seconds / base:5.2f}x baseline")
    separate = sum(medians[name] for name in list(parts)[1:4])
    print(
        f"write_report / the three on their own ({separate:.2f} s): "
        f"{medians['all three (write_report, one read)'] / separate:.2f}"
    )


if __name__ == "__main__":
    main()
