"""The end-of-run summary (pure, from a manifest)."""

from ray_tpu_profile.report import print_summary, slowest_host


def manifest(profiled):
    return {
        "run_id": "r", "status": "ok", "error": None, "capture": {"start_skew_ms": 0.25},
        "hosts": [
            {"name": n, "status": "ok", "stage": "gather", "error": None, "files": [],
             "latency_s": {"load": 1.0, "warmup": [0.1], "profiled": p}}
            for n, p in profiled.items()
        ],
    }


def test_slowest_host_against_the_median():
    assert slowest_host(manifest({"a": [1.0], "b": [1.0, 3.0], "c": [1.5]})) == ("b", 2.0, 1.5)
    assert slowest_host(manifest({"a": []})) is None


def test_summary_names_skew_and_slowest_host(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    print_summary(manifest({"a": [1.0], "b": [2.0]}), tmp_path, console)
    text = console.export_text()
    assert "capture start skew across hosts: 0.250 ms" in text
    assert "slowest host: b, profiled mean 2.000 s, +33.3% vs the median host" in text
    assert f"run directory: {tmp_path}" in text
