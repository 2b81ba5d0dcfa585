"""Faults caused for real during a run: what was captured is kept, the manifest says
which host failed where, the exit code says partial, and nothing is left running."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cli import REPO, TINY_WORKLOAD, load_manifest, start_cli, wait_for_stage
from support.cluster import wait_until_released

WITH_FAULTS = ("--env", f"PYTHONPATH={REPO / 'tests' / 'support' / 'faults'}")
"""Flags that load tests/support/faults/sitecustomize.py into every model process; its
own --env flags then choose the fault."""


def start_run(sim_cluster, tmp_path, *flags: str) -> subprocess.Popen:
    """Start a run of the tiny workload on sim_cluster into tmp_path, with flags."""
    return start_cli(
        "run", "--address", sim_cluster.address, "--profile-result-dir", str(tmp_path), *TINY_WORKLOAD, *flags
    )


def assert_partial(proc, stdout, stderr, tmp_path, victim, stage, reason):
    assert proc.returncode == 3, stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert manifest["status"] == "partial"
    failed = [h for h in manifest["hosts"] if h["status"] == "failed"]
    healthy = [h for h in manifest["hosts"] if h["status"] == "ok"]
    assert [h["name"] for h in failed] == [victim["name"]]
    assert failed[0]["stage"] == stage and reason in failed[0]["error"], failed[0]
    assert healthy and all(h["files"] for h in healthy)
    for host in healthy:  # every healthy host's traces are there and match the manifest
        for f in host["files"]:
            assert (run_dir / f["path"]).stat().st_size == f["bytes"]
    assert f"failed at {stage}" in stdout
    assert wait_until_released() == ([], [])


@pytest.mark.parametrize("stage", ["load", "warmup", "capture"])
def test_host_killed_during_a_stage_gives_partial_run(sim_cluster, tmp_path, stage):
    proc = start_run(sim_cluster, tmp_path, "--num-iters-warmup", "40")
    try:
        victim = wait_for_stage(tmp_path, stage, proc=proc)["hosts"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert_partial(proc, stdout, stderr, tmp_path, victim, stage, "died")


def test_hung_host_times_out_and_the_rest_carry_on(sim_cluster, tmp_path):
    """A host that stops answering (SIGSTOP: alive but frozen) is failed after --timeout-s."""
    proc = start_run(sim_cluster, tmp_path, "--num-iters-warmup", "40", "--timeout-s", "45")
    victim = None
    try:
        victim = wait_for_stage(tmp_path, "warmup", proc=proc)["hosts"][1]
        os.kill(victim["pid"], signal.SIGSTOP)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
        if victim:
            try:
                os.kill(victim["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass  # Ray already killed it: that is the expected outcome
    assert_partial(proc, stdout, stderr, tmp_path, victim, "warmup", "timed out after 45 s")


def test_ctrl_c_during_warmup_stops_cleanly_and_keeps_the_run(sim_cluster, tmp_path):
    """SIGINT, what Ctrl-C sends. Exit 5, manifest `stopped` with its stage, actors and
    placement group released. (SIGTERM, what `ray job stop` sends the driver, is tested
    through `ray job stop` itself in test_job_submit.py.)"""
    signum = signal.SIGINT
    proc = start_run(sim_cluster, tmp_path, "--num-iters-warmup", "200")
    try:
        wait_for_stage(tmp_path, "warmup", proc=proc)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 5, stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert (manifest["status"], manifest["stage"]) == ("stopped", "warmup")
    assert signal.Signals(signum).name in manifest["error"]
    assert all(h["status"] == "failed" and h["stage"] == "warmup" for h in manifest["hosts"])
    assert all(h["latency_s"]["load"] > 0 for h in manifest["hosts"])  # what was done is kept
    assert wait_until_released() == ([], [])


def test_host_killed_during_gather_keeps_what_arrived(sim_cluster, tmp_path):
    """A host dies while its files are on the way. To have a gather long enough to kill it
    in flight, the test adds a 2 GB file (sparse) to the victim's output directory during
    capture, as a large XLA dump would be; the kill lands once a chunk of it has arrived."""
    proc = start_run(sim_cluster, tmp_path)
    try:
        victim = wait_for_stage(tmp_path, "capture", proc=proc)["hosts"][1]
        dump = Path(victim["scratch_dir"]) / "xla_dump" / "module_0001.after_optimizations.txt"
        dump.parent.mkdir(parents=True)
        with open(dump, "wb") as f:
            f.truncate(2 << 30)
        deadline = time.monotonic() + 180
        while not list(tmp_path.glob(f".*.partial/hosts/{victim['name']}/xla_dump/*.part")):
            assert time.monotonic() < deadline and proc.poll() is None, "the dump never started to arrive"
            time.sleep(0.05)
        os.kill(victim["pid"], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert_partial(proc, stdout, stderr, tmp_path, victim, "gather", "died")
    (run_dir,) = list(tmp_path.iterdir())
    assert not list(run_dir.rglob("*.part"))  # the file in transit is not left half written
    failed = [h for h in load_manifest(run_dir)["hosts"] if h["status"] == "failed"][0]
    on_disk = {
        p.relative_to(run_dir).as_posix() for p in (run_dir / "hosts" / failed["name"]).rglob("*") if p.is_file()
    }
    # What the victim delivered before it died (its torch trace: torch/ is listed before
    # xla_dump/) is listed and verified; nothing unlisted.
    assert any(f["path"].endswith(".pt.trace.json.gz") for f in failed["files"]), failed["files"]
    assert on_disk == {f["path"] for f in failed["files"]}
    for f in failed["files"]:
        assert hashlib.sha256((run_dir / f["path"]).read_bytes()).hexdigest() == f["sha256"]


def test_a_profiler_port_held_by_another_hosts_process_fails_that_host_and_the_rest_deliver(sim_cluster, tmp_path):
    """--profiler-port: worker 0's model process runs its own JAX server on the port (a fake
    cause, see tests/support/faults/sitecustomize.py: simulated hosts share localhost), worker
    1's runs none. Real effect: worker 1's wait is answered by worker 0's server, which the
    tool refuses to trace as worker 1 (the socket table says whose it is), failing that host
    at load with the reason; worker 0 is traced over its server and delivers."""
    from support.cli import free_port

    port = free_port()
    temp_before = sim_cluster.tmp_entries()
    proc = start_run(
        sim_cluster,
        tmp_path,
        "--profiler",
        "jax",
        "--profiler-port",
        str(port),
        "--duration-ms",
        "500",
        "--server-wait-s",
        "60",
        *WITH_FAULTS,
        "--env",
        "PROFILER_SERVER_ON_WORKER=0",
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    victim = next(h for h in manifest["hosts"] if h["status"] == "failed")
    assert victim["worker_id"] == 1
    assert_partial(proc, stdout, stderr, tmp_path, victim, "load", f"--profiler-port {port}: another process listens")
    (healthy,) = [h for h in manifest["hosts"] if h["status"] == "ok"]
    assert healthy["capture"]["events"] > 0  # its xplane was read back with xprof
    assert [f["path"] for f in healthy["files"] if f["path"].endswith(".xplane.pb")] == [healthy["capture"]["xplane"]]
    assert not any(f["path"].endswith(".xplane.pb") for f in victim["files"])
    # The failed host captured nothing: its scratch and its engine's process-group file
    # are gone with the healthy host's.
    assert victim["scratch_kept"] is None and not Path(victim["scratch_dir"]).exists()
    assert sim_cluster.left_in_tmp(temp_before) == [set()] * len(sim_cluster.host_tmpdirs)


def test_a_host_killed_summarising_keeps_its_traces_and_the_reports_read_them(sim_cluster, tmp_path):
    """Worker 1's actor is SIGKILLed as it starts its summary (a fake cause, see
    tests/support/faults/sitecustomize.py: an out-of-memory kill on a huge trace cannot be
    had with a tiny model). Real effect: its traces were gathered and verified before the
    summaries, so the host stays ok with all its files; the manifest says why it has no
    summary and why its scratch stays; the reports summarise its traces on the driver."""
    proc = start_run(
        sim_cluster,
        tmp_path,
        *WITH_FAULTS,
        "--env",
        "SUMMARY_KILLS_WORKER=1",
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert manifest["status"] == "ok" and all(h["status"] == "ok" for h in manifest["hosts"])
    victim = next(h for h in manifest["hosts"] if h["worker_id"] == 1)
    other = next(h for h in manifest["hosts"] if h["worker_id"] == 0)
    assert "died" in victim["summary"]["error"], victim["summary"]
    assert "died" in victim["scratch_kept"] and Path(victim["scratch_dir"]).is_dir()
    assert other["summary"]["events"] > 0 and other["scratch_kept"] is None
    assert not Path(other["scratch_dir"]).exists()
    traces = [f for f in victim["files"] if f["path"].endswith(".pt.trace.json.gz")]
    assert traces and not any(f["path"].endswith("summary.bin") for f in victim["files"])
    for f in victim["files"]:  # every trace it delivered is there, whole
        assert hashlib.sha256((run_dir / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["summarised_on"] == {other["name"]: "host", victim["name"]: "its host shipped none"}
    reported = {h["name"]: h for h in report["hosts"]}
    assert reported[victim["name"]]["top_operations"] and reported[victim["name"]]["steps"]["count"] > 0
    said = " ".join(stderr.split())  # progress goes to stderr, wrapped to the terminal
    assert f"{victim['name']}: its scratch" in said and "no summary (actor process died" in said
    # And the run's summary on stdout says both, after the table.
    assert f"{victim['name']}: no summary of its own (actor process died" in stdout
    assert f"{victim['name']}: its scratch {victim['scratch_dir']} is still there (actor process died" in stdout
    assert wait_until_released() == ([], [])
    shutil.rmtree(victim["scratch_dir"])


def _raise_without_a_message():
    raise AttributeError()  # what a half-patched library raises (tpu-inference's, once): no message


def test_a_hosts_error_without_a_message_is_named_by_where_the_host_raised_it(sim_cluster):
    """describe_error on what ray.get really raises from an actor on a simulated host: the
    class Ray makes of RayTaskError and the cause's (its unit test's hand-built error
    passed where this one failed whole stages, CI on 77866f9)."""
    import ray

    from ray_tpu_profile.driver.barrier import describe_error

    @ray.remote(num_cpus=0)
    class Host:
        def load(self):
            _raise_without_a_message()

    # By value: the host's worker cannot import this test module (its frames keep this file's name and lines).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        actor = Host.remote()
        try:
            with pytest.raises(AttributeError) as raised:
                ray.get(actor.load.remote(), timeout=120)
        finally:
            ray.kill(actor)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    line = _raise_without_a_message.__code__.co_firstlineno + 1
    said = describe_error(raised.value)
    assert said == f"AttributeError (no message), raised at test_faults.py:{line} in _raise_without_a_message", said


def test_hosts_whose_chips_another_job_holds_fail_the_run_at_place_and_it_still_ends_whole(sim_cluster, tmp_path):
    """Another job holds one simulated host's TPU chips (a real placement group of this
    test's): the run cannot reserve both hosts, fails at place within --timeout-s, and its
    end (manifest, reports, exit code) still runs: the place stage raising came on to the
    reports before with nothing started (CI would have read a NameError)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from ray_tpu_profile.errors import EXIT_FAILED

    chips = int(next(n["Resources"]["TPU"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("TPU")))
    held = placement_group([{"TPU": chips}], name="another-job")
    try:
        ray.get(held.ready(), timeout=60)
        proc = start_run(sim_cluster, tmp_path, "--timeout-s", "5")
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            proc.kill()
    finally:
        remove_placement_group(held)
    assert proc.returncode == EXIT_FAILED, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert manifest["status"] == "failed" and manifest["stage"] == "place", manifest["error"]
    assert "could not reserve 2 host(s)" in manifest["error"] and "held by another job" in manifest["error"]
    assert (run_dir / "report.png").is_file()  # the reports ran on what there is: the hosts' rows, no iterations
    assert wait_until_released() == ([], [])
