"""report.png: what a person looks at first. Per-host iteration latency distributions,
every host's iterations and capture window on one wall-clock axis, and the capture start
offsets at a scale where sub-millisecond skew shows. Drawn from the manifest alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_tpu_profile.core.files import written_whole
from ray_tpu_profile.rundir.manifest_types import Manifest

PLOT = "report.png"
WARMUP_COLOUR = "#b0b0b0"
CAPTURE_COLOUR = "#f28e2b"
SHAPE_COLOURS = ("#4e79a7", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def plot_data(manifest: Manifest) -> dict[str, Any]:
    """What the figure shows, in plain numbers (tested without drawing)."""
    from ray_tpu_profile.analysis.timeline import clock_shift_ns
    from ray_tpu_profile.rundir.layout import host_captures, host_iterations, host_label

    hosts = [host_label(h) for h in manifest["hosts"]]
    # On the driver's clock, as the timeline: each host's times minus its clock offset.
    shift_s = [clock_shift_ns(h) / 1e9 for h in manifest["hosts"]]
    iterations = [
        (row, host_label(h), shape, kind, i, start_s - shift_s[row], latency_s)
        for row, h in enumerate(manifest["hosts"])
        for shape, kind, i, start_s, latency_s in host_iterations(h)
    ]
    shapes = list(dict.fromkeys(shape for _, _, shape, *_ in iterations))
    origin_s = min((start_s for *_, start_s, _ in iterations), default=0.0)
    latencies_ms: dict[tuple[str, str, str], list[float]] = {}
    bars: list[dict[str, Any]] = []
    for row, name, shape, kind, _, start_s, latency_s in iterations:
        latencies_ms.setdefault((name, shape, kind), []).append(1000 * latency_s)
        bars.append({"row": row, "kind": kind, "shape": shape, "start_s": start_s - origin_s, "duration_s": latency_s})
    windows = [
        {
            "row": row,
            "shape": shape,
            "start_s": capture["start_ns"] / 1e9 - shift_s[row] - origin_s,
            "duration_s": (capture["stop_ns"] - capture["start_ns"]) / 1e9,
            "start_offset_ms": capture.get("start_offset_ms"),
        }
        for row, h in enumerate(manifest["hosts"])
        for shape, capture in host_captures(h)
    ]
    return {
        "hosts": hosts,
        "shapes": shapes,
        "origin_s": origin_s,
        "latencies_ms": latencies_ms,
        "bars": bars,
        "windows": windows,
    }


FIGURE_WIDTH_IN = 11.0
DPI = 110


def pyplot():
    """matplotlib.pyplot, drawing to files only (Agg): there is no display on a Ray head node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(run_dir: Path, manifest: Manifest, devices: list[dict[str, Any]] | None = None) -> Path:
    """report.png; devices (report.json's): a panel of each device's busy, collective wait and idle time."""
    plt = pyplot()
    fig = draw_plot(manifest, devices)
    try:
        path = Path(run_dir) / PLOT
        with written_whole(path, f".{path.stem}.tmp.png") as tmp:  # the name's suffix tells savefig PNG
            fig.savefig(tmp, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def draw_plot(manifest: Manifest, devices: list[dict[str, Any]] | None = None):
    """report.png's figure (the caller closes it)."""
    plt = pyplot()
    data = plot_data(manifest)
    colour = {shape: SHAPE_COLOURS[i % len(SHAPE_COLOURS)] for i, shape in enumerate(data["shapes"])}
    offsets = [w for w in data["windows"] if w["start_offset_ms"] is not None]
    device_labels = [f"{d['host']} {d['device']}" for d in devices or []]
    fig = plt.figure(dpi=DPI)
    try:
        width_in = _text_width_in(fig, [*data["hosts"], *device_labels])
        titles = {"timeline": _timeline_title(data), "offsets": _offsets_title(manifest, offsets) if offsets else ""}
        layout = panel_layout(len(data["hosts"]), len(device_labels), width_in, titles)
        fig.set_size_inches(FIGURE_WIDTH_IN, layout.height_in)
        title = f"run {manifest['run_id']} ({manifest['status']}), profiler {manifest['capture'].get('profiler')}"
        fig.suptitle(title, fontsize=11, y=1.0 - 0.12 / layout.height_in, va="top")
        _latency_panel(layout.axes(fig, "latency"), data, colour)
        # The offsets beside the timeline, on its rows: each host's row reads across both,
        # and its name is drawn once.
        timeline = layout.axes(fig, "timeline" if offsets else "timeline_alone")
        _timeline_panel(timeline, data, colour, layout.titles["timeline" if offsets else "timeline_alone"])
        if offsets:
            _offsets_panel(layout.axes(fig, "offsets", sharey=timeline), offsets, colour, layout.titles["offsets"])
        if devices:
            _devices_panel(layout.axes(fig, "devices"), devices, device_labels)
    except BaseException:
        plt.close(fig)
        raise
    return fig


@dataclass(frozen=True)
class PanelLayout:
    """Where each panel goes, in inches from the figure's bottom left, set from a few
    measured label widths instead of tight_layout, which measures every tick label of
    every host: the layout's cost does not grow with hosts."""

    height_in: float
    boxes_in: dict[str, tuple[float, float, float, float]]
    """Panel name -> (left, bottom, width, height) of its axes."""
    titles: dict[str, str]
    """Panel name -> its title, wrapped to the panel's width."""

    def axes(self, fig, name: str, **kw: Any):
        left, bottom, width, height = self.boxes_in[name]
        w, h = FIGURE_WIDTH_IN, self.height_in
        return fig.add_axes((left / w, bottom / h, width / w, height / h), **kw)


TITLE_LINE_IN = 0.19
"""A 9 pt title line and its spacing."""
TITLE_CHAR_IN = 0.065
"""A 9 pt character, about (titles are wrapped to their panel's width by it)."""


def panel_layout(hosts: int, devices: int, label_width_in: float, titles: dict[str, str]) -> PanelLayout:
    """Top to bottom: the suptitle, latency (host names under it, slanted beyond 6 hosts),
    the timeline with the capture offsets to its right (a row per host), the devices (a row
    per device). titles: the timeline's and the offsets' (unwrapped). Pure: tested
    without drawing."""
    left = max(0.85, label_width_in + 0.25)  # y tick labels, or latency's numbers and label
    right = 0.3
    width = FIGURE_WIDTH_IN - left - right
    gap, offsets_width = 0.3, width / 4
    wrapped = {
        "timeline_alone": _wrapped(titles["timeline"], int(width / TITLE_CHAR_IN)),
        "timeline": _wrapped(titles["timeline"], int((width - offsets_width - gap) / TITLE_CHAR_IN)),
        "offsets": _wrapped(titles["offsets"], int(offsets_width / TITLE_CHAR_IN)),
    }
    in_row = ("timeline", "offsets") if titles["offsets"] else ("timeline_alone",)
    row_lines = max(wrapped[k].count("\n") + 1 for k in in_row)
    below_latency = 0.3 + (0.35 * label_width_in if hosts > 6 else 0.0)  # sin(20 deg) of slanted names
    below_axis = 0.6  # tick labels and an x label
    stack = [  # (name, title room above, axes height, room below)
        ("latency", 0.25, 2.4, below_latency),
        ("rows", 0.1 + TITLE_LINE_IN * row_lines, max(1.0, 0.45 * hosts), below_axis),
    ]
    if devices:
        stack.append(("devices", 0.35, max(0.8, 0.3 * devices), below_axis))
    height = 0.5 + sum(above + axes + below for _, above, axes, below in stack)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    top = height - 0.5  # under the suptitle
    for name, above, axes, below in stack:
        bottom = top - above - axes
        boxes[name] = (left, bottom, width, axes)
        top = bottom - below
    left_r, bottom_r, _, height_r = boxes.pop("rows")
    boxes["timeline_alone"] = (left_r, bottom_r, width, height_r)
    boxes["timeline"] = (left_r, bottom_r, width - offsets_width - gap, height_r)
    boxes["offsets"] = (left_r + width - offsets_width, bottom_r, offsets_width, height_r)
    return PanelLayout(height, boxes, wrapped)


def _text_width_in(fig, labels: list[str], fontsize: float = 8) -> float:
    """The widest label's width as drawn (measured once: the longest by characters)."""
    from matplotlib.font_manager import FontProperties

    if not labels:
        return 0.0
    longest = max(labels, key=len)
    renderer = fig.canvas.get_renderer()
    width_px, _, _ = renderer.get_text_width_height_descent(longest, FontProperties(size=fontsize), ismath=False)
    return width_px / fig.dpi


def _devices_panel(ax, devices: list[dict[str, Any]], labels: list[str]) -> None:
    """Per host and device, its capture window split into busy (running ops), waiting for the
    others at collectives (no op runs while a chip waits, so that time is out of idle), and idle."""
    busy = [d["busy_ms"] for d in devices]
    wait = [min(d.get("collective_wait_ms", 0.0), d["idle_ms"]) for d in devices]
    idle = [d["idle_ms"] - w for d, w in zip(devices, wait)]
    rows = range(len(devices))
    starts = [0.0] * len(devices)
    for widths, colour, label in (
        (busy, "#4e79a7", "busy"),
        (wait, "#e15759", "waiting at collectives"),
        (idle, "#bab0ac", "idle"),
    ):
        _bars(ax, [(row, 0.8, start, width) for row, start, width in zip(rows, starts, widths)], colour, label=label)
        starts = [start + width for start, width in zip(starts, widths)]
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set_xlim(0, max(starts, default=0.0) * 1.02 or 1.0)
    _row_labels(ax, labels, fontsize=7)
    ax.set_xlabel("ms of the capture window")
    ax.set_title("devices: busy, waiting for the others, idle", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, frameon=False)  # off the bars


TICK_LABEL_PAD_PT = 7.0
"""From the axis to a row's or column's label: a tick's length and its label's pad."""


def _row_labels(ax, labels: list[str], fontsize: float) -> None:
    """A label left of each row, as plain texts and no ticks: a matplotlib Tick per row (its
    two marks, grid line and two labels, made and drawn) was most of the cost of a figure
    with a row per host or chip; a text each is what is left."""
    _axis_labels(ax, "y", labels, fontsize)


def _column_labels(ax, labels: list[str], rotation: float, fontsize: float) -> None:
    """A label under each column, as _row_labels does rows."""
    _axis_labels(ax, "x", labels, fontsize, rotation)


def _axis_labels(ax, axis: str, labels: list[str], fontsize: float, rotation: float = 0.0) -> None:
    """Each label TICK_LABEL_PAD_PT beyond the axes' left edge (axis "y") or bottom edge ("x")."""
    from matplotlib.transforms import ScaledTranslation

    pad_in = TICK_LABEL_PAD_PT / 72
    if axis == "y":
        ax.set_yticks([])
        transform = ax.get_yaxis_transform() + ScaledTranslation(-pad_in, 0, ax.figure.dpi_scale_trans)
        align = {"ha": "right", "va": "center"}
    else:
        ax.set_xticks([])
        transform = ax.get_xaxis_transform() + ScaledTranslation(0, -pad_in, ax.figure.dpi_scale_trans)
        align = {"ha": "center", "va": "top"}
    for at, label in enumerate(labels):
        x, y = (0, at) if axis == "y" else (at, 0)
        ax.text(x, y, label, transform=transform, rotation=rotation, fontsize=fontsize, **align)


def _bars(
    ax, bars: list[tuple[float, float, float, float]], facecolor: str, edgecolor: str = "none", **kw: Any
) -> None:
    """Horizontal bars (row, height, start, width) as one collection: one artist however many
    bars, so a figure of many hosts costs little more to draw than one of a few."""
    from matplotlib.collections import PolyCollection

    verts = [[(x, y - h / 2), (x + w, y - h / 2), (x + w, y + h / 2), (x, y + h / 2)] for y, h, x, w in bars]
    ax.add_collection(PolyCollection(verts, facecolors=facecolor, edgecolors=edgecolor, **kw))


def _latency_panel(ax, data: dict[str, Any], colour: dict[str, str]) -> None:
    """Latency distribution per host: profiled as boxes, every iteration as a point."""
    from matplotlib.patches import Patch

    hosts, shapes = data["hosts"], data["shapes"]
    width = min(0.4, 0.8 / max(1, len(shapes)))
    for s_index, shape in enumerate(shapes):
        positions, series = [], []
        dots: dict[str, tuple[list[float], list[float]]] = {"profiled": ([], []), "warmup": ([], [])}
        for h_index, host in enumerate(hosts):
            x = h_index + (s_index - (len(shapes) - 1) / 2) * width
            for kind, at_x in (("profiled", x), ("warmup", x - width * 0.3)):
                latencies = data["latencies_ms"].get((host, shape, kind), [])
                dots[kind][0].extend([at_x] * len(latencies))
                dots[kind][1].extend(latencies)
                if kind == "profiled" and latencies:
                    positions.append(x)
                    series.append(latencies)
        # One collection per shape and kind, however many hosts.
        ax.scatter(*dots["profiled"], s=14, color=colour[shape], zorder=3)
        ax.scatter(*dots["warmup"], s=10, facecolors="none", edgecolors=WARMUP_COLOUR, zorder=2)
        if series:
            _boxes(ax, positions, series, width * 0.6, colour[shape])
    ax.autoscale_view()
    _column_labels(ax, hosts, rotation=20 if len(hosts) > 6 else 0, fontsize=8)
    ax.set_ylabel("iteration latency (ms)")
    ax.set_title("iteration latency per host (boxes and filled dots: profiled; hollow: warmup)", fontsize=9)
    ax.legend(
        handles=[Patch(color=colour[s], label=s or "profiled") for s in shapes]
        + [Patch(color=WARMUP_COLOUR, label="warmup")],
        fontsize=8,
        loc="best",
    )
    ax.grid(axis="y", alpha=0.3)


def _boxes(ax, positions: list[float], series: list[list[float]], box_width: float, median_colour: str) -> None:
    """Box plots (quartiles, whiskers to 1.5 IQR, no fliers: matplotlib's boxplot_stats) as
    two lines broken by NaNs for every host: ax.boxplot makes six artists per box, most of
    the figure's cost at tens of hosts. Lines, not collections, so legend "best" sees them."""
    from matplotlib.cbook import boxplot_stats

    half, cap = box_width / 2, box_width / 4
    outlines: list[tuple[float, float]] = []
    medians: list[tuple[float, float]] = []
    gap = (math.nan, math.nan)
    for x, stats in zip(positions, boxplot_stats(series)):
        q1, q3, low, high = stats["q1"], stats["q3"], stats["whislo"], stats["whishi"]
        outlines += [(x - half, q1), (x + half, q1), (x + half, q3), (x - half, q3), (x - half, q1), gap]
        outlines += [(x, q1), (x, low), gap, (x, q3), (x, high), gap]
        outlines += [(x - cap, low), (x + cap, low), gap, (x - cap, high), (x + cap, high), gap]
        medians += [(x - half, stats["med"]), (x + half, stats["med"]), gap]
    for points, colour in ((outlines, "black"), (medians, median_colour)):
        ax.plot(*zip(*points), color=colour, linewidth=1.0, zorder=2)


def _timeline_title(data: dict[str, Any]) -> str:
    return "iterations on every host (grey: warmup, colour: profiled)" + (
        ", capture window from each host's trace (orange outline)"
        if data["windows"]
        else "; no trace start/stop recorded for this profiler (torch: its steps are the profiled iterations)"
    )


def _timeline_panel(ax, data: dict[str, Any], colour: dict[str, str], title: str) -> None:
    """A shared wall-clock axis: each host's iterations and its capture window."""
    by_colour: dict[str, list[tuple[float, float, float, float]]] = {}
    for bar in data["bars"]:
        facecolor = colour[bar["shape"]] if bar["kind"] == "profiled" else WARMUP_COLOUR
        by_colour.setdefault(facecolor, []).append((bar["row"], 0.6, bar["start_s"], bar["duration_s"]))
    for facecolor, bars in by_colour.items():
        _bars(ax, bars, facecolor, edgecolor="white", linewidth=0.5)
    windows = [(w["row"], 0.9, w["start_s"], w["duration_s"]) for w in data["windows"]]
    if windows:
        _bars(ax, windows, "none", edgecolor=CAPTURE_COLOUR, linewidth=1.5)
    ax.autoscale_view()
    _row_labels(ax, data["hosts"], fontsize=8)
    ax.set_ylim(len(data["hosts"]) - 0.5, -0.5)  # first host on top
    ax.set_xlabel(f"seconds since the first iteration (the driver's wall clock; origin {data['origin_s']:.3f} s epoch)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def _offsets_title(manifest: Manifest, offsets: list[dict[str, Any]]) -> str:
    from ray_tpu_profile.rundir.layout import skew_text_by_shape

    offset_shapes = set(w["shape"] for w in offsets)
    skews = {s: text for s, text in skew_text_by_shape(manifest).items() if s in offset_shapes}
    skew_text = ", ".join(f"{s + ' ' if len(skews) > 1 else ''}{text}" for s, text in skews.items())
    return "capture start after the planned instant (each host's trace, on the driver's clock)" + (
        f"; skew {skew_text}" if skew_text else ""
    )


def _offsets_panel(ax, offsets: list[dict[str, Any]], colour: dict[str, str], title: str) -> None:
    """Capture start offsets from the planned instant: the skew, at a readable scale; one
    bar per shape of a sweep, side by side in each host's row."""
    offset_shapes = list(dict.fromkeys(w["shape"] for w in offsets))
    bar_h = 0.7 / len(offset_shapes)
    by_colour: dict[str, list[tuple[float, float, float, float]]] = {}
    for w in offsets:
        y = w["row"] + (offset_shapes.index(w["shape"]) - (len(offset_shapes) - 1) / 2) * bar_h
        facecolor = colour[w["shape"]] if len(offset_shapes) > 1 else CAPTURE_COLOUR
        by_colour.setdefault(facecolor, []).append((y, bar_h * 0.9, 0.0, w["start_offset_ms"]))
        ax.annotate(
            f"{w['start_offset_ms']:.3f} ms",
            (w["start_offset_ms"], y),
            xytext=(4 if w["start_offset_ms"] >= 0 else -4, 0),  # beyond the bar's end
            textcoords="offset points",
            ha="left" if w["start_offset_ms"] >= 0 else "right",
            va="center",
            fontsize=7 if len(offset_shapes) > 1 else 8,
        )
    for facecolor, bars in by_colour.items():
        _bars(ax, bars, facecolor)
    ax.axvline(0.0, color="#808080", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("ms")
    ends_ms = [0.0, *(w["start_offset_ms"] for w in offsets)]
    span_ms = (max(ends_ms) - min(ends_ms)) or 1.0
    room = {True: 0.6 * span_ms, False: 0.1 * span_ms}  # for the numbers at the bars' ends
    ax.set_xlim(min(ends_ms) - room[min(ends_ms) < 0], max(ends_ms) + room[max(ends_ms) > 0])
    ax.grid(axis="x", alpha=0.3)


def _wrapped(text: str, width_chars: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width_chars))
