"""The end-of-run summary (pure, from a manifest)."""

from ray_tpu_profile.analysis.report import print_summary, slowest_host


def manifest(profiled):
    return {
        "run_id": "r",
        "status": "ok",
        "error": None,
        "workload": {"shape": "1x8x8"},
        "capture": {"start_skew_ms": 0.25, "start_skew_uncertainty_ms": 0.3, "start_skew_raw_ms": 0.19},
        "hosts": [
            {
                "name": n,
                "status": "ok",
                "stage": "gather",
                "error": None,
                "files": [],
                "latency_s": {"load": 1.0, "warmup": [0.1], "profiled": p},
            }
            for n, p in profiled.items()
        ],
    }


def test_slowest_host_against_the_median():
    assert slowest_host(manifest({"a": [1.0], "b": [1.0, 3.0], "c": [1.5]})) == ("b", 2.0, 1.5)
    assert slowest_host(manifest({"a": []})) is None


def test_summary_names_skew_and_slowest_host(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    run = manifest({"a": [1.0], "b": [2.0]})
    run["hosts"][1]["clock"] = {
        "offset_ms": 4.0,
        "uncertainty_ms": 1.5,
        "warning": "its clock offset is only known to +-1.500 ms (over --max-clock-uncertainty-ms 1)",
    }
    print_summary(run, tmp_path, console)
    text = console.export_text()
    assert (
        "capture start skew across hosts: 0.250 ms (+-0.300 ms clock uncertainty; 0.190 ms on the hosts' own "
        "clocks) (from the xplanes)"
    ) in text
    assert "warning: b: its clock offset is only known to +-1.500 ms (over --max-clock-uncertainty-ms 1)" in text
    assert "slowest host: b, profiled mean 2.000 s, +33.3% vs the median host" in text
    assert f"run directory: {tmp_path}" in text


def test_report_of_a_sweep_has_a_row_per_shape_and_host():
    from rich.console import Console

    from ray_tpu_profile.analysis.report import print_report
    from ray_tpu_profile.analysis.summary_stats import latency_stats

    def host(name, scale):
        shapes = {
            s: {"warmup_s": latency_stats([0.1 * scale]), "profiled_s": latency_stats([k * scale, 2 * k * scale])}
            for s, k in (("1x8x8", 0.01), ("4x8x8", 0.03))
        }
        return {
            "name": name,
            "status": "ok",
            "profiled_s": shapes["1x8x8"]["profiled_s"],
            "warmup_s": shapes["1x8x8"]["warmup_s"],
            "trace_bytes": 10,
            "top_operations": [],
            "shapes": shapes,
        }

    report = {
        "run_id": "r",
        "status": "ok",
        "shape": "1x8x8",
        "profiler": "jax",
        "capture_start_skew_ms": None,
        "slowest_host": None,
        "failed_hosts": [],
        "hosts": [host("a", 1), host("b", 2)],
    }
    console = Console(record=True, width=200)
    print_report(report, console)
    rows = [line for line in console.export_text().splitlines() if "x8x8" in line and ("│ a" in line or "│ b" in line)]
    assert len(rows) == 4
    assert any("4x8x8" in r and "│ b" in r and "0.0900" in r for r in rows)  # mean of 0.06 and 0.12


def test_summary_shows_the_devices_and_the_straggler_line_of_the_run_s_report(tmp_path):
    """The console summary at the end of `run` / `attach` says whom the engine waited for,
    as report.txt does (read from the run's report.json)."""
    import json

    from rich.console import Console

    from ray_tpu_profile.analysis.device_analysis import analyse_devices
    from support.tpu_traces import MS, Slow, tpu_run_dir

    run_dir = tpu_run_dir(tmp_path / "run", steps=4, slow=Slow("host-a", 1, 3.0), clock_ahead_ns={"host-b": 40 * MS})
    analysed = analyse_devices(run_dir, json.loads((run_dir / "manifest.json").read_text()))
    (run_dir / "report.json").write_text(json.dumps(analysed))
    console = Console(record=True, width=200)
    print_summary(manifest({"host-a": [1.0], "host-b": []}), run_dir, console)
    text = console.export_text()
    (verdict,) = [s["verdict"] for s in analysed["stragglers"]]
    assert f"collectives: {verdict}" in text and verdict.startswith("engine0: host-a /device:TPU:1 arrived last")
    assert "devices (in each host's capture window)" in text and "/device:TPU:1" in text
    console = Console(record=True, width=200)
    print_summary(manifest({"a": [1.0]}), tmp_path / "no-report-here", console)
    assert "collectives:" not in console.export_text()
