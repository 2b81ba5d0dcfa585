"""report.png: the numbers it draws, and that it is drawn."""

from __future__ import annotations

import pytest

from ray_tpu_profile.analysis.plot import FIGURE_WIDTH_IN, draw_plot, panel_layout, plot_data, write_plot


def _phase(start_s, latencies_s):
    starts, t = [], start_s
    for latency in latencies_s:
        starts.append(t)
        t += latency
    return {"iteration_starts_s": starts, "latencies_s": latencies_s}


def _manifest():
    hosts = []
    for i, name in enumerate(["h0", "h1", "h2"]):
        t = 100.0 + 0.01 * i
        hosts.append(
            {
                "name": name,
                "status": "ok",
                "capture": {
                    "start_ns": int((t + 1.0) * 1e9),
                    "stop_ns": int((t + 2.0) * 1e9),
                    "start_offset_ms": 0.1 * i,
                },
                "phases": {},
                "shapes": {
                    "1x8x8": {
                        "phases": {"warmup": _phase(t, [0.2, 0.1]), "profiled": _phase(t + 1.0, [0.1, 0.12 + i / 10])},
                        "capture": {
                            "start_ns": int((t + 1.0) * 1e9),
                            "stop_ns": int((t + 2.0) * 1e9),
                            "start_offset_ms": 0.1 * i,
                        },
                    },
                    "4x8x8": {
                        "phases": {"warmup": _phase(t + 3, [0.3]), "profiled": _phase(t + 4, [0.3, 0.31])},
                        "capture": {
                            "start_ns": int((t + 4.0) * 1e9),
                            "stop_ns": int((t + 4.5) * 1e9),
                            "start_offset_ms": 0.2,
                        },
                    },
                },
            }
        )
    return {
        "run_id": "r1",
        "status": "ok",
        "hosts": hosts,
        "capture": {
            "profiler": "jax",
            "start_skew_ms": 0.2,
            "shapes": {"1x8x8": {"start_skew_ms": 0.2}, "4x8x8": {"start_skew_ms": 0.0}},
        },
    }


def test_plot_data_puts_every_host_on_one_axis():
    data = plot_data(_manifest())
    assert data["hosts"] == ["h0", "h1", "h2"] and data["shapes"] == ["1x8x8", "4x8x8"]
    assert data["origin_s"] == 100.0
    assert data["latencies_ms"][("h2", "1x8x8", "profiled")] == [100.0, 320.0]
    first = [b for b in data["bars"] if b["row"] == 1][0]
    assert first["kind"] == "warmup" and abs(first["start_s"] - 0.01) < 1e-9
    # Every shape's capture window, per host.
    assert [(w["row"], w["shape"], round(w["start_s"], 6)) for w in data["windows"]] == [
        (0, "1x8x8", 1.0),
        (0, "4x8x8", 4.0),
        (1, "1x8x8", 1.01),
        (1, "4x8x8", 4.01),
        (2, "1x8x8", 1.02),
        (2, "4x8x8", 4.02),
    ]
    assert len(data["bars"]) == 3 * (2 + 2 + 1 + 2)


def test_write_plot_makes_a_png(tmp_path):
    import matplotlib.image

    path = write_plot(tmp_path, _manifest())
    assert path.name == "report.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 600
    # Not blank: many distinct colours were drawn.
    assert len({tuple(px) for px in image.reshape(-1, image.shape[2])[::50]}) > 20


def test_write_plot_with_a_failed_host_and_no_capture_window(tmp_path):
    manifest = _manifest()
    manifest["hosts"][1] = {"name": "h1", "status": "failed", "capture": None, "phases": {}, "shapes": {}}
    for h in manifest["hosts"]:
        h["capture"] = None
        for done in h["shapes"].values():
            done["capture"] = None
    assert write_plot(tmp_path, manifest).stat().st_size > 10_000
    data = plot_data(manifest)
    assert data["windows"] == [] and data["shapes"] == ["1x8x8", "4x8x8"]
    assert {b["row"] for b in data["bars"]} == {0, 2}


def test_the_layout_stacks_the_panels_inside_the_figure_and_wraps_titles_to_their_width():
    long = "capture start after the planned instant (each host's trace, on the driver's clock); skew 0.050 ms"
    titles = {"timeline": "iterations on every host " * 6, "offsets": long}
    few, many = panel_layout(2, 0, 0.4, titles), panel_layout(64, 256, 1.6, titles)
    for layout in (few, many):
        boxes = layout.boxes_in
        for left, bottom, width, height in boxes.values():
            assert (
                left >= 0.85 and bottom > 0 and left + width <= FIGURE_WIDTH_IN and bottom + height < layout.height_in
            )
        # Top to bottom: latency above the row panel, the row panel above the devices.
        assert boxes["latency"][1] > boxes["timeline"][1] + boxes["timeline"][3]
        assert ("devices" in boxes) == (layout is many)
        timeline, offsets = boxes["timeline"], boxes["offsets"]
        assert timeline[0] + timeline[2] < offsets[0] and timeline[1:4:2] == offsets[1:4:2]  # side by side, same rows
        for name, title in layout.titles.items():
            chars = max(len(line) for line in title.splitlines())
            assert chars * 0.065 <= boxes[name][2], (name, title)
    assert many.boxes_in["timeline"][1] > many.boxes_in["devices"][1] + many.boxes_in["devices"][3]
    assert many.boxes_in["latency"][0] == pytest.approx(1.6 + 0.25)  # room for the widest label
    assert many.boxes_in["timeline"][3] == pytest.approx(0.45 * 64) and many.boxes_in["devices"][3] == 0.3 * 256


@pytest.mark.parametrize("hosts", [1, 3, 12])
def test_no_text_of_the_drawn_figure_is_cut_off_or_on_another_panel(hosts):
    """Measured on the drawn figure: every title, label, tick label and number lies inside
    the figure, and none lies on another panel's plotting area."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    manifest = _manifest()
    template = manifest["hosts"][0]
    manifest["hosts"] = [{**template, "name": f"t1v-n-0123abcd-w-{i}"} for i in range(hosts)]
    devices = [
        {"host": h["name"], "device": f"TPU:{d}", "busy_ms": 5.0, "collective_wait_ms": 1.0, "idle_ms": 2.0}
        for h in manifest["hosts"]
        for d in range(4)
    ]
    fig = draw_plot(manifest, devices)
    try:
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        figure_box = fig.bbox
        texts = [fig._suptitle] + [t for ax in fig.axes for t in _drawn_texts(ax)]
        assert len(texts) > 4 * hosts
        for text in texts:
            box = text.get_window_extent(renderer)
            assert figure_box.x0 - 1 <= box.x0 and box.x1 <= figure_box.x1 + 1, text.get_text()
            assert figure_box.y0 - 1 <= box.y0 and box.y1 <= figure_box.y1 + 1, text.get_text()
            for ax in fig.axes:
                if ax is not text.axes:
                    overlap = Bbox.intersection(ax.bbox, box)
                    assert overlap is None or min(overlap.width, overlap.height) < 1, (text.get_text(), ax.get_title())
    finally:
        plt.close(fig)


def _drawn_texts(ax) -> list:
    """The axes' texts that are drawn: title, labels, legend, annotations, and the tick
    labels within its limits (matplotlib keeps some beyond them, undrawn)."""
    x_lo, x_hi = sorted(ax.get_xlim())
    y_lo, y_hi = sorted(ax.get_ylim())
    ticks = [t for t in ax.get_xticklabels() if x_lo <= t.get_position()[0] <= x_hi and t.get_visible()]
    ticks += [t for t in ax.get_yticklabels() if y_lo <= t.get_position()[1] <= y_hi and t.get_visible()]
    legend = ax.get_legend().get_texts() if ax.get_legend() else []
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ticks, *legend, *ax.texts]
    return [t for t in texts if t.get_text().strip()]


def test_a_host_adds_only_its_labels_to_the_figure():
    """The figure's cost with many hosts is its artists: a host adds its two labels and its
    capture offset's number, a chip its label; boxes, bars and ticks are one artist for all
    (ax.boxplot made six per host, and a Tick per row five)."""
    import matplotlib.pyplot as plt

    def artists(hosts: int, chips: int) -> int:
        manifest = _manifest()
        manifest["hosts"] = [{**manifest["hosts"][0], "name": f"h{i}"} for i in range(hosts)]
        devices = [
            {"host": f"h{i}", "device": f"TPU:{c}", "busy_ms": 5.0, "collective_wait_ms": 1.0, "idle_ms": 2.0}
            for i in range(hosts)
            for c in range(chips)
        ]
        fig = draw_plot(manifest, devices)
        try:
            fig.canvas.draw()
            return len(fig.findobj())
        finally:
            plt.close(fig)

    # _manifest's hosts have two shapes: two offsets (numbers) per host.
    assert artists(12, 0) - artists(2, 0) == 10 * (2 + 2)
    assert artists(12, 4) - artists(12, 0) - (artists(2, 4) - artists(2, 0)) == 10 * 4
