"""How a run grows with hosts: the embedded default (tiny model, real vLLM, jax backend) on
1, 2, 4 and 8 simulated hosts, run as a user would (the CLI, a local simulated cluster).

Per host count (median of --repeats runs): driver wall time per stage (manifest
`timings_s`), orchestration overhead (the driver's time less the local cluster's start
and stop, engine-flag validation, the slowest host's model load, warmup and profiled
iterations, gather and reports, and the hosts summarising their traces for the reports:
what the tool itself adds), capture start skew, and the
driver's peak RSS (the CLI process's own, run_cli.py; before 2026-12-01 it was wait4's,
the largest of it and the local cluster's processes it started and reaped). Then each stage's cost is fitted against
host count (least squares, a + b * hosts, and the log-log slope between the two largest
counts: 1 is linear, 2 quadratic) and extrapolated to 64 and 256 hosts.

    .venv/bin/python bench/scale.py [--hosts 1 2 4 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from run_cli import run_measured

STAGES = (
    "cluster_start",
    "validate",
    "place",
    "clocks",
    "load",
    "warmup",
    "capture",
    "gather",
    "verify",
    "summaries",
    "reports",
    "cluster_stop",
)
FLAGS = [
    "--profiler",
    "jax",
    "--duration-ms",
    "300",
    "--input-len",
    "16",
    "--output-len",
    "16",
    "--batch-size",
    "4",
    "--num-iters-warmup",
    "2",
]


def host_max(manifest: dict, phase: str) -> float:
    return max(
        (
            h["phases"][phase]["finished_at_s"] - h["phases"][phase]["started_at_s"]
            for h in manifest["hosts"]
            if h["phases"][phase]
        ),
        default=0.0,
    )


def one_run(hosts: int) -> dict:
    measured = run_measured("--hosts", str(hosts), *FLAGS, label=f"{hosts} host(s)")
    manifest = measured.manifest
    t = manifest["timings_s"]
    stages = {s: t.get(s, 0.0) for s in STAGES}
    host_work = {
        "load": host_max(manifest, "load"),
        "warmup": host_max(manifest, "warmup"),
        "iterations": host_max(manifest, "profiled"),
    }
    outside = (
        stages["cluster_start"]
        + stages["cluster_stop"]
        + stages["validate"]
        + sum(host_work.values())
        + stages["gather"]
        + stages["summaries"]
        + stages["reports"]
    )
    run_s = t["total"] - stages["cluster_start"] - stages["cluster_stop"]
    return {
        "hosts": hosts,
        "stages": stages,
        "host_work": host_work,
        "total_s": t["total"],
        "wall_s": measured.wall_s,
        "overhead_s": t["total"] - outside,
        "overhead_share": (t["total"] - outside) / run_s,
        "skew_ms": manifest["capture"].get("start_skew_ms"),
        "skew_raw_ms": manifest["capture"].get("start_skew_raw_ms"),
        "driver_peak_rss_mb": measured.peak_rss_mb,
    }


def fit(xs: list[int], ys: list[float]) -> tuple[float, float, float | None]:
    """(a, b) of ys ~ a + b * xs by least squares, and the log-log slope of the last two points."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    slope = None
    if n >= 2 and ys[-1] > 0 and ys[-2] > 0:
        slope = math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])
    return my - b * mx, b, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for hosts in args.hosts:
        runs = [one_run(hosts) for _ in range(args.repeats)]
        row = {"hosts": hosts, "stages": {s: statistics.median(r["stages"][s] for r in runs) for s in STAGES}}
        for key in ("total_s", "overhead_s", "overhead_share", "driver_peak_rss_mb"):
            row[key] = statistics.median(r[key] for r in runs)
        row["skew_ms"] = [r["skew_ms"] for r in runs]
        row["skew_raw_ms"] = [r["skew_raw_ms"] for r in runs]
        rows.append(row)
        print(
            f"{hosts} host(s): total {row['total_s']:.1f} s, overhead {row['overhead_s']:.2f} s "
            f"({100 * row['overhead_share']:.1f}%), skew {row['skew_ms']} ms, driver peak RSS "
            f"{row['driver_peak_rss_mb']:.0f} MB",
            flush=True,
        )
    counts = [r["hosts"] for r in rows]
    base = rows[0]
    print(f"\nper stage, seconds (ratio to {base['hosts']} host(s) in this run):")
    print(
        f"{'stage':<14}"
        + "".join(f"{c:>16}" for c in counts)
        + f"{'a + b*hosts':>20}{'log-log':>9}"
        + f"{'@64':>9}{'@256':>9}"
    )
    for stage in (*STAGES, "overhead"):
        ys = [r["overhead_s"] if stage == "overhead" else r["stages"][stage] for r in rows]
        first = ys[0] or 1e-9
        a, b, slope = fit(counts, ys)
        print(
            f"{stage:<14}"
            + "".join(f"{y:9.2f} ({y / first:4.1f}x)" for y in ys)
            + f"{a:10.2f} + {b:7.3f}h"
            + (f"{slope:9.2f}" if slope is not None else f"{'-':>9}")
            + f"{a + 64 * b:9.1f}{a + 256 * b:9.1f}"
        )
    print("\nskew ms (driver's clock) per count:", {r["hosts"]: r["skew_ms"] for r in rows})
    print("skew ms (hosts' own clocks) per count:", {r["hosts"]: r["skew_raw_ms"] for r in rows})
    print("overhead share per count:", {r["hosts"]: round(r["overhead_share"], 4) for r in rows}, "target < 0.05")
    print("driver peak RSS MB per count:", {r["hosts"]: round(r["driver_peak_rss_mb"]) for r in rows})
    print("json:", json.dumps(rows))


if __name__ == "__main__":
    main()
