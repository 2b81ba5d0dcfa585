"""`diff` for people and for files: the table on stdout, and diff.json / diff.txt /
diff.png with --write."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ray_tpu_profile.core.files import written_whole

VERDICT_STYLE = {
    "slower": "red",
    "faster": "green",
    "within noise": "dim",
    "too few samples": "yellow",
    "no iterations": "dim",
}


def _seconds(value: float | None) -> str:
    """A latency in seconds, or '-' where there is none."""
    return "-" if value is None else f"{value:.4f} s"


def _latency_table(diff: dict[str, Any]) -> Table:
    """The latency table: one row per host and shape, A against B, with the verdict."""
    table = Table(
        title="latency per host and shape (median of iterations after the first warmup one + profiled)",
        title_justify="left",
    )
    for column in ("host", "shape", "A median", "B median", "n A/B", "spread A/B", "B/A", "95% interval", "verdict"):
        table.add_column(column, justify="left" if column in ("host", "shape", "verdict") else "right", no_wrap=True)
    for r in diff["latency"]:
        table.add_row(
            r["host"] + (f" ({r['engine']})" if r.get("engine") and r["verdict"] == "no iterations" else ""),
            r["shape"],
            _seconds(r["a_median_s"]),
            _seconds(r["b_median_s"]),
            f"{r['a_n']}/{r['b_n']}",
            "-" if r["a_spread"] is None else f"{100 * r['a_spread']:.1f}%/{100 * r['b_spread']:.1f}%",
            "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
            "-" if r["interval"] is None else f"{r['interval'][0]:.3f}-{r['interval'][1]:.3f}",
            f"[{VERDICT_STYLE[r['verdict']]}]{r['verdict']}[/]",
        )
    return table


def _print_not_compared(diff: dict[str, Any], console: Console) -> None:
    """The hosts and shapes in only one of the runs, which are not compared."""
    for key, what in (
        ("hosts_only_in_a", "hosts only in A"),
        ("hosts_only_in_b", "hosts only in B"),
        ("shapes_only_in_a", "shapes only in A"),
        ("shapes_only_in_b", "shapes only in B"),
    ):
        if diff[key]:
            console.print(f"{what} (not compared): {', '.join(diff[key])}")


def _print_hosts(hosts: dict[str, Any], console: Console) -> None:
    """The hosts' summary, and each side's slowest host and capture start skew."""
    console.print(f"hosts: {hosts['summary']}")
    for side in ("a", "b"):
        s = hosts[side]
        skew = (
            "; ".join(
                f"{shape} {text}" if len(s["capture_start_skew"]) > 1 else text
                for shape, text in s["capture_start_skew"].items()
            )
            or "-"
        )
        console.print(f"  {side.upper()}: slowest host {s['slowest_host'] or '-'}; capture start skew {skew}")


def _print_host_ops(name: str, host: dict[str, Any], console: Console) -> None:
    """One host's operation comparison: totals, counts, engine steps and top changes."""
    if not host["compared"]:
        console.print(f"  {name}: not compared: {host['reason']}")
        return
    counts = ", ".join(f"{n} {k}" for k, n in host["counts"].items())
    console.print(f"  {name}: {host['a_total_ms']:.2f} -> {host['b_total_ms']:.2f} ms; {counts}")
    steps = host["steps"]
    if steps["a"]["mean_ms"] and steps["b"]["mean_ms"]:
        console.print(
            f"    engine steps per iteration {steps['a']['per_iteration']:.1f} -> "
            f"{steps['b']['per_iteration']:.1f}, {steps['a']['mean_ms']:.2f} -> "
            f"{steps['b']['mean_ms']:.2f} ms per step"
        )
    for label, entries in (("increases", host["top_increases"][:5]), ("decreases", host["top_decreases"][:5])):
        if entries:
            console.print(
                f"    top {label}: "
                + ", ".join(f"{e['name'][:48]} {e['delta_ms']:+.3f} ms ({100 * e['share']:.0f}%)" for e in entries)
            )


def _print_devices(diff: dict[str, Any], console: Console) -> None:
    """Per device: step time B/A with its verdict, busy time and collective wait A -> B."""
    for d in diff.get("devices") or []:
        step = (
            "-" if d["step_ratio"] is None else f"step {d['step_ratio']:.3f}x ({d['verdict']}, {d['a_n']}/{d['b_n']})"
        )
        console.print(
            f"  {d['host']} {d['device']}: {step}; busy {d['busy_ms'][0]:.1f} -> {d['busy_ms'][1]:.1f} ms; "
            f"collective wait {d['collective_wait_ms'][0]:.1f} -> {d['collective_wait_ms'][1]:.1f} ms"
        )


def _print_collectives(diff: dict[str, Any], console: Console) -> None:
    """Per engine: its straggler in A and B, and the others' wait per step A -> B."""
    for c in diff.get("collectives") or []:
        names = [
            "none" if s is None else s["host"] if s["device"] == "host" else f"{s['host']} {s['device']}"
            for s in c["straggler"]
        ]
        waits = ["-" if w is None else f"{w:.2f}" for w in c["wait_per_step_ms"]]
        ratio = "" if c["wait_ratio"] is None else f" ({c['wait_ratio']:.3f}x, {c['verdict']}, {c['a_n']}/{c['b_n']})"
        console.print(
            f"  {c['engine']}: straggler {names[0]} -> {names[1]}; wait per step {waits[0]} -> {waits[1]} ms{ratio}"
        )


def print_diff(diff: dict[str, Any], console: Console) -> None:
    """The diff for people: both runs, the latency table, the hosts and the operations."""
    a, b = diff["a"], diff["b"]
    console.print(f"A: {a['location']} ({a['profiler']}, {a['status']})")
    console.print(f"B: {b['location']} ({b['profiler']}, {b['status']})")
    console.print(_latency_table(diff))
    for r in diff["latency"]:
        if r["note"]:
            console.print(f"  {r['host']} {r['shape']}: {r['verdict']}: {r['note']}")
    console.print(f"rule: {diff['rule']}")
    _print_not_compared(diff, console)
    _print_hosts(diff["hosts"], console)
    if diff.get("devices"):
        console.print("devices (step: the device's most executed XLA module, by the same rule):")
        _print_devices(diff, console)
    if diff.get("collectives"):
        console.print("collectives (the others' wait per step, by the same rule):")
        _print_collectives(diff, console)
    ops = diff["ops"]
    if not ops["compared"]:
        console.print(f"operations not compared: {ops['reason']}")
        return
    console.print(f"operations ({ops['unit']}):")
    for name, host in ops["hosts"].items():
        _print_host_ops(name, host, console)


def diff_text(diff: dict[str, Any]) -> str:
    buffer = io.StringIO()
    print_diff(diff, Console(file=buffer, width=160, highlight=False, soft_wrap=True, color_system=None))
    return buffer.getvalue()


def write_diff(diff: dict[str, Any], out_dir: Path) -> list[Path]:
    """diff.json, diff.txt and diff.png in out_dir (made if missing); each written whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "diff.json", out_dir / "diff.txt", out_dir / "diff.png"]
    with written_whole(paths[0]) as tmp:
        tmp.write_text(json.dumps(diff, indent=2))
    with written_whole(paths[1]) as tmp:
        tmp.write_text(diff_text(diff))
    with written_whole(paths[2]) as tmp:
        draw_diff(diff, tmp)
    return paths


def draw_diff(diff: dict[str, Any], path: Path) -> None:
    """Latency per host A vs B (bars, per shape), and the top operation deltas of each host."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in diff["latency"] if r["ratio"] is not None]
    ops_hosts = {n: h for n, h in diff["ops"]["hosts"].items() if h.get("compared")} if diff["ops"]["compared"] else {}
    deltas = [
        (f"{n}: {e['name'][:40]}", e["delta_ms"])
        for n, h in ops_hosts.items()
        for e in (h["top_increases"][:5] + h["top_decreases"][:5])
    ]
    fig, axes = plt.subplots(2, 1, figsize=(11, 4 + 0.25 * max(len(rows), len(deltas), 4)))
    ax = axes[0]
    labels = [f"{r['host']} {r['shape']}" for r in rows]
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r["a_median_s"] * 1000 for r in rows], height=0.4, label="A", color="#4e79a7")
    ax.barh([i + 0.2 for i in y], [r["b_median_s"] * 1000 for r in rows], height=0.4, label="B", color="#f28e2b")
    for i, r in enumerate(rows):
        ax.annotate(
            f"{r['ratio']:.2f}x {r['verdict']}",
            (max(r["a_median_s"], r["b_median_s"]) * 1000, i),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median iteration latency (ms)")
    ax.legend(fontsize=8)
    ax.margins(x=0.25)
    ax.set_title("latency per host, A vs B", fontsize=9)
    ax = axes[1]
    if deltas:
        ax.barh(
            range(len(deltas)), [d for _, d in deltas], color=["#e15759" if d > 0 else "#59a14f" for _, d in deltas]
        )
        ax.set_yticks(range(len(deltas)), [n for n, _ in deltas], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("self time per profiled iteration, B - A (ms)")
        ax.set_title("top operation changes per host", fontsize=9)
    else:
        ax.axis("off")
        ax.text(
            0,
            0.5,
            "operations not compared: " + (diff["ops"].get("reason") or "no host had operations in both"),
            fontsize=9,
            wrap=True,
        )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
