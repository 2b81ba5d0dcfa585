"""Engines that span hosts, end to end: vLLM's real Ray executor (through the simulated TPU
platform, ray_tpu_profile/sim_platform) runs one engine over several simulated 1-chip
hosts of a real Ray cluster; every host's worker process is traced at the run's one
instant, its files gathered and verified, and nothing is left running."""

from __future__ import annotations

import gzip
import json
import os
import signal

import pytest

from ray_tpu_profile.profilers.capture_socket import SOCKET_DIR_PREFIX
from support.cli import load_manifest, load_report, run_cli, start_cli, wait_for_stage
from support.cluster import STATE_API, module_cluster, wait_until_released
from support.scheduling import expected_start_wake_up

# The workload of the runs here, each an engine of 2 ranks.
ENGINE_WORKLOAD = ["--input-len", "16", "--output-len", "64", "--batch-size", "4"]
# vLLM's flag for an engine of 2 ranks: it spans two of the 1-chip hosts.
TP2 = ["--", "--tensor-parallel-size", "2"]


SLOW_MS = 10.0
"""local-sim-w3 reaches each collective this late (sim_platform's test-only hook): a host
with slower compute, for the straggler analysis to name."""


@pytest.fixture(scope="module")
def one_chip_hosts(tmp_path_factory):
    """Head (no TPU, dashboard for the state API) + 4 simulated TPU hosts of 1 chip each,
    each with its own TMPDIR, as `--chips-per-host 1` makes them; the last one is slow
    (SLOW_MS): only runs on all 4 hosts use it, as engine1's rank 1."""
    from ray_tpu_profile.placement.cluster import simulated_host_node_args
    from ray_tpu_profile.sim_platform.communicator import SIMULATED_SLOW_ENV

    slow = lambda i: {SIMULATED_SLOW_ENV: str(SLOW_MS)} if i == 3 else {}  # noqa: E731
    with module_cluster(
        tmp_path_factory, simulated_host_node_args(4, chips_per_host=1), "one-chip-host", slow
    ) as cluster:
        yield cluster


def vllm_workers_alive() -> list:
    from ray.util.state import list_actors

    return [
        a
        for a in list_actors(address=STATE_API["address"], limit=10000)
        if a.class_name == "RayWorkerProc" and a.state != "DEAD"
    ]


def only_run_dir(root):
    (run_dir,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return run_dir


def engine_run(cluster, out, *flags: str):
    """A run of engines of 2 ranks (TP2) on the cluster into out, as --json; its run directory."""
    proc = run_cli("run", "--address", cluster.address, "--profile-result-dir", str(out), "--json", *flags, *TP2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return only_run_dir(out)


def test_one_engine_across_two_hosts_decode_traced_on_both_at_one_instant(one_chip_hosts, tmp_path):
    from ray_tpu_profile.analysis.xplane import event_names, read_xplane

    temp_before = one_chip_hosts.tmp_entries()
    # --phase decode, the users' headline job: the window is placed from the owner's traced
    # warmup iteration and every host's trace is checked to lie inside its decode.
    run_dir = engine_run(
        one_chip_hosts, tmp_path, "--hosts", "2", "--profiler", "jax", "--phase", "decode", *ENGINE_WORKLOAD,
        "--num-iters-warmup", "3",
    )  # fmt: skip
    manifest = load_manifest(run_dir)
    assert [(e["name"], e["hosts"], e["owner"], e["tensor_parallel_size"]) for e in manifest["engines"]] == [
        ("engine0", ["local-sim-w0", "local-sim-w1"], "local-sim-w0", 2)
    ]
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
        assert host["capture"]["start_wake_up"] == expected_start_wake_up()  # in the worker, over its socket
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
    report = load_report(run_dir)
    assert [(h["name"], h["engine"], h["ranks"]) for h in report["hosts"]] == [
        ("local-sim-w0", "engine0", [0]),
        ("local-sim-w1", "engine0", [1]),
    ]
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    assert [e["args"]["name"] for e in timeline["traceEvents"] if e.get("name") == "process_name"] == [
        "local-sim-w0 (engine0, rank 0)",
        "local-sim-w1 (engine0, rank 1)",
    ]
    assert not vllm_workers_alive() and wait_until_released() == ([], [])
    # The capture socket the tool opened in each worker (a worker is killed, never closed)
    # is removed by its host's actor: none is left in any host's temp dir. (vLLM's own zmq
    # sockets, <uuid> in the owner's, stay: its processes are killed too.)
    for left in one_chip_hosts.left_in_tmp(temp_before):
        assert not [name for name in left if name.startswith(SOCKET_DIR_PREFIX)], left


def test_two_engines_traced_by_torch_and_a_worker_killed_in_warmup_fails_only_its_engine(one_chip_hosts, tmp_path):
    """Two engines of two hosts each under the torch profiler; the worker process of rank 1
    of engine1 (on local-sim-w3) is killed for real while the hosts warm up. engine1 fails
    on both its hosts with the reason; engine0 delivers each host's own worker's trace.
    (One run for both: an engine load on 4 simulated hosts costs minutes on 2 cores.)"""
    proc = start_cli(
        "run",
        "--address",
        one_chip_hosts.address,
        "--profiler",
        "torch",
        "--profile-result-dir",
        str(tmp_path),
        *ENGINE_WORKLOAD,
        "--num-iters-warmup",
        "20",
        "--timeout-s",
        "240",
        *TP2,
    )
    try:
        manifest = wait_for_stage(tmp_path, "warmup", proc=proc)
        victim = next(h for h in manifest["hosts"] if h["name"] == "local-sim-w3")
        os.kill(victim["worker"]["pid"], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    manifest = load_manifest(run_dir)
    assert [e["hosts"] for e in manifest["engines"]] == [
        ["local-sim-w0", "local-sim-w1"],
        ["local-sim-w2", "local-sim-w3"],
    ]
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


def test_the_slow_host_of_an_engine_is_named_its_straggler_and_an_even_engine_has_none(one_chip_hosts, tmp_path):
    """Two engines of two hosts each under the torch profiler; local-sim-w3 (engine1's rank 1)
    reaches every collective SLOW_MS late. Without device planes the collectives are matched
    at host level (the gloo transport events of each rank's trace), on the driver's clock:
    engine1's report names local-sim-w3 and its partner's wait; engine0's hosts are even."""
    run_dir = engine_run(
        one_chip_hosts, tmp_path, "--profiler", "torch", "--input-len", "16", "--output-len", "16",
        "--batch-size", "4", "--num-iters-warmup", "2",
    )  # fmt: skip
    report = load_report(run_dir)
    by_engine = {s["engine"]: s for s in report["stragglers"]}
    assert set(by_engine) == {"engine0", "engine1"}, report["stragglers"]
    slowed, even = by_engine["engine1"], by_engine["engine0"]
    # Every call of the slowed host's engine waits SLOW_MS for it, far above the clocks'
    # bound (~1 ms here) and gloo's own jitter (up to ~4 ms seen on 2 busy cores).
    assert slowed["straggler"] == {"host": "local-sim-w3", "device": "host"}, slowed
    assert slowed["last"][0]["times"] >= 0.9 * slowed["occurrences"], slowed
    assert slowed["verdict"].startswith(f"engine1: local-sim-w3 arrived last at {slowed['last'][0]['times']} of ")
    assert slowed["wait_per_step_ms"] >= SLOW_MS / 2, slowed
    # The even engine: with clocks known to ~20 us, one of its hosts may be last more often
    # than chance (seen in CI: 55 of 89, and more), by far less than the slowed host: what it
    # costs the steps is what tells them apart, and is what the verdict reports.
    assert even["verdict"] in (run_dir / "report.txt").read_text()
    assert even["wait_per_step_ms"] is None or even["wait_per_step_ms"] < slowed["wait_per_step_ms"] / 2, even
    engine1 = [c for c in report["collectives"] if c["engine"] == "engine1"]
    assert engine1 and {c["name"] for c in engine1} <= {"gloo:all_reduce", "gloo:all_gather"}
    for c in engine1:
        assert {p["host"] for p in c["participants"]} == {"local-sim-w2", "local-sim-w3"}
        assert c["together_at"] == "end"
    # report.txt says it in one line; the timeline links each call's participants.
    assert slowed["verdict"] in (run_dir / "report.txt").read_text()
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    flows = [e for e in timeline["traceEvents"] if e.get("cat") == "collective"]
    assert {e["ph"] for e in flows} == {"s", "f"}
    assert not vllm_workers_alive() and wait_until_released() == ([], [])


def test_plan_shows_engines_and_bad_input_names_what_fits(one_chip_hosts, tmp_path):
    proc = run_cli("plan", "--address", one_chip_hosts.address, "--json", "--", "--tensor-parallel-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = json.loads(proc.stdout)
    assert [(e["name"], e["ranks"]) for e in planned["engines"]] == [
        ("engine0", {"local-sim-w0": [0], "local-sim-w1": [1]}),
        ("engine1", {"local-sim-w2": [0], "local-sim-w3": [1]}),
    ]
    assert planned["placement"]["reservation"] == "placement_group per engine"
    cases = [
        (["--hosts", "3"], ["--tensor-parallel-size", "2"], "--hosts 3: an engine of TP x PP = 2 spans 2 hosts"),
        ([], ["--tensor-parallel-size", "8"], "--tensor-parallel-size 8: an engine of TP x PP = 8 needs 8 hosts"),
        (["--chips-per-host", "1"], [], "--chips-per-host 1: only for the local simulated cluster"),
    ]
    # Side by side, each its own CLI process: each imports vLLM first (10-20 s here).
    outs = [tmp_path / f"out{i}" for i in range(len(cases))]
    procs = [
        start_cli(
            "run", "--address", one_chip_hosts.address, *flags, "--profile-result-dir", str(out), "--", *engine_flags
        )
        for out, (flags, engine_flags, _) in zip(outs, cases)
    ]
    for proc, out, (_, _, message) in zip(procs, outs, cases):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 2, stderr[-3000:]
        (line,) = stderr.strip().splitlines()[-1:]
        assert line.startswith("ray-tpu-profile: error: ") and message in line, line
        assert not out.exists() or not list(out.iterdir())
    assert wait_until_released() == ([], [])


def test_attach_traces_both_workers_of_a_live_engine_across_two_hosts_at_one_instant(one_chip_hosts, tmp_path):
    """A deployment-like engine: vLLM's Ray executor over two simulated hosts, kept alive in
    an actor whose runtime_env has RAY_TPU_PROFILE_ATTACH=1 (vLLM's workers inherit it), and
    serving from a loop. `attach --address` finds its processes through Ray's KV store and
    traces both workers at one instant while it serves."""
    import threading
    import time

    import ray

    from ray_tpu_profile.analysis.xplane import event_names
    from ray_tpu_profile.config import Capture, Workload
    from ray_tpu_profile.core.records import EngineRole
    from ray_tpu_profile.driver.state import engine_across_hosts_env
    from ray_tpu_profile.host.engine import ENGINE_ENV, TINY_MODEL_ENGINE_DEFAULTS
    from ray_tpu_profile.host.tiny_model import default_tiny_model_dir
    from ray_tpu_profile.placement import cluster, engines

    nothing = run_cli("attach", "--address", one_chip_hosts.address, "--list")  # before the deployment exists
    assert (
        nothing.returncode == 2 and "no vLLM process is registered for attach in the Ray cluster" in nothing.stderr
    ), nothing.stderr
    # This process may hold the session's connection to sim_cluster (conftest): switched
    # to this module's cluster for the test and back after.
    previous = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    ray.shutdown()
    ray.init(address=one_chip_hosts.address)
    reservation = None
    try:
        engine = engines.plan_engines(cluster.discover_hosts()[:2], 2)[0]
        reservation = cluster.reserve_engines([engine], "live", 120, bundle_per_chip=True)
        env = {
            **ENGINE_ENV,
            **engine_across_hosts_env(engine, True),
            "RAY_TPU_PROFILE_ATTACH": "1",
            "RAY_TPU_PROFILE_ATTACH_NAME": "live",
        }
        owner = cluster.start_actors(reservation, list(engine.hosts), "live", env)[engine.owner.name]
        role = EngineRole(engine.name, owner=True, spans_hosts=True, ranks=(0,))
        argv = ["--model", str(default_tiny_model_dir()), *TINY_MODEL_ENGINE_DEFAULTS, "--tensor-parallel-size", "2"]
        ray.get(
            owner.load.remote(
                argv,
                Workload(input_len=16, output_len=32, batch_size=4, num_iters=1),
                Capture(profiler="jax"),
                "live",
                True,
                role,
            ),
            timeout=600,
        )
        serving, served = threading.Event(), []

        def serve() -> None:
            while not serving.is_set():
                served.append(ray.get(owner.run_profiled.remote(None), timeout=300))

        loop = threading.Thread(target=serve, daemon=True)
        loop.start()
        try:
            deadline = time.monotonic() + 300
            while not served:  # serving steadily (its first iteration done) before attaching
                assert loop.is_alive() and time.monotonic() < deadline, "the engine served nothing"
                threading.Event().wait(0.2)
            listed = run_cli("attach", "--address", one_chip_hosts.address, "--list", "--json", "--name", "live")
            proc = run_cli(
                "attach",
                "--address",
                one_chip_hosts.address,
                "--name",
                "live",
                "--duration-ms",
                "1000",
                "--profile-result-dir",
                str(tmp_path),
                "--json",
            )
        finally:
            serving.set()
            loop.join(timeout=300)
        assert listed.returncode == 0, listed.stderr[-3000:]
        workers = {(s["host"], s["rank"]) for s in json.loads(listed.stdout) if s["role"] == "worker"}
        assert workers == {("local-sim-w0", 0), ("local-sim-w1", 1)}, listed.stdout
        assert proc.returncode == 0, proc.stderr[-4000:]
        manifest = json.loads(proc.stdout)
        traced = {(h["host"], h["role"], tuple(h["ranks"])): h for h in manifest["hosts"]}
        run_dir = only_run_dir(tmp_path)
        summarised_on = json.loads((run_dir / "report.json").read_text())["summarised_on"]
        for host, rank in (("local-sim-w0", 0), ("local-sim-w1", 1)):
            worker = traced[(host, "worker", (rank,))]
            assert worker["status"] == "ok" and worker["clock"] is not None, worker
            # Its node's actor summarised its traces once they were in, for the reports.
            assert worker["summary"]["events"] > 0 and summarised_on[worker["name"]] == "host", worker["summary"]
            (xplane,) = [f["path"] for f in worker["files"] if f["path"].endswith(".xplane.pb")]
            assert any("execute_model" in n for n in event_names(run_dir / xplane)), host
        capture = manifest["capture"]
        assert capture["start_skew_ms"] is not None and capture["start_skew_uncertainty_ms"] is not None
        assert capture["start_skew_ms"] < 10, capture
        assert len(served) >= 2 and all(p.latencies_s for p in served)  # it served before and after
        from ray.util.state import list_actors

        assert [
            a
            for a in list_actors(address=STATE_API["address"], limit=10000)
            if a.class_name == "AttachActor" and a.state != "DEAD"
        ] == []  # attach left nothing running
    finally:
        if reservation is not None:
            reservation.release()
        ray.shutdown()
        if previous is not None:
            ray.init(address=previous)
