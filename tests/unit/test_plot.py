"""report.png: the numbers it draws, and that it is drawn."""

from __future__ import annotations

from ray_tpu_profile.analysis.plot import plot_data, write_plot


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
