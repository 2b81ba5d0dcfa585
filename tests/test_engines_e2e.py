"""Engines that span hosts, end to end: vLLM's real Ray executor (through the simulated TPU
platform, ray_tpu_profile/sim_platform) runs one engine over several simulated 1-chip
hosts of a real Ray cluster; every host's worker process is traced at the run's one
instant, its files gathered and verified, and nothing is left running."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess

import pytest

from conftest import (CLI, REPO, STATE_API, load_manifest, module_cluster, run_cli, wait_for_stage,
                      wait_until_released)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_chip_hosts(tmp_path_factory):
    """Head (no TPU, dashboard for the state API) + 4 simulated TPU hosts of 1 chip each,
    each with its own TMPDIR, as `--chips-per-host 1` makes them."""
    from ray_tpu_profile.cluster import simulated_host_node_args

    with module_cluster(tmp_path_factory, simulated_host_node_args(4, chips_per_host=1), "one-chip-host") as cluster:
        yield cluster


def vllm_workers_alive() -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(address=STATE_API["address"], limit=10000)
            if a.class_name == "RayWorkerProc" and a.state != "DEAD"]


def only_run_dir(root):
    (run_dir,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return run_dir


def test_one_engine_across_two_hosts_decode_traced_on_both_at_one_instant(one_chip_hosts, tmp_path):
    from ray_tpu_profile.xplane import event_names, read_xplane

    # --phase decode, the users' headline job: the window is placed from the owner's traced
    # warmup iteration and every host's trace is checked to lie inside its decode.
    proc = run_cli("run", "--address", one_chip_hosts.address, "--hosts", "2", "--profiler", "jax", "--phase", "decode",
                   "--profile-result-dir", str(tmp_path), "--json", "--input-len", "16", "--output-len", "64",
                   "--batch-size", "4", "--num-iters-warmup", "3", "--", "--tensor-parallel-size", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    manifest = load_manifest(run_dir)
    assert [(e["name"], e["hosts"], e["owner"], e["tensor_parallel_size"]) for e in manifest["engines"]] == [
        ("engine0", ["local-sim-w0", "local-sim-w1"], "local-sim-w0", 2)]
    session = manifest["capture"]["session"]
    pids = set()
    for rank, host in enumerate(manifest["hosts"]):
        assert (host["status"], host["engine"], host["ranks"]) == ("ok", "engine0", [rank])
        worker = host["worker"]
        assert worker["rank"] == rank and worker["node_id"] == host["node_id"]
        assert worker["pid"] != host["pid"]  # vLLM's worker process, not the tool's actor
        xplane = run_dir / "plugins" / "profile" / session / f"{host['name']}.xplane.pb"
        assert host["capture"]["xplane"] == xplane.relative_to(run_dir).as_posix()
        assert read_xplane(xplane).process_id == worker["pid"]  # traced that worker, on its host
        assert any("execute_model" in name for name in event_names(xplane)), "no model step in the worker's trace"
        pids.add(worker["pid"])
    assert len(pids) == 2
    assert manifest["capture"]["start_skew_ms"] is not None and manifest["capture"]["start_skew_ms"] < 50
    owner, other = manifest["hosts"]
    assert len(owner["latency_s"]["profiled"]) == 1 and other["latency_s"]["profiled"] == []  # the owner iterates
    window = manifest["capture"]["window"]
    assert window["kind"] == "time" and window["phase"] == "decode"
    assert owner["shapes"]["4x16x64"]["phases"]["traced"]["prefill_s"]  # the owner's traced warmup iteration
    # reports group hosts by engine
    report = json.loads((run_dir / "report.json").read_text())
    assert [(h["name"], h["engine"], h["ranks"]) for h in report["hosts"]] == [
        ("local-sim-w0", "engine0", [0]), ("local-sim-w1", "engine0", [1])]
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    assert [e["args"]["name"] for e in timeline["traceEvents"] if e.get("name") == "process_name"] == [
        "local-sim-w0 (engine0, rank 0)", "local-sim-w1 (engine0, rank 1)"]
    assert not vllm_workers_alive() and wait_until_released() == ([], [])


def test_two_engines_traced_by_torch_and_a_worker_killed_in_warmup_fails_only_its_engine(one_chip_hosts, tmp_path):
    """Two engines of two hosts each under the torch profiler; the worker process of rank 1
    of engine1 (on local-sim-w3) is killed for real while the hosts warm up. engine1 fails
    on both its hosts with the reason; engine0 delivers each host's own worker's trace.
    (One run for both: an engine load on 4 simulated hosts costs minutes on 2 cores.)"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [*CLI, "run", "--address", one_chip_hosts.address, "--profiler", "torch",
         "--profile-result-dir", str(tmp_path), "--input-len", "16", "--output-len", "64", "--batch-size", "4",
         "--num-iters-warmup", "20", "--timeout-s", "240", "--", "--tensor-parallel-size", "2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        manifest = wait_for_stage(tmp_path, "warmup")
        victim = next(h for h in manifest["hosts"] if h["name"] == "local-sim-w3")
        os.kill(victim["worker"]["pid"], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    manifest = load_manifest(run_dir)
    assert [e["hosts"] for e in manifest["engines"]] == [["local-sim-w0", "local-sim-w1"],
                                                         ["local-sim-w2", "local-sim-w3"]]
    by_name = {h["name"]: h for h in manifest["hosts"]}
    for name in ("local-sim-w2", "local-sim-w3"):
        assert by_name[name]["status"] == "failed" and by_name[name]["stage"] == "warmup"
    gone = f"the worker of rank 1 on local-sim-w3 (pid {victim['worker']['pid']}) is gone"
    assert gone in by_name["local-sim-w2"]["error"] and gone in by_name["local-sim-w3"]["error"]
    delivered = [by_name["local-sim-w0"], by_name["local-sim-w1"]]
    for host in delivered:
        assert host["status"] == "ok", host
        traces = [f["path"] for f in host["files"] if f["path"].endswith(".pt.trace.json.gz")]
        (trace,) = traces  # its own worker's trace only, though simulated hosts share a disk
        assert trace.startswith(f"hosts/{host['name']}/torch/{host['name']}_rank{host['ranks'][0]}.")
        events = json.load(gzip.open(run_dir / trace))["traceEvents"]
        steps = {e["pid"] for e in events if e.get("name", "").startswith("execute_context_")}
        assert steps == {host["worker"]["pid"]}, (host["name"], steps)
    assert len({h["worker"]["pid"] for h in delivered}) == 2
    assert not vllm_workers_alive() and wait_until_released() == ([], [])


def test_plan_shows_engines_and_bad_input_names_what_fits(one_chip_hosts, tmp_path):
    proc = run_cli("plan", "--address", one_chip_hosts.address, "--json", "--", "--tensor-parallel-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = json.loads(proc.stdout)
    assert [(e["name"], e["ranks"]) for e in planned["engines"]] == [
        ("engine0", {"local-sim-w0": [0], "local-sim-w1": [1]}), ("engine1", {"local-sim-w2": [0], "local-sim-w3": [1]})]
    assert planned["placement"]["reservation"] == "placement_group per engine"
    cases = [
        (["--hosts", "3"], ["--tensor-parallel-size", "2"], "--hosts 3: an engine of TP x PP = 2 spans 2 hosts"),
        ([], ["--tensor-parallel-size", "8"], "--tensor-parallel-size 8: an engine of TP x PP = 8 needs 8 hosts"),
        (["--chips-per-host", "1"], [], "--chips-per-host 1: only for the local simulated cluster"),
    ]
    # Side by side, each its own CLI process: each imports vLLM first (10-20 s here).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    outs = [tmp_path / f"out{i}" for i in range(len(cases))]
    procs = [subprocess.Popen([*CLI, "run", "--address", one_chip_hosts.address, *flags, "--profile-result-dir",
                               str(out), "--", *engine_flags], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for out, (flags, engine_flags, _) in zip(outs, cases)]
    for proc, out, (_, _, message) in zip(procs, outs, cases):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 2, stderr[-3000:]
        (line,) = stderr.strip().splitlines()[-1:]
        assert line.startswith("ray-tpu-profile: error: ") and message in line, line
        assert not out.exists() or not list(out.iterdir())
    assert wait_until_released() == ([], [])
