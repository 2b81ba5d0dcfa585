"""The driver's end-of-run reports alone, by host count, on an idle machine (issue 26).

driver_scale.py times the reports with its 64 stand-in actors alive on the same 2 cores;
this one times them with nothing else running. Each host of a run directory is the
template's jax xplane (tests/data/jax-2hosts, 635 KB) and the summary its host would ship,
made by the tool's own host_summary.summarise with the placement `run` gives it (made
before the timing, as the hosts make them).

Timed (best of 3, each on the same run directory):
  merge     the hosts' summaries read, report.json built, timeline.json.gz spliced
  plot      report.png of the run (no devices panel: a jax CPU trace has no device plane)
  plot_4    report.png with 4 chips per host in the devices panel (stand-in numbers: the
            drawing cost of a v5e-style host, not an analysis)

Printed: seconds per count, the ratio to the 1-host time of the same run, and the
least-squares cost per host.

    .venv/bin/python bench/reports_scale.py [--hosts 1 8 32 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver_scale import TEMPLATE, manifest_for  # noqa: E402
from scale import fit  # noqa: E402

MEASURES = ("merge", "plot", "plot_4")


def build_run_dir(root: Path, n: int, template: dict, xplane: Path) -> dict:
    """N hosts, each with the template's xplane and its own summary, listed as `run` lists them."""
    from ray_tpu_profile.analysis import host_summary
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST, placements, timeline_origin_ns
    from ray_tpu_profile.core.files import sha256_file

    names = [f"host-{i:03d}" for i in range(n)]
    files = {}
    for name in names:
        rel = f"plugins/profile/session/{name}.xplane.pb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(xplane, root / rel)
        files[name] = [{"path": rel, "bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}]
    manifest = manifest_for(template, "reports-scale", "session", names, files)
    at = placements(manifest, timeline_origin_ns(manifest))
    for host in manifest["hosts"]:
        made = host_summary.summarise_from_run_dir(
            root, host, host_summary.TOP_OPERATIONS, DEFAULT_MAX_EVENTS_PER_HOST, at[host["name"]]
        )
        dest = root / "hosts" / host["name"] / host_summary.SUMMARY
        dest.parent.mkdir(parents=True)
        host_summary.write_summary(dest, made)
        rel = dest.relative_to(root).as_posix()
        host["files"].append({"path": rel, "bytes": dest.stat().st_size, "sha256": sha256_file(dest)})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def best_of_3(call) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def one_count(n: int, template: dict, xplane: Path, work: Path) -> dict[str, float]:
    from ray_tpu_profile.analysis.host_summary import summaries
    from ray_tpu_profile.analysis.plot import write_plot
    from ray_tpu_profile.analysis.report import build_report
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST, write_timeline

    root = work / f"run-{n}"
    manifest = build_run_dir(root, n, template, xplane)
    merged: dict = {}

    def merge() -> None:
        found, made_where = summaries(root, manifest, DEFAULT_MAX_EVENTS_PER_HOST)
        assert set(made_where.values()) == {"host"}, made_where
        merged["report"] = build_report(root, summaries=found, made_where=made_where)
        write_timeline(root, summaries=found, collectives=merged["report"]["collectives"])

    times = {"merge": best_of_3(merge)}
    times["plot"] = best_of_3(lambda: write_plot(root, manifest, merged["report"]["devices"]))
    chips = [
        {"host": h["name"], "device": f"TPU:{chip}", "busy_ms": 10.0, "collective_wait_ms": 2.0, "idle_ms": 5.0}
        for h in manifest["hosts"]
        for chip in range(4)
    ]
    times["plot_4"] = best_of_3(lambda: write_plot(root, manifest, chips))
    shutil.rmtree(root)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    template = json.loads((TEMPLATE / "manifest.json").read_text())
    (xplane,) = sorted(TEMPLATE.glob("plugins/profile/*/local-sim-w0.xplane.pb"))
    import matplotlib.pyplot  # noqa: F401  (imported before the first count: it must not pay for it)

    import ray_tpu_profile.analysis.report  # noqa: F401

    results = {}
    with tempfile.TemporaryDirectory(prefix="reports-scale-") as work:
        for n in args.hosts:
            results[n] = one_count(n, template, xplane, Path(work))
            print(f"{n} hosts: " + ", ".join(f"{m} {results[n][m]:.3f} s" for m in MEASURES), flush=True)
    counts = sorted(results)
    base = counts[0]
    print(f"\nbaseline: {base} host(s), same run; xplane {xplane.stat().st_size / 1e6:.2f} MB per host")
    print(
        f"{'measure':<8}"
        + "".join(f"{f'{n} h s':>10}" for n in counts)
        + "".join(f"{f'x{n}/{base}':>9}" for n in counts[1:])
        + f"{'per host ms':>13}"
    )
    for m in MEASURES:
        row = [results[n][m] for n in counts]
        line = f"{m:<8}" + "".join(f"{v:>10.3f}" for v in row)
        line += "".join(f"{results[n][m] / results[base][m]:>9.2f}" for n in counts[1:])
        print(line + f"{1000 * fit(counts, row)[1]:>13.2f}")


if __name__ == "__main__":
    main()
