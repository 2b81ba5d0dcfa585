"""What the device and collective analysis costs on TPU-sized device planes, against reading
the same xplane once.

A run directory of one engine across 2 hosts is written here (tests/support/tpu_traces.py:
4 chips per host, each step a compute op, a nested copy and an all-reduce, with
barrier-cores waits), scaled by --steps to about 4 events per chip and step. The baseline
is reading every host's xplane once into plain records (xspace.read_planes); then the
analysis (analysis/device_analysis.analyse_devices: device summaries, collectives matched
across both hosts on the driver's clock, stragglers) as a ratio of it, per million device
events: once in one process, once with each host in a worker process of its own. Then
`diff`'s device part of one run (diff.run_devices): as a run directory without the hosts'
summaries has it (the xplanes read here), and once each host's summary is shipped beside
its traces, as `run` does (read from the summaries; making them, on the hosts, is not
timed). Each measurement runs in a child process of its own, with its peak RSS from the
kernel (VmHWM; for the parallel one, the parent's only: its workers' are not counted).

    .venv/bin/python bench/devices.py [--steps 25000] [--repeats 3] [--hosts 1|2] [--chips N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    """This process's own peak RSS: the kernel's VmHWM, which starts afresh at exec. Not
    getrusage's ru_maxrss, which a child inherits from the process it was forked from (the
    bench's, having written the xplanes), so it read the same for every measurement."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(kind: str, run_dir: str) -> None:
    """One measurement in this (fresh) process: prints seconds and events."""
    sys.path.insert(0, str(REPO / "tests"))
    from ray_tpu_profile.analysis.device_analysis import analyse_devices
    from ray_tpu_profile.analysis.xspace import read_planes

    root = Path(run_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    started = time.perf_counter()
    if kind == "read":
        events = sum(
            len(line.events)
            for h in manifest["hosts"]
            for plane in read_planes(root / h["files"][0]["path"])
            for line in plane.lines
        )
    elif kind == "diff":
        from ray_tpu_profile.analysis.diff import Run, run_devices

        events = run_devices(Run("A", run_dir, root, manifest))["collectives_total"]
    else:
        # "analyse": as `report` would (here: one process, the xplanes being small);
        # "parallel": each host in its own worker process.
        result = analyse_devices(root, manifest, workers=2 if kind == "parallel" else 1)
        events = result["collectives_total"]
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "events": events, "peak_rss_mb": peak_mb}))


def measure(kind: str, run_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(run_dir)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hosts", type=int, choices=(1, 2), default=2, help="1: one host's xplane as big as --steps makes it"
    )
    parser.add_argument("--chips", type=int, default=4, help="device planes per host (1: one plane as big as it gets)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "RUN_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    sys.path.insert(0, str(REPO / "tests"))
    from support.tpu_traces import MS, Slow, ship_summaries, tpu_run_dir

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = tpu_run_dir(
            Path(tmp),
            hosts=("host-a", "host-b")[: args.hosts],
            chips=args.chips,
            steps=args.steps,
            slow=Slow("host-a", min(1, args.chips - 1), 3.0),
            clock_ahead_ns={"host-b": 40 * MS},
        )
        written_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in run_dir.rglob("*.xplane.pb")) / 1e6
        kinds = ("read", "analyse", "parallel", "diff") if args.hosts > 1 else ("read", "analyse", "diff")
        runs = {kind: [measure(kind, run_dir) for _ in range(args.repeats)] for kind in kinds}
        ship_summaries(run_dir)
        runs["diff summarised"] = [measure("diff", run_dir) for _ in range(args.repeats)]
    events = runs["read"][0]["events"]
    read_s = statistics.median(r["seconds"] for r in runs["read"])
    print(
        f"{args.hosts} host(s) x {args.chips} chip(s), {args.steps:,} steps: {events:,} device events, "
        f"{size_mb:.0f} MB of xplanes "
        f"(written in {written_s:.0f} s); median of {args.repeats}, each in a fresh process"
    )
    labels = {
        "read": "read once (baseline)",
        "analyse": "device analysis",
        "parallel": "the same, 2 host workers",
        "diff": "diff's device part, read",
        "diff summarised": "diff's, from summaries",
    }
    for kind, label in ((k, v) for k, v in labels.items() if k in runs):
        seconds = statistics.median(r["seconds"] for r in runs[kind])
        peak = max(r["peak_rss_mb"] for r in runs[kind])
        print(
            f"{label:<26} {seconds:7.2f} s  {seconds / read_s:5.2f}x baseline  "
            f"{seconds / (events / 1e6):6.2f} s per million events  peak RSS {peak:,.0f} MB"
        )
    print(f"collectives matched: {runs['analyse'][0]['events']:,}")


if __name__ == "__main__":
    main()
