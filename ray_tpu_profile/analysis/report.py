"""Summaries of a run for people: the end-of-run table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ray_tpu_profile.analysis.host_summary import TOP_OPERATIONS
from ray_tpu_profile.analysis.report_types import HostReport, Report, SlowestHost
from ray_tpu_profile.errors import ToolError
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.host_summary import HostSummary


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "-"


def summary_table(manifest: Manifest) -> Table:
    from ray_tpu_profile.rundir import layout

    table = Table(title=f"run {manifest['run_id']}: {manifest['status']}", title_justify="left")
    for column in ("host", "status", "load s", "warmup mean s", "profiled mean s", "files", "bytes"):
        table.add_column(column, justify="left" if column in ("host", "status") else "right", no_wrap=True)
    for host in manifest["hosts"]:
        latency = host["latency_s"]
        status = host["status"] if host["status"] == "ok" else f"{host['status']} at {host['stage']}"
        table.add_row(
            layout.host_label(host),
            status,
            f"{latency['load']:.2f}" if latency["load"] is not None else "-",
            _mean(latency["warmup"]),
            _mean(latency["profiled"]),
            str(len(host["files"])),
            f"{sum(f['bytes'] for f in host['files']):,}",
        )
    return table


def slowest_host(manifest: Manifest) -> tuple[str, float, float] | None:
    """(name, its profiled mean, the median host's) among hosts with profiled latencies."""
    means = {
        h["name"]: statistics.fmean(h["latency_s"]["profiled"]) for h in manifest["hosts"] if h["latency_s"]["profiled"]
    }
    if not means:
        return None
    name = max(means, key=means.__getitem__)
    return name, means[name], statistics.median(means.values())


def print_summary(manifest: Manifest, run_dir: Path, console: Console | None = None) -> None:
    # Not a terminal (a Ray job log, a pipe): rich would assume 80 columns and wrap names.
    console = console or Console(highlight=False, soft_wrap=True, width=None if _is_tty() else 160)
    console.print(summary_table(manifest))
    from ray_tpu_profile.rundir.layout import clock_warnings, skew_text_by_shape

    skews = skew_text_by_shape(manifest)
    for shape, text in skews.items():
        console.print(
            f"capture start skew across hosts{' of ' + shape if len(skews) > 1 else ''}: {text} (from the xplanes)"
        )
    for name, warning in clock_warnings(manifest).items():
        console.print(f"warning: {name}: {warning}")
    slowest = slowest_host(manifest)
    if slowest and len(manifest["hosts"]) > 1:
        name, mean, median = slowest
        console.print(
            f"slowest host: {name}, profiled mean {mean:.3f} s, {100 * (mean / median - 1):+.1f}% vs the median host"
        )
    # What the chips did and whom they waited for, where the run's reports are here to read.
    report = Path(str(run_dir)) / "report.json"
    if "://" not in str(run_dir) and report.is_file():
        import json

        _print_devices(json.loads(report.read_text()), console)
    for host in manifest["hosts"]:
        if host["error"]:
            console.print(f"{host['name']}: {host['error']}")
        # Neither fails a host (its traces are in), but each is worth a look.
        summary_error = (host.get("summary") or {}).get("error")
        if summary_error:
            console.print(f"{host['name']}: no summary of its own ({summary_error}); the reports read its traces")
        if host.get("scratch_kept"):
            console.print(f"{host['name']}: its scratch {host['scratch_dir']} is still there ({host['scratch_kept']})")
    if manifest.get("error"):
        console.print(f"run: {manifest['error']}")
    console.print(f"run directory: {run_dir}")


def _is_tty() -> bool:
    import sys

    return sys.stdout.isatty()


def print_plan(planned: dict[str, Any], console: Console | None = None) -> None:
    """`ray-tpu-profile plan` for people."""
    console = console or Console(highlight=False, soft_wrap=True, width=None if _is_tty() else 160)
    for s in planned["slices"]:
        console.print(f"slice {s['name']}: {s['pod_type']}, hosts {', '.join(s['hosts'])}")
    table = Table(
        title=f"{len(planned['actors'])} actor(s), one per host; reserved with {planned['placement']['reservation']}",
        title_justify="left",
    )
    for column in ("host", "node", "chips", "slice", "worker"):
        table.add_column(column, no_wrap=True)
    for h in planned["hosts"]:
        table.add_row(
            h["name"],
            h["node_id"][:12],
            str(h["chips"]),
            h["slice_name"] or "-",
            "-" if h["worker_id"] is None else str(h["worker_id"]),
        )
    console.print(table)
    for engine in planned.get("engines", []):
        if len(engine["hosts"]) > 1:
            ranks = ", ".join(f"{h} (ranks {', '.join(map(str, r))})" for h, r in engine["ranks"].items())
            console.print(
                f"{engine['name']}: TP {engine['tensor_parallel_size']} x PP {engine['pipeline_parallel_size']} "
                f"across {ranks}; owner {engine['owner']}"
            )
    if len(planned.get("engines", [])) > 1:
        console.print(f"{len(planned['engines'])} engines (data-parallel replicas), profiled together")
    w, c, e = planned["workload"], planned["capture"], planned["engine"]
    console.print(
        f"workload: {', '.join(w['shapes'])} (batch x input x output), {w['num_iters_warmup']} warmup + "
        f"{w['num_iters']} profiled iteration(s) per shape, one model load per host"
    )
    console.print(
        f"capture: {c['profiler']} ({c['chosen_by']}), delay {c['delay_ms']} ms, duration {c['duration_ms']} ms"
    )
    console.print(
        f"engine: tensor parallel {e['tensor_parallel_size']}, pipeline parallel "
        f"{e.get('pipeline_parallel_size', 1)}; flags {' '.join(e['argv'])}"
    )
    console.print(f"env in every model process: {', '.join(f'{k}={v}' for k, v in e['env'].items())}")


def host_report(host: HostEntry, summary: HostSummary) -> HostReport:
    """One host's part of report.json: its latencies from the manifest, the rest from the
    summary of its traces (host_summary.py)."""
    from ray_tpu_profile.analysis.host_summary import SUMMARY
    from ray_tpu_profile.analysis.summary_stats import latency_stats
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES
    from ray_tpu_profile.analysis.verdict import kept_iterations, spread

    def spread_of(latency_s: Mapping[str, Any]) -> float | None:
        """The spread of what diff's verdict would compare (the kept iterations)."""
        kept = kept_iterations(latency_s)
        return spread(kept) if kept else None

    return {
        "name": host["name"],
        "engine": host.get("engine"),
        "ranks": host.get("ranks", []),
        "status": host["status"],
        "stage": host["stage"],
        "error": host["error"],
        "warmup_s": latency_stats(host["latency_s"]["warmup"]),
        "profiled_s": latency_stats(host["latency_s"]["profiled"]),
        "kept_n": len(kept_iterations(host["latency_s"])),
        "spread": spread_of(host["latency_s"]),
        # What the host delivered of its run, not the summary it made of it for this report.
        "trace_bytes": sum(f["bytes"] for f in host["files"] if not f["path"].endswith(f"/{SUMMARY}")),
        "traces": [f["path"] for f in host["files"] if f["path"].endswith(TRACE_SUFFIXES)],
        "unreadable_traces": summary.unreadable,
        "top_operations": summary.top_operations,
        "steps": summary.steps,
        "left_out_of_operations_ms": summary.left_out_of_operations_ms,
        "shapes": {
            shape: {
                "warmup_s": latency_stats(done["latency_s"]["warmup"]),
                "profiled_s": latency_stats(done["latency_s"]["profiled"]),
                "kept_n": len(kept_iterations(done["latency_s"])),
                "spread": spread_of(done["latency_s"]),
            }
            for shape, done in host["shapes"].items()
        },
    }


def build_report(
    run_dir: Path,
    top: int = TOP_OPERATIONS,
    summaries: dict[str, HostSummary] | None = None,
    made_where: dict[str, str] | None = None,
) -> Report:
    """report.json: per host latency statistics, top operations by self time from its own
    trace, trace bytes; capture skew; the slowest host against the median; failures;
    devices, collectives and stragglers (device_analysis.py). summaries: each host's
    (host_summary.py), where the caller has them, made with this top (made_where: where
    each was made); else they are made here from the traces."""
    from ray_tpu_profile.analysis.device_analysis import merge_devices
    from ray_tpu_profile.analysis.host_summary import summaries as host_summaries
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST
    from ray_tpu_profile.rundir import layout

    manifest = layout.read_manifest(run_dir)
    if summaries is None:
        summaries, made_where = host_summaries(run_dir, manifest, DEFAULT_MAX_EVENTS_PER_HOST, top)
    host_level = {name: s.collectives for name, s in summaries.items()}
    devices = merge_devices(run_dir, manifest, [s.devices for s in summaries.values()], host_level)
    return {
        "run_id": manifest["run_id"],
        "status": manifest["status"],
        "shape": manifest["workload"]["shape"],
        "profiler": manifest["capture"].get("profiler"),
        "capture_start_skew_ms": manifest["capture"].get("start_skew_ms"),
        "capture_start_skew_uncertainty_ms": manifest["capture"].get("start_skew_uncertainty_ms"),
        "capture_start_skew_raw_ms": manifest["capture"].get("start_skew_raw_ms"),
        "capture_start_skew_ms_by_shape": layout.skew_by_shape(manifest),
        "capture_start_skew_by_shape": layout.skew_text_by_shape(manifest),
        "clocks": {
            h["name"]: {"offset_ms": c["offset_ms"], "uncertainty_ms": c["uncertainty_ms"], "warning": c["warning"]}
            for h in manifest["hosts"]
            if (c := h.get("clock"))  # none in run directories from before clocks were measured
        },
        "slowest_host": _slowest_json(manifest),
        "load": manifest.get("load"),
        "failed_hosts": [
            {"name": h["name"], "stage": h["stage"], "error": h["error"]}
            for h in manifest["hosts"]
            if h["status"] != "ok"
        ],
        "hosts": [host_report(h, summaries[h["name"]]) for h in manifest["hosts"]],
        "summarised_on": made_where or {},
        "devices": devices["devices"],
        "collectives": devices["collectives"],
        "collectives_total": devices["collectives_total"],
        "stragglers": devices["stragglers"],
        "unreadable_device_traces": devices["unreadable"],
    }


def _slowest_json(manifest: Manifest) -> SlowestHost | None:
    """report.json's `slowest_host`: the slowest host against the median host."""
    slowest = slowest_host(manifest)
    if slowest is None:
        return None
    name, mean_s, median_s = slowest
    return {
        "name": name,
        "profiled_mean_s": mean_s,
        "median_host_profiled_mean_s": median_s,
        "slower_than_median": mean_s / median_s - 1 if median_s else None,
    }


def _spread_text(entry: dict[str, Any]) -> str:
    """MAD / median of the kept iterations, and how many (what diff would compare)."""
    if entry.get("spread") is None:  # a report.json written before spread was reported
        return "-"
    return f"{100 * entry['spread']:.1f}% of {entry['kept_n']}"


def _stat(stats: dict[str, Any] | None, key: str) -> str:
    """One latency statistic in seconds, or '-' where there are none."""
    return "-" if not stats else f"{stats[key]:.4f}"


def _latency_cells(profiled: dict[str, Any] | None, warmup: dict[str, Any] | None) -> list[str]:
    """The profiled mean, p50, p90, max and std, and the warmup mean, as table cells."""
    return [*(_stat(profiled, key) for key in ("mean", "p50", "p90", "max", "std")), _stat(warmup, "mean")]


def _hosts_table(report: dict[str, Any]) -> Table:
    """The report's main table: one row per host, its latency, trace bytes and top operation."""
    table = Table(
        title=f"run {report['run_id']} ({report['status']}), shape {report['shape']}, {report['profiler']}",
        title_justify="left",
    )
    for column in (
        "host",
        "status",
        "profiled mean",
        "p50",
        "p90",
        "max",
        "std",
        "warmup mean",
        "spread",
        "trace bytes",
        "top op (self)",
    ):
        table.add_column(
            column, justify="left" if column in ("host", "status", "top op (self)") else "right", no_wrap=True
        )
    for h in report["hosts"]:
        top = h["top_operations"][0] if h["top_operations"] else None
        table.add_row(
            h["name"],
            h["status"],
            *_latency_cells(h["profiled_s"], h["warmup_s"]),
            _spread_text(h),
            f"{h['trace_bytes']:,}",
            f"{top['name'][:48]} {100 * top['share']:.0f}%" if top else "-",
        )
    return table


def _shapes_table(report: dict[str, Any], shapes: list[str]) -> Table:
    """A sweep's latency per shape and host (seconds)."""
    per_shape = Table(title="per shape (seconds)", title_justify="left")
    for column in ("shape", "host", "profiled mean", "p50", "p90", "max", "std", "warmup mean", "spread"):
        per_shape.add_column(column, justify="left" if column in ("shape", "host") else "right", no_wrap=True)
    for shape in shapes:
        for h in report["hosts"]:
            done = h["shapes"].get(shape)
            if done:
                per_shape.add_row(
                    shape, h["name"], *_latency_cells(done["profiled_s"], done["warmup_s"]), _spread_text(done)
                )
    return per_shape


def _print_run_notes(report: dict[str, Any], console: Console) -> None:
    """The lines under the tables about the whole run: skew, clock warnings, slowest host, failures, load."""
    by_shape = report.get("capture_start_skew_by_shape") or {}
    for shape, text in by_shape.items():
        console.print(f"capture start skew{' ' + shape if len(by_shape) > 1 else ''}: {text}")
    for name, clock in (report.get("clocks") or {}).items():
        if clock["warning"]:
            console.print(f"warning: {name}: {clock['warning']}")
    s = report["slowest_host"]
    if s and s["slower_than_median"] is not None and len(report["hosts"]) > 1:
        console.print(f"slowest host: {s['name']}, {100 * s['slower_than_median']:+.1f}% vs the median host")
    for f in report["failed_hosts"]:
        console.print(f"failed: {f['name']} at {f['stage']}: {f['error']}")
    load = report.get("load")
    if load:  # attach --server-url: what the server was doing around the window
        from ray_tpu_profile.analysis.server_load import describe

        console.print(describe(load) if "error" not in load else f"server load: not read ({load['error']})")


def _print_host_operations(report: dict[str, Any], console: Console) -> None:
    """Each host's top self-time operations and engine steps, one line each."""
    for h in report["hosts"]:
        if h["top_operations"]:
            ops = ", ".join(f"{o['name'][:40]} {100 * o['share']:.1f}%" for o in h["top_operations"][:5])
            console.print(f"{h['name']} top self time: {ops}")
        steps = h.get("steps") or {}
        if steps.get("count"):
            console.print(f"{h['name']} engine steps: {steps['count']}, {steps['mean_ms']:.2f} ms per step")


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """report.json for people: the hosts table, a sweep's per-shape table and the notes under them."""
    console = console or Console(highlight=False, soft_wrap=True, width=None if _is_tty() else 160)
    console.print(_hosts_table(report))
    shapes = list(dict.fromkeys(s for h in report["hosts"] for s in h["shapes"]))
    if len(shapes) > 1:  # a sweep: the table above is its first shape; every shape here
        console.print(_shapes_table(report, shapes))
    _print_run_notes(report, console)
    _print_devices(report, console)
    _print_host_operations(report, console)


def _print_devices(report: dict[str, Any], console: Console) -> None:
    """Per device: busy share of its window, waiting at collectives, top categories; then
    each engine's straggler verdict (report.json's devices and stragglers)."""
    devices = report.get("devices") or []  # none in a report.json from before device analysis
    if devices:
        table = Table(title="devices (in each host's capture window)", title_justify="left")
        for column in ("host", "device", "busy", "collective wait", "idle", "top categories (self time)"):
            table.add_column(
                column, justify="left" if column in ("host", "device", "top categories (self time)") else "right"
            )
        for d in devices:
            window = d["window_ms"] or 1.0
            top = ", ".join(f"{name} {ms:.1f} ms" for name, ms in list(d["categories_ms"].items())[:3])
            table.add_row(
                d["host"],
                d["device"],
                f"{100 * d['busy_ms'] / window:.0f}%",
                f"{d.get('collective_wait_ms', 0.0):.1f} ms",
                f"{d['idle_ms']:.1f} ms",
                top or "-",
            )
        console.print(table)
    for s in report.get("stragglers") or []:
        console.print(f"collectives: {s['verdict']}")


def write_report(
    run_dir: Path, max_timeline_events_per_host: int | None = None, note: Callable[[str], None] = lambda text: None
) -> dict[str, Any]:
    """Everything `report` derives from a run directory, written into it: report.json and
    report.txt, timeline.json.gz (every host's trace on one axis) and report.png, all from
    the hosts' summaries of their traces (host_summary.py: their own where they shipped
    one, else made here, each host's traces read once for all three)."""
    import io
    import time

    from ray_tpu_profile.analysis.host_summary import describe_made_where, summaries
    from ray_tpu_profile.analysis.plot import PLOT, write_plot
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST, TIMELINE, write_timeline
    from ray_tpu_profile.rundir.layout import read_manifest, write_json_atomic

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    max_events = max_timeline_events_per_host or DEFAULT_MAX_EVENTS_PER_HOST
    report: dict[str, Any] = {}
    # Each output on its own: a trace one of them cannot use must not cost the others.
    failures: dict[str, str] = {}
    started = time.monotonic()
    try:
        found, made_where = summaries(run_dir, manifest, max_events)
        note(f"{describe_made_where(made_where)} ({time.monotonic() - started:.1f} s)")
    except Exception as e:  # both outputs that need the traces fail, named below; the plot goes on
        failures.update({name: f"{name}: {type(e).__name__}: {e}" for name in ("report.json", TIMELINE)})

    def text_report() -> str:
        report.update(build_report(run_dir, summaries=found, made_where=made_where))
        write_json_atomic(run_dir / "report.json", report)
        buffer = io.StringIO()
        print_report(report, Console(file=buffer, width=160, highlight=False, soft_wrap=True))
        (run_dir / "report.txt").write_text(buffer.getvalue())
        return "report.json, report.txt written"

    def timeline() -> str:
        write_timeline(run_dir, max_events, summaries=found, collectives=report.get("collectives"))
        return f"{TIMELINE} written: every host's trace on one wall-clock axis, for Perfetto (ui.perfetto.dev)"

    def plot() -> str:
        write_plot(run_dir, manifest, report.get("devices"))
        return f"{PLOT} written"

    for name, write in (("report.json", text_report), (TIMELINE, timeline), (PLOT, plot)):
        if name in failures:
            continue
        started = time.monotonic()
        try:
            note(f"{write()} ({time.monotonic() - started:.1f} s)")
        except Exception as e:  # collected and raised together below
            failures[name] = f"{name}: {type(e).__name__}: {e}"
    if failures:
        raise ReportError("; ".join(failures.values()))
    return report


class ReportError(ToolError, RuntimeError):
    """Some of the derived outputs could not be written (each named)."""
