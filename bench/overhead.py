"""Where the wall time of `ray-tpu-profile run` goes on the 2-host embedded default.

Runs the CLI as a user would (local simulated cluster, tiny model) --repeats times and
splits each run's driver wall time (manifest `timings_s`) into cluster start and stop,
engine-flag validation (vLLM import), model load, warmup, capture, gather, reports, and
the rest. Host work is what the slowest host spent (manifest `phases`); the rest is
everything the tool itself adds: actor start, dispatch, barriers, verification, manifest
writes. Printed as ratios of the run excluding the local cluster's start and stop,
measured in the same run.

    .venv/bin/python bench/overhead.py [--repeats 3] [-- extra run flags]
"""

from __future__ import annotations

import argparse
import json
import statistics

from run_cli import run_measured


def host_max(manifest: dict, phase: str) -> float:
    return max(
        h["phases"][phase]["finished_at_s"] - h["phases"][phase]["started_at_s"]
        for h in manifest["hosts"]
        if h["phases"][phase]
    )


def split(manifest: dict) -> dict[str, float]:
    t = manifest["timings_s"]
    parts = {
        "cluster_start": t["cluster_start"],
        "cluster_stop": t.get("cluster_stop", 0.0),
        "validate": t["validate"],
        "load": host_max(manifest, "load"),
        "warmup": host_max(manifest, "warmup"),
        "capture": host_max(manifest, "profiled"),
        "gather": t["gather"],
        "reports": t.get("reports", 0.0),
    }
    parts["rest"] = t["total"] - sum(parts.values())
    parts["total"] = t["total"]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("run_flags", nargs="*")
    args = parser.parse_args()
    runs = [split(run_measured(*args.run_flags, label=f"run {i}").manifest) for i in range(args.repeats)]
    keys = [
        "cluster_start",
        "cluster_stop",
        "validate",
        "load",
        "warmup",
        "capture",
        "gather",
        "reports",
        "rest",
        "total",
    ]
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    whole = median["total"] - median["cluster_start"] - median["cluster_stop"]
    print(
        f"runs: {args.repeats}; median seconds; ratio = share of the run excluding the local cluster's start "
        f"and stop ({whole:.2f} s)"
    )
    print(f"{'part':<14}{'seconds':>9}{'ratio':>8}")
    for k in keys:
        ratio = "" if k in ("cluster_start", "cluster_stop", "total") else f"{median[k] / whole:8.3f}"
        print(f"{k:<14}{median[k]:9.2f}{ratio}")
    overhead = median["rest"] / whole
    print(f"orchestration overhead (rest / run excl. cluster start): {overhead:.3f}  target < 0.05")
    print(f"  with engine-flag validation counted as overhead: {(median['rest'] + median['validate']) / whole:.3f}")
    print("per run:", json.dumps(runs))


if __name__ == "__main__":
    main()
