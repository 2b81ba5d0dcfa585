"""Summaries of a run for people: the end-of-run table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "-"


def summary_table(manifest: dict[str, Any]) -> Table:
    table = Table(title=f"run {manifest['run_id']}: {manifest['status']}", title_justify="left")
    for column in ("host", "status", "load s", "warmup mean s", "profiled mean s", "files", "bytes"):
        table.add_column(column, justify="left" if column in ("host", "status") else "right", no_wrap=True)
    for host in manifest["hosts"]:
        latency = host["latency_s"]
        status = host["status"] if host["status"] == "ok" else f"{host['status']} at {host['stage']}"
        table.add_row(
            host["name"],
            status,
            f"{latency['load']:.2f}" if latency["load"] is not None else "-",
            _mean(latency["warmup"]),
            _mean(latency["profiled"]),
            str(len(host["files"])),
            f"{sum(f['bytes'] for f in host['files']):,}",
        )
    return table


def slowest_host(manifest: dict[str, Any]) -> tuple[str, float, float] | None:
    """(name, its profiled mean, the median host's) among hosts with profiled latencies."""
    means = {
        h["name"]: statistics.fmean(h["latency_s"]["profiled"]) for h in manifest["hosts"] if h["latency_s"]["profiled"]
    }
    if not means:
        return None
    name = max(means, key=means.get)
    return name, means[name], statistics.median(means.values())


def print_summary(manifest: dict[str, Any], run_dir: Path, console: Console | None = None) -> None:
    # Not a terminal (a Ray job log, a pipe): rich would assume 80 columns and wrap names.
    console = console or Console(highlight=False, soft_wrap=True, width=None if _is_tty() else 160)
    console.print(summary_table(manifest))
    skew = manifest["capture"].get("start_skew_ms")
    if skew is not None:
        console.print(f"capture start skew across hosts: {skew:.3f} ms (from the xplanes)")
    slowest = slowest_host(manifest)
    if slowest and len(manifest["hosts"]) > 1:
        name, mean, median = slowest
        console.print(f"slowest host: {name}, profiled mean {mean:.3f} s, {100 * (mean / median - 1):+.1f}% vs the median host")
    for host in manifest["hosts"]:
        if host["error"]:
            console.print(f"{host['name']}: {host['error']}")
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
    table = Table(title=f"{len(planned['actors'])} actor(s), one per host; reserved with {planned['placement']['reservation']}",
                  title_justify="left")
    for column in ("host", "node", "chips", "slice", "worker"):
        table.add_column(column, no_wrap=True)
    for h in planned["hosts"]:
        table.add_row(h["name"], h["node_id"][:12], str(h["chips"]), h["slice_name"] or "-",
                      "-" if h["worker_id"] is None else str(h["worker_id"]))
    console.print(table)
    w, c, e = planned["workload"], planned["capture"], planned["engine"]
    console.print(f"workload: {w['shape']} (batch x input x output), {w['num_iters_warmup']} warmup + {w['num_iters']} profiled iteration(s)")
    console.print(f"capture: {c['profiler']} ({c['chosen_by']}), delay {c['delay_ms']} ms, duration {c['duration_ms']} ms")
    console.print(f"engine: tensor parallel {e['tensor_parallel_size']}; flags {' '.join(e['argv'])}")
    console.print(f"env in every model process: {', '.join(f'{k}={v}' for k, v in e['env'].items())}")
