"""The driver's stages without a cluster: the run state, window placement, capture at
one instant, verification and the end of a run, on fake hosts (tests/fakes.py) and real
files. The e2e tests run the same stages on real actors, vLLM and profilers."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from fakes import FakeHost, Said, run_state
from ray_tpu_profile import finish, stages
from ray_tpu_profile.barrier import Barrier
from ray_tpu_profile.capture_plans import ServerPlan, TorchPlan, make_plan
from ray_tpu_profile.layout import read_manifest
from ray_tpu_profile.records import Phase, Stage
from ray_tpu_profile.schedule import PREFILL_MARGIN, StepWindow, TimeWindow


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def barrier_over(run, handles: dict) -> Barrier:
    return Barrier(run.records, handles, Said(), 30.0, on_stage=run.enter)


def iterations(start_s: float, prefill_s: float, end_s: float, count: int = 3) -> Phase:
    return Phase(start_s, start_s + count * end_s, latencies_s=(end_s,) * count,
                 iteration_starts_s=tuple(start_s + i * end_s for i in range(count)),
                 prefill_s=(prefill_s,) * count, end_s=(end_s,) * count)


def test_a_sweep_keeps_every_shapes_timings_and_capture_plan(tmp_path, pool):
    run = run_state(tmp_path, shapes=("2x8x8", "4x8x8"), profiler="jax")
    fakes = {n: FakeHost(pool, set_shape=lambda w, tag: 1, warmup=lambda: iterations(1.0, 0.01, 0.1),
                         profile=lambda it_ns, trace_ns, window: iterations(2.0, 0.01, 0.1, 1),
                         capture_info=lambda: {"profiler": "jax", "session": "s"})
             for n in ("h0", "h1")}
    hosts, plan = barrier_over(run, fakes), make_plan(run.capture)
    for workload in run.config.workloads:
        with stages.shape_stages(run, workload) as shape:
            stages.switch_shape(run, hosts, shape)
            stages.warm_up(run, hosts, shape)
            stages.place_window(run, hosts, shape, plan)
            stages.capture(run, hosts, shape)
    by_shape = run.timings.by_shape_s
    assert set(by_shape) == {"2x8x8", "4x8x8"}  # the first shape's are not overwritten
    assert all(set(t) == {"shape", "warmup", "capture"} for t in by_shape.values())
    assert run.timings.total_s["capture"] == pytest.approx(sum(t["capture"] for t in by_shape.values()), abs=1e-3)
    # every host got the same two instants of its shape, the ones recorded
    for shape in run.shapes.values():
        calls = [[args for m, args in f.calls if m == "profile"][list(run.shapes).index(shape.workload.shape)]
                 for f in fakes.values()]
        assert calls[0] == calls[1] == (shape.planned["iterations_start_ns"], shape.planned["trace_start_ns"], None)
        assert shape.loads == {"h0": 1, "h1": 1} and shape.backend["session"] == "s"
    manifest = run.manifest()
    assert manifest["timings_by_shape_s"] == by_shape and set(manifest["capture"]["shapes"]) == {"2x8x8", "4x8x8"}
    assert manifest["capture"]["shapes"]["4x8x8"]["tag"] == "4x8x8"


def test_a_decode_window_clears_the_slowest_traced_prefill_on_any_host(tmp_path, pool):
    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    traced = {"h0": iterations(5.0, 0.012, 0.300, 1), "h1": iterations(5.0, 0.020, 0.280, 1)}
    fakes = {n: FakeHost(pool, warmup=lambda: iterations(1.0, 0.005, 0.290),
                         traced_iteration=lambda at_ns, n=n: traced[n]) for n in traced}
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
    assert run.records[1].shapes[shape.workload.shape]["traced"] is traced["h1"]
    assert "window" in run.timings.by_shape_s[shape.workload.shape]


def test_a_host_that_fails_its_traced_iteration_leaves_the_window_to_the_others(tmp_path, pool):
    def fails(at_ns):
        raise RuntimeError("capture failed")

    run = run_state(tmp_path, profiler="jax", phase="decode", duration_given=False)
    fakes = {"h0": FakeHost(pool, warmup=lambda: iterations(1.0, 0.005, 0.29), traced_iteration=fails),
             "h1": FakeHost(pool, warmup=lambda: iterations(1.0, 0.005, 0.29),
                            traced_iteration=lambda at_ns: iterations(5.0, 0.010, 0.29, 1))}
    hosts = barrier_over(run, fakes)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, make_plan(run.capture))
    assert run.records[0].stage == Stage.WINDOW and "capture failed" in run.records[0].error
    assert "(h1;" in shape.window.chosen_from and shape.window.delay_ms >= 10 * PREFILL_MARGIN


def test_a_torch_phase_window_is_in_engine_steps_and_the_capture_gets_it(tmp_path, pool):
    run = run_state(tmp_path, profiler="torch", phase="decode")
    fakes = {n: FakeHost(pool, warmup=lambda: iterations(1.0, 0.005, 0.29), prefill_steps=lambda: 1,
                         profile=lambda *args: iterations(2.0, 0.005, 0.29, 1), capture_info=lambda: {})
             for n in ("h0", "h1")}
    hosts = barrier_over(run, fakes)
    with stages.shape_stages(run, run.config.workload) as shape:
        stages.warm_up(run, hosts, shape)
        stages.place_window(run, hosts, shape, make_plan(run.capture))
        stages.capture(run, hosts, shape)
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
    assert ok.healthy and ok.shapes["4x8x8"]["capture"] == {"steps": {"prefill": 0, "decode": 3}}
    assert bad.stage == Stage.VERIFY and bad.error == "--phase decode captured 1 prefill and 1 decode step(s)"


def test_server_verification_fails_a_host_that_delivered_no_xplane(tmp_path, pool):
    run = run_state(tmp_path, profiler="jax")
    hosts = barrier_over(run, {n: FakeHost(pool) for n in ("h0", "h1")})
    run.shapes["4x8x8"] = stages.ShapeRun(run.config.workload, None, planned={"trace_start_ns": 0})
    stages.verify(run, hosts, ServerPlan(run.capture))
    expected = f"the capture wrote no plugins/profile/{run.run_id}/h0.xplane.pb"
    assert run.records[0].error == expected and run.records[0].stage == Stage.VERIFY
    assert run.shapes["4x8x8"].checked == {"session": run.run_id, "start_skew_ms": None}


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
