"""What changed between two runs: latency per host and shape with a verdict that accounts
for run-to-run noise, operations per host (HTA-style categories), and the multi-host
question: did one host regress while the others did not. Pure apart from reading each
run's traces (traces.py) and the summaries its hosts shipped (host_summary.py, for the
devices); the output is diff_output.py.

Shapes are matched by shape, except that two runs of one shape each are compared with
each other whatever their shapes (a row "4x16x8 -> 32x16x8").

Latency verdict: verdict.py's rule (a rank test with its interval of B/A; "too few
samples" below its minimum) on the kept iterations of each host and shape.

Operations: self time per operation from each host's own traces (ops.py: the profiler's
and the tool's own spans left out, engine steps counted apart), per profiled iteration
(its engine owner's iterations, for a host of an engine across hosts; every shape's
together). Categories: added (only in B), removed (only in A), unchanged (B within
UNCHANGED_FRACTION of A), increased, decreased.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict

from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.verdict import Comparison

UNCHANGED_FRACTION = 0.05
"""An operation whose per-iteration self time moved by no more than this fraction of A's is unchanged."""
TOP_OPS = 10


@dataclass(frozen=True)
class Run:
    """One side of the diff: its manifest and where its files are."""

    label: str
    """"A" or "B"."""
    location: str
    run_dir: Path
    manifest: Manifest


def open_run(location: str, label: str, scratch: Path) -> Run:
    """A run directory, or a result URL whose manifest and trace files are read down into
    scratch first. ConfigError (naming RUN_A / RUN_B) when it is not a run."""
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES
    from ray_tpu_profile.errors import ConfigError
    from ray_tpu_profile.rundir.layout import MANIFEST, read_manifest
    from ray_tpu_profile.rundir.remote import download_file, filesystem, is_url, join

    argument = f"RUN_{label}"
    if not is_url(location):
        run_dir = Path(location)
        if not run_dir.is_dir():
            raise ConfigError(argument, location, "is not a directory")
        if not (run_dir / MANIFEST).is_file():
            raise ConfigError(argument, location, f"has no {MANIFEST} (not a ray-tpu-profile run directory)")
        return Run(label, location, run_dir, read_manifest(run_dir, argument, location))
    fs, path = filesystem(location)
    if not fs.isfile(f"{path}/{MANIFEST}"):
        raise ConfigError(argument, location, f"has no {MANIFEST} (not a ray-tpu-profile run directory)")
    run_dir = scratch / label
    run_dir.mkdir(parents=True)
    download_file(join(location, MANIFEST), str(run_dir / MANIFEST))
    manifest = read_manifest(run_dir, argument, location)  # its paths checked before any is written here
    for host in manifest["hosts"]:
        for f in host["files"]:
            if f["path"].endswith(TRACE_SUFFIXES):
                (run_dir / f["path"]).parent.mkdir(parents=True, exist_ok=True)
                download_file(join(location, f["path"]), str(run_dir / f["path"]))
    return Run(label, location, run_dir, manifest)


def latency_samples(host: HostEntry, shape: str) -> list[float]:
    from ray_tpu_profile.analysis.verdict import kept_iterations

    done = host["shapes"].get(shape)
    return kept_iterations(done["latency_s"]) if done else []


def iterations_to_run(host: HostEntry, shape: str, need_n: int) -> int:
    """--num-iters that gives need_n kept iterations with this host's warmups."""
    from ray_tpu_profile.analysis.verdict import warmups_skipped

    done = host["shapes"].get(shape)
    kept_warmups = max(0, len(done["latency_s"]["warmup"]) - warmups_skipped(done["latency_s"])) if done else 0
    return max(1, need_n - kept_warmups)


def latency_row(host_a: HostEntry, host_b: HostEntry, shape_a: str, shape_b: str) -> dict[str, Any]:
    """One host and shape, A against B, by verdict.py's rule."""
    from ray_tpu_profile.analysis.verdict import compare

    sa, sb = latency_samples(host_a, shape_a), latency_samples(host_b, shape_b)
    row: dict[str, Any] = {
        "host": host_a["name"],
        "engine": host_a.get("engine"),
        "shape": shape_a if shape_a == shape_b else f"{shape_a} -> {shape_b}",
        "a_n": len(sa),
        "b_n": len(sb),
    }
    if not sa or not sb:  # a host of an engine across hosts: its owner iterates
        row.update(
            a_median_s=None,
            b_median_s=None,
            ratio=None,
            interval=None,
            verdict="no iterations",
            a_spread=None,
            b_spread=None,
            smallest_slower_ratio=None,
            need_n=None,
            note="",
        )
        return row
    c = compare(sa, sb)
    row.update(
        a_median_s=statistics.median(sa),
        b_median_s=statistics.median(sb),
        ratio=c.ratio,
        interval=None if c.interval is None else list(c.interval),
        verdict=c.verdict,
        a_spread=c.a_spread,
        b_spread=c.b_spread,
        smallest_slower_ratio=c.smallest_slower_ratio,
        need_n=c.need_n,
    )
    enough = None
    if c.need_n is not None:
        runs = max(iterations_to_run(host_a, shape_a, c.need_n), iterations_to_run(host_b, shape_b, c.need_n))
        enough = f"--num-iters {runs} or more decides"
    row["note"] = verdict_note(c, len(sa), len(sb), "iterations", enough)
    return row


def verdict_note(c: Comparison, a_n: int, b_n: int, samples: str, enough: str | None) -> str:
    """What a row could not decide, and what would: samples names them ("iterations"),
    enough says how many decide a RESOLVE_RATIO change ("--num-iters 8 or more decides"),
    None when even NEED_N_MAX would not. Empty for a row that was decided."""
    from ray_tpu_profile.analysis.verdict import NEED_N_MAX, RESOLVE_RATIO

    change = f"a {100 * (RESOLVE_RATIO - 1):.0f}% change"
    if enough is None:
        advice = f"even {NEED_N_MAX} {samples} a side would not decide {change} at this noise"
    else:
        advice = f"{enough} {change} here"
    if c.verdict == "too few samples":
        return f"{a_n} and {b_n} {samples}; {advice}"
    if c.verdict == "within noise":
        return f"could call {c.smallest_slower_ratio:.2f}x or more slower; {advice}"
    return ""


def host_key(host: HostEntry) -> str:
    """Hosts are matched by name, and by engine where engines span hosts."""
    return f"{host['name']} ({host['engine']})" if host.get("worker") else host["name"]


def diff_latency(a: Manifest, b: Manifest) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Rows per host and shape present in both runs, and what is only in one."""
    hosts_a = {host_key(h): h for h in a["hosts"]}
    hosts_b = {host_key(h): h for h in b["hosts"]}
    shapes_a, shapes_b = a["workload"]["shapes"], b["workload"]["shapes"]
    pairs = shape_pairs(shapes_a, shapes_b)
    rows = [
        latency_row(hosts_a[key], hosts_b[key], shape_a, shape_b)
        for key in (k for k in hosts_a if k in hosts_b)
        for shape_a, shape_b in pairs
    ]
    only = {
        "hosts_only_in_a": [k for k in hosts_a if k not in hosts_b],
        "hosts_only_in_b": [k for k in hosts_b if k not in hosts_a],
        "shapes_only_in_a": [s for s in shapes_a if s not in {p[0] for p in pairs}],
        "shapes_only_in_b": [s for s in shapes_b if s not in {p[1] for p in pairs}],
    }
    return rows, only


def shape_pairs(shapes_a: list[str], shapes_b: list[str]) -> list[tuple[str, str]]:
    """Shapes are matched by shape; two runs of one shape each are compared whatever their
    shapes (the usual question: what did a bigger batch, or another flag, cost)."""
    if len(shapes_a) == len(shapes_b) == 1:
        return [(shapes_a[0], shapes_b[0])]
    return [(s, s) for s in shapes_a if s in shapes_b]


def profiled_iterations(manifest: Manifest, host: HostEntry) -> int:
    """Profiled iterations behind a host's traces: its own, or its engine owner's."""
    owner_name = next((e["owner"] for e in manifest.get("engines", []) if host["name"] in e["hosts"]), host["name"])
    owner = next(h for h in manifest["hosts"] if h["name"] == owner_name)
    return sum(len(done["latency_s"]["profiled"]) for done in owner["shapes"].values())


def diff_ops_of_host(a_ms: dict[str, float], b_ms: dict[str, float], top: int = TOP_OPS) -> dict[str, Any]:
    """HTA-style categories of per-iteration self times (ms) of one host in A and B."""
    categories: dict[str, list[str]] = {k: [] for k in ("added", "removed", "increased", "decreased", "unchanged")}
    deltas = {}
    for name in sorted(set(a_ms) | set(b_ms)):
        before, after = a_ms.get(name), b_ms.get(name)
        if before is None:
            categories["added"].append(name)
        elif after is None:
            categories["removed"].append(name)
        elif abs(after - before) <= UNCHANGED_FRACTION * abs(before):
            categories["unchanged"].append(name)
        else:
            categories["increased" if after > before else "decreased"].append(name)
        deltas[name] = (after or 0.0) - (before or 0.0)
    grown = sum(d for d in deltas.values() if d > 0) or 1.0
    shrunk = sum(-d for d in deltas.values() if d < 0) or 1.0

    def entry(name: str, share_of: float) -> dict[str, Any]:
        return {
            "name": name,
            "a_ms": a_ms.get(name),
            "b_ms": b_ms.get(name),
            "delta_ms": deltas[name],
            "share": abs(deltas[name]) / share_of,
        }

    return {
        "counts": {k: len(v) for k, v in categories.items()},
        "a_total_ms": sum(a_ms.values()),
        "b_total_ms": sum(b_ms.values()),
        "top_increases": [
            entry(n, grown) for n in sorted((n for n in deltas if deltas[n] > 0), key=lambda n: -deltas[n])[:top]
        ],
        "top_decreases": [
            entry(n, shrunk) for n in sorted((n for n in deltas if deltas[n] < 0), key=lambda n: deltas[n])[:top]
        ],
        "categories": categories,
    }


def host_ops(run: Run, host: HostEntry) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """(self ms per operation per profiled iteration, steps per iteration, unreadable files)."""
    from ray_tpu_profile.analysis.ops import operation_profile
    from ray_tpu_profile.analysis.traces import host_trace_events

    unreadable: list[str] = []
    profile = operation_profile(host_trace_events(run.run_dir, host, unreadable))
    iterations = max(1, profiled_iterations(run.manifest, host))
    steps = profile.steps()
    return (
        {name: ms / iterations for name, ms in profile.self_ms.items()},
        {"per_iteration": steps["count"] / iterations, "mean_ms": steps["mean_ms"]},
        unreadable,
    )


def diff_ops(a: Run, b: Run, top: int = TOP_OPS) -> dict[str, Any]:
    profilers = a.manifest["capture"].get("profiler"), b.manifest["capture"].get("profiler")
    if profilers[0] != profilers[1]:
        return {
            "compared": False,
            "reason": f"run A was captured with {profilers[0]} and run B with {profilers[1]}: "
            "their trace events are different things, so only latency is compared",
            "hosts": {},
        }
    hosts_b = {host_key(h): h for h in b.manifest["hosts"]}
    per_host = {}
    for host_a in a.manifest["hosts"]:
        host_b = hosts_b.get(host_key(host_a))
        if host_b is None:
            continue
        a_ms, a_steps, a_bad = host_ops(a, host_a)
        b_ms, b_steps, b_bad = host_ops(b, host_b)
        if not a_ms or not b_ms:
            per_host[host_a["name"]] = {
                "compared": False,
                "reason": f"no operations in run {'A' if not a_ms else 'B'}'s traces of this host"
                + (f" (unreadable: {'; '.join(a_bad + b_bad)})" if a_bad or b_bad else ""),
            }
            continue
        per_host[host_a["name"]] = {
            "compared": True,
            **diff_ops_of_host(a_ms, b_ms, top),
            "steps": {"a": a_steps, "b": b_steps},
            "unreadable": a_bad + b_bad,
        }
    return {
        "compared": True,
        "profiler": profilers[0],
        "unit": "ms of self time per profiled iteration",
        "hosts": per_host,
    }


def diff_hosts(a: Manifest, b: Manifest, latency: list[dict[str, Any]]) -> dict[str, Any]:
    """The slowest host and skew of each run, and whether some hosts regressed while others did not."""
    from ray_tpu_profile.analysis.report import slowest_host
    from ray_tpu_profile.rundir.layout import skew_text_by_shape

    def side(manifest: Manifest) -> dict[str, Any]:
        slowest = slowest_host(manifest)
        return {
            "slowest_host": slowest[0] if slowest else None,
            "slowest_profiled_mean_s": slowest[1] if slowest else None,
            "capture_start_skew_ms": manifest["capture"].get("start_skew_ms"),
            "capture_start_skew": skew_text_by_shape(manifest),
        }

    compared = {r["host"] for r in latency if r["ratio"] is not None}
    slower = sorted({r["host"] for r in latency if r["verdict"] == "slower"})
    others = sorted(compared - set(slower))
    if not slower:
        summary = "no host is slower"
    elif not others:
        summary = f"every host compared is slower ({len(slower)})"
    else:
        worst = {h: max(r["ratio"] for r in latency if r["host"] == h and r["verdict"] == "slower") for h in slower}
        summary = (
            ", ".join(f"{h} ({worst[h]:.2f}x)" for h in slower)
            + f" regressed while {len(others)} other host(s) did not: {', '.join(others)}"
        )
    return {
        "a": side(a),
        "b": side(b),
        "slower_hosts": slower,
        "not_slower_hosts": others,
        "only_some_regressed": bool(slower and others),
        "summary": summary,
    }


def diff_devices(a: Run, b: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(devices, collectives). devices: per host and device in both runs, step time (the
    device's step module executions, by verdict.py's rule, as latency), busy time,
    collective wait and category time A vs B. collectives: per engine in both runs, its
    straggler in each and the others' wait per step, by the same rule."""
    analysed_a, analysed_b = run_devices(a), run_devices(b)
    return _device_rows(analysed_a["devices"], analysed_b["devices"]), _collective_rows(
        analysed_a["stragglers"], analysed_b["stragglers"]
    )


def run_devices(run: Run, top: int = TOP_OPS) -> dict[str, Any]:
    """device_analysis' result for one run: each host's devices (and host-level collectives)
    from the summary its host shipped, where that summary stands for the traces its
    manifest lists (host_summary.problem), else from its xplanes read here. The ops above
    read every trace event anyway; the device planes, the large part of a TPU xplane, need
    not be parsed a second time where the hosts summarised them."""
    from ray_tpu_profile.analysis.device_analysis import host_devices, merge_devices
    from ray_tpu_profile.analysis.host_summary import shipped_summary

    per_host, host_level = [], {}
    for host in run.manifest["hosts"]:
        summary, _ = shipped_summary(run.run_dir, host, top, None)  # its timeline part is not used
        if summary is not None:
            per_host.append(summary.devices)
            host_level[host["name"]] = summary.collectives
        else:
            per_host.append(host_devices(run.run_dir, host, top))
    # Every host's host-level collectives, or none: merge_devices then reads them only if an
    # engine needs them (reading them takes every trace event into memory).
    every_host = len(host_level) == len(run.manifest["hosts"])
    return merge_devices(run.run_dir, run.manifest, per_host, host_level if every_host else None)


def _collective_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from ray_tpu_profile.analysis.verdict import compare

    side_b = {s["engine"]: s for s in b}
    rows = []
    for sa in a:
        sb = side_b.get(sa["engine"])
        if sb is None:
            continue
        row: dict[str, Any] = {
            "engine": sa["engine"],
            "straggler": [sa["straggler"], sb["straggler"]],
            "verdicts": [sa["verdict"], sb["verdict"]],
            "wait_per_step_ms": [sa["wait_per_step_ms"], sb["wait_per_step_ms"]],
            "a_n": len(sa["steps_wait_ms"]),
            "b_n": len(sb["steps_wait_ms"]),
        }
        if sa["steps_wait_ms"] and sb["steps_wait_ms"]:
            c = compare(sa["steps_wait_ms"], sb["steps_wait_ms"])
            row.update(wait_ratio=c.ratio, interval=None if c.interval is None else list(c.interval), verdict=c.verdict)
        else:
            row.update(wait_ratio=None, interval=None, verdict="no steps")
        rows.append(row)
    return rows


def _device_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from ray_tpu_profile.analysis.verdict import compare

    side_a = {(d["host"], d["device"]): d for d in a}
    side_b = {(d["host"], d["device"]): d for d in b}
    rows = []
    for key in (k for k in side_a if k in side_b):
        da, db = side_a[key], side_b[key]
        row: dict[str, Any] = {
            "host": key[0],
            "device": key[1],
            "a_n": len(da["steps_ms"]),
            "b_n": len(db["steps_ms"]),
            "busy_ms": [da["busy_ms"], db["busy_ms"]],
            "collective_wait_ms": [da["collective_wait_ms"], db["collective_wait_ms"]],
            "categories_ms": {
                c: [da["categories_ms"].get(c, 0.0), db["categories_ms"].get(c, 0.0)]
                for c in dict.fromkeys([*da["categories_ms"], *db["categories_ms"]])
            },
        }
        if da["steps_ms"] and db["steps_ms"]:
            c = compare(da["steps_ms"], db["steps_ms"])
            row.update(
                step_ratio=c.ratio,
                interval=None if c.interval is None else list(c.interval),
                verdict=c.verdict,
                smallest_slower_ratio=c.smallest_slower_ratio,
                need_n=c.need_n,
                note=verdict_note(
                    c,
                    len(da["steps_ms"]),
                    len(db["steps_ms"]),
                    "steps",
                    None if c.need_n is None else f"{c.need_n} steps a side decide",
                ),
            )
        else:
            row.update(
                step_ratio=None, interval=None, verdict="no steps", smallest_slower_ratio=None, need_n=None, note=""
            )
        rows.append(row)
    return rows


def _describe(run: Run) -> dict[str, Any]:
    """One side of the diff as its output names it."""
    m = run.manifest
    return {
        "location": run.location,
        "run_id": m["run_id"],
        "status": m["status"],
        "profiler": m["capture"].get("profiler"),
        "shapes": m["workload"]["shapes"],
    }


def diff_runs(a: Run, b: Run, top: int = TOP_OPS) -> dict[str, Any]:
    from ray_tpu_profile.analysis import verdict

    latency, only = diff_latency(a.manifest, b.manifest)
    return {
        "a": _describe(a),
        "b": _describe(b),
        "rule": verdict.RULE,
        "ops_rule": (
            f"operations: one total per run (self time per profiled iteration), so no test applies: "
            f"unchanged within {100 * UNCHANGED_FRACTION:.0f}% of A, else increased or decreased"
        ),
        "latency": latency,
        **only,
        "ops": diff_ops(a, b, top),
        "hosts": diff_hosts(a.manifest, b.manifest, latency),
        **dict(zip(("devices", "collectives"), diff_devices(a, b))),
    }


class GateRow(TypedDict):
    what: str
    """`<host> <shape>` for latency, `<host> <device> step` for a device's step time."""
    ratio: float | None
    verdict: str
    note: str


def gate_failures(diff: dict[str, Any], percent: float, allow_few_samples: bool) -> tuple[list[GateRow], list[GateRow]]:
    """--fail-above, over latency rows and devices' step time alike: (rows slower by more
    than percent, rows that could not have seen such a regression: too few samples, or
    within noise whose smallest callable ratio is above the threshold). The second list is
    empty with allow_few_samples."""
    limit = 1 + percent / 100
    rows: list[tuple[GateRow, float | None]] = [
        (
            {"what": f"{r['host']} {r['shape']}", "ratio": r["ratio"], "verdict": r["verdict"], "note": r["note"]},
            r["smallest_slower_ratio"],
        )
        for r in diff["latency"]
    ] + [
        (
            {
                "what": f"{d['host']} {d['device']} step",
                "ratio": d["step_ratio"],
                "verdict": d["verdict"],
                "note": d["note"],
            },
            d["smallest_slower_ratio"],
        )
        for d in diff.get("devices") or []
    ]
    over = [r for r, _ in rows if r["verdict"] == "slower" and r["ratio"] is not None and r["ratio"] > limit]
    blind = (
        []
        if allow_few_samples
        else [
            r
            for r, smallest in rows
            if r["verdict"] == "too few samples"
            or (r["verdict"] == "within noise" and smallest is not None and smallest > limit)
        ]
    )
    return over, blind
