"""Device and collective analysis of TPU-like xplanes written here (no TPU on this machine):
two hosts of two chips, one chip slow, one host's clock 40 ms ahead and measured so."""

from __future__ import annotations

import json

import pytest

from ray_tpu_profile.analysis.device_analysis import analyse_devices
from ray_tpu_profile.analysis.device_traces import collective_ops, read_device_traces
from ray_tpu_profile.analysis.devices import MODULES_LINE, OPS_LINES
from support.tpu_traces import MS, Slow, tpu_run_dir

AHEAD = {"host-b": 40 * MS}


def analysed(run_dir):
    return analyse_devices(run_dir, json.loads((run_dir / "manifest.json").read_text()))


def test_each_chip_arrives_where_its_compute_ends_or_its_barrier_begins(tmp_path):
    run_dir = tpu_run_dir(tmp_path, slow=Slow("host-a", 1, 3.0), steps=2)
    traces = {t.device: t for t in read_device_traces(run_dir / "plugins/profile/run1/host-a.xplane.pb")}
    assert set(traces) == {"/device:TPU:0", "/device:TPU:1"}
    fast, slow = collective_ops(traces["/device:TPU:0"]), collective_ops(traces["/device:TPU:1"])
    # Chip 0 waits in barrier-cores from 10 ms until the op starts at 13 ms; chip 1 arrives at 13 ms.
    assert [(o.start_ns - o.arrive_ns) / MS for o in fast] == [3.0, 3.0]
    assert [(o.start_ns - o.arrive_ns) / MS for o in slow] == [0.0, 0.0]
    assert {o.program for o in fast + slow} == {"42"}  # by program, though run ids differ per chip


def test_the_slow_chip_is_named_on_the_driver_s_clock_and_only_with_the_offsets(tmp_path):
    run_dir = tpu_run_dir(tmp_path / "known", slow=Slow("host-a", 1, 3.0), clock_ahead_ns=AHEAD)
    result = analysed(run_dir)
    (straggler,) = result["stragglers"]
    assert straggler["straggler"] == {"host": "host-a", "device": "/device:TPU:1"}
    assert straggler["verdict"].startswith("engine0: host-a /device:TPU:1 arrived last at 3 of 3 collectives")
    assert straggler["wait_per_step_ms"] == pytest.approx(3.0, abs=0.01)
    assert result["collectives_total"] == 3
    for o in result["collectives"]:
        assert o["name"] == "all-reduce.3" and o["last"] == {"host": "host-a", "device": "/device:TPU:1"}
        assert o["max_wait_ms"] == pytest.approx(3.0, abs=0.01)
        # The op starts 1 us apart across hosts once corrected: within the 0.1 ms bound.
        assert o["start_spread_ms"] == pytest.approx(0.001) and not o["spread_exceeds_bound"]
        assert len(o["participants"]) == 4
    # Without the measured offsets, host-b's 40 ms-ahead clock makes its chips look last.
    blind = analysed(
        tpu_run_dir(tmp_path / "unknown", slow=Slow("host-a", 1, 3.0), clock_ahead_ns=AHEAD, clock_known=False)
    )
    assert blind["stragglers"][0]["straggler"]["host"] == "host-b"
    # ... and the ops' start spread, 40 ms where they start together, shows the clocks disagree.
    assert all(o["start_spread_ms"] > 39 and o["bound_ms"] is None for o in blind["collectives"])


def test_device_summaries_hold_busy_idle_categories_modules_and_waits(tmp_path):
    result = analysed(tpu_run_dir(tmp_path, slow=Slow("host-a", 1, 3.0), clock_ahead_ns=AHEAD))
    by_device = {(d["host"], d["device"]): d for d in result["devices"]}
    assert len(by_device) == 4
    fast, slow = by_device[("host-b", "/device:TPU:0")], by_device[("host-a", "/device:TPU:1")]
    assert fast["categories_ms"] == pytest.approx({"loop fusion": 27.0, "copy": 3.0, "all-reduce": 1.5})
    assert slow["categories_ms"] == pytest.approx({"loop fusion": 36.0, "copy": 3.0, "all-reduce": 1.5})
    assert fast["busy_ms"] + fast["idle_ms"] == pytest.approx(300.0) and fast["window_ms"] == 300.0
    assert fast["modules"][0]["name"] == "jit_step(42)" and fast["modules"][0]["executions"] == 3
    assert fast["collective_wait_ms"] == pytest.approx(9.0, abs=0.01) and slow["collective_wait_ms"] == 0.0
    assert fast["peak_flops_per_s"] == 918e12 and fast["flops_per_s"] == pytest.approx(6e9 / 31.5e-3)


def test_without_a_slow_chip_no_one_dominates(tmp_path):
    result = analysed(tpu_run_dir(tmp_path, clock_ahead_ns=AHEAD))
    assert all(o["max_wait_ms"] < 0.01 for o in result["collectives"])
    (straggler,) = result["stragglers"]
    assert straggler["straggler"] is None and straggler["verdict"] == (
        "engine0: every participant arrived together (within the clocks' bound) at all 3 collectives: no straggler"
    )


def test_category_totals_match_xprof_s_own_hlo_stats_of_the_same_file(tmp_path):
    """XProf's hlo_stats (its per-op self time, summed over a host's device planes) against
    the device summaries' categories: within 1%."""
    from collections import defaultdict

    from xprof.convert.raw_to_tool_data import xspace_to_tool_data

    run_dir = tpu_run_dir(tmp_path, slow=Slow("host-a", 1, 3.0))
    path = run_dir / "plugins/profile/run1/host-a.xplane.pb"
    # use_saved_result=False: XProf caches its op stats beside the file.
    raw, _ = xspace_to_tool_data([str(path)], "hlo_stats", {"use_saved_result": False})
    table = json.loads(raw)
    columns = [c["id"] for c in table["cols"]]
    xprof_ms: dict[str, float] = defaultdict(float)
    for row in table["rows"]:
        values = dict(zip(columns, (cell["v"] for cell in row["c"])))
        xprof_ms[values["category"]] += values["total_self_time"] / 1000  # us
    ours: dict[str, float] = defaultdict(float)
    for device in analysed(run_dir)["devices"]:
        if device["host"] == "host-a":
            for category, ms in device["categories_ms"].items():
                ours[category] += ms
    assert set(ours) == set(xprof_ms) == {"loop fusion", "copy", "all-reduce"}
    for category, ms in xprof_ms.items():
        assert ours[category] == pytest.approx(ms, rel=0.01), category


def test_xla_on_cpu_gives_one_device_per_ordinal_and_a_python_tracer_plane_gives_none(tmp_path):
    from ray_tpu_profile.analysis.xspace import EventSpec, LineSpec, PlaneSpec, write_xspace

    def op(name, start_ms, ordinal):
        stats = {"hlo_op": name, "hlo_module": "jit_run_model", "program_id": 5, "device_ordinal": ordinal}
        return EventSpec(name, round(start_ms * MS) * 1000, MS * 1000, stats=stats)

    python = [EventSpec("$model_runner.py:10 execute_model", 0, 5 * MS * 1000)]
    thunks = [op("dot.1", 0, 0), op("all-reduce.2", 1, 0), op("dot.1", 0, 1), op("all-reduce.2", 1.2, 1)]
    xla = write_xspace(
        tmp_path / "xla.xplane.pb",
        [PlaneSpec("/host:CPU", [LineSpec("python", 10, python), LineSpec("XLA thunks", 10, thunks)])],
    )
    traces = read_device_traces(xla)
    assert [(t.device, t.kind, sorted(e.name for e in t.events(lambda line: line in OPS_LINES))) for t in traces] == [
        ("/device:CPU:0", "CPU", ["all-reduce.2", "dot.1"]),
        ("/device:CPU:1", "CPU", ["all-reduce.2", "dot.1"]),
    ]
    # Each device's module execution spans its ops (first start to last end).
    ops = list(traces[1].events(lambda line: line in OPS_LINES))
    (execution,) = traces[1].events(lambda line: line == MODULES_LINE)
    assert execution.name == "jit_run_model" and execution.start_ns == min(o.start_ns for o in ops)
    assert execution.start_ns + execution.duration_ns == max(o.start_ns + o.duration_ns for o in ops)
    assert execution.duration_ns == round(2.2 * MS)
    assert [o.name for o in collective_ops(traces[1])] == ["all-reduce.2"]
    only_python = write_xspace(tmp_path / "py.xplane.pb", [PlaneSpec("/host:CPU", [LineSpec("python", 10, python)])])
    assert read_device_traces(only_python) == []


def test_diff_compares_each_device_s_steps_by_the_latency_rule(tmp_path):
    from ray_tpu_profile.analysis.diff import Run, diff_devices

    def run(name, slow_ms):
        run_dir = tpu_run_dir(tmp_path / name, steps=8, slow=Slow("host-a", 1, slow_ms), clock_ahead_ns=AHEAD)
        return Run(name, name, run_dir, json.loads((run_dir / "manifest.json").read_text()))

    devices, collectives = diff_devices(run("a", 1.0), run("b", 9.0))
    rows = {(r["host"], r["device"]): r for r in devices}
    assert len(rows) == 4
    slow = rows[("host-a", "/device:TPU:1")]
    # Every chip's step waits for the slowest: 8 ms more each step, on all four.
    assert all(r["verdict"] == "slower" and r["a_n"] == r["b_n"] == 8 for r in rows.values())
    assert slow["step_ratio"] == pytest.approx((10 + 9 + 0.5) / (10 + 1 + 0.5), rel=1e-3)
    assert slow["categories_ms"]["loop fusion"][1] - slow["categories_ms"]["loop fusion"][0] == pytest.approx(64.0)
    fast = rows[("host-b", "/device:TPU:0")]
    assert fast["collective_wait_ms"][1] - fast["collective_wait_ms"][0] == pytest.approx(64.0, abs=0.1)
    # The engine's straggler in both, and the others' wait per step: 8 ms more in B.
    (engine,) = collectives
    assert engine["straggler"] == [{"host": "host-a", "device": "/device:TPU:1"}] * 2
    assert engine["verdict"] == "slower" and engine["a_n"] == engine["b_n"] == 8
    assert engine["wait_per_step_ms"][1] - engine["wait_per_step_ms"][0] == pytest.approx(8.0, abs=0.01)
    same, _ = diff_devices(run("c", 1.0), run("d", 1.0))
    assert all(r["verdict"] == "within noise" for r in same)


def test_diff_takes_devices_from_the_hosts_summaries_and_parses_no_device_plane_again(tmp_path):
    """A run whose hosts shipped their summaries: diff's device analysis is the one read
    from the traces, and it stands when the xplanes can no longer be parsed (the summaries,
    which name the traces' sha256 as the manifest lists them, were used)."""
    from ray_tpu_profile.analysis.diff import Run, run_devices
    from support.tpu_traces import ship_summaries

    run_dir = tpu_run_dir(tmp_path / "r", steps=8, slow=Slow("host-a", 1, 9.0), clock_ahead_ns=AHEAD)
    read_here = run_devices(Run("A", "a", run_dir, json.loads((run_dir / "manifest.json").read_text())))
    assert read_here["stragglers"] and len(read_here["devices"]) == 4
    ship_summaries(run_dir)  # as each host ships its own after the gather
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for host in manifest["hosts"]:
        xplane = run_dir / host["files"][0]["path"]
        xplane.write_bytes(b"\xff" * xplane.stat().st_size)  # nothing xprof could parse any more
    assert analysed(run_dir)["devices"] == []  # read from the traces: nothing left to read
    assert run_devices(Run("A", "a", run_dir, manifest)) == read_here


def test_a_gate_fails_on_a_device_step_that_regressed(tmp_path):
    """--fail-above gates each device's step time as it gates latency: the hosts' iteration
    latencies are the same in both runs, the chips' steps are 8 ms slower in B."""
    from support.cli import run_cli

    a = tpu_run_dir(tmp_path / "a", steps=8, slow=Slow("host-a", 1, 1.0), clock_ahead_ns=AHEAD)
    b = tpu_run_dir(tmp_path / "b", steps=8, slow=Slow("host-a", 1, 9.0), clock_ahead_ns=AHEAD)
    gate = run_cli("diff", str(a), str(b), "--fail-above", "10", "--allow-few-samples")
    assert gate.returncode == 1, gate.stderr
    assert "slower by more than 10%: " in gate.stderr and "host-a /device:TPU:1 step +" in gate.stderr
    assert run_cli("diff", str(a), str(a), "--fail-above", "10", "--allow-few-samples").returncode == 0


def test_ops_out_of_time_order_give_what_ops_in_order_give(tmp_path):
    """A device line is walked as it comes when in time order; one that is not (events
    written out of order) is sorted first, with the same arrivals and summary."""
    import random

    from ray_tpu_profile.analysis.device_traces import DeviceTrace
    from ray_tpu_profile.analysis.devices import device_summary

    run_dir = tpu_run_dir(tmp_path, slow=Slow("host-a", 1, 3.0), steps=4)
    (trace, _) = read_device_traces(run_dir / "plugins/profile/run1/host-a.xplane.pb")
    events = list(trace.events())
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != events
    in_order, out_of_order = DeviceTrace("d", "TPU", held=events), DeviceTrace("d", "TPU", held=shuffled)
    assert collective_ops(out_of_order) == collective_ops(in_order) == collective_ops(trace)
    assert len(collective_ops(trace)) == 4
    window = (min(e.start_ns for e in events), max(e.start_ns + e.duration_ns for e in events))
    summaries = [device_summary("h", "d", "TPU", iter(evs), window) for evs in (events, shuffled)]
    assert summaries[0] == summaries[1] and summaries[0]["busy_ms"] > 0


def test_hosts_analysed_in_worker_processes_give_what_one_process_gives(tmp_path):
    run_dir = tpu_run_dir(tmp_path, slow=Slow("host-a", 1, 3.0), steps=6, clock_ahead_ns=AHEAD)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    alone = analyse_devices(run_dir, manifest, workers=1)
    assert analyse_devices(run_dir, manifest, workers=2) == alone
    assert alone["stragglers"][0]["straggler"] == {"host": "host-a", "device": "/device:TPU:1"}


def test_hosts_run_in_parallel_only_where_it_pays_and_memory_allows():
    from ray_tpu_profile.analysis.device_analysis import PARALLEL_FROM_BYTES, parallel_hosts

    gb = 1 << 30
    assert parallel_hosts([1 << 20] * 8, cpus=16, available_bytes=64 * gb) == 1  # small: not worth a process
    assert parallel_hosts([PARALLEL_FROM_BYTES], cpus=16, available_bytes=64 * gb) == 1  # one host
    assert parallel_hosts([gb] * 64, cpus=16, available_bytes=256 * gb) == 16  # CPUs
    assert parallel_hosts([gb] * 4, cpus=16, available_bytes=256 * gb) == 4  # hosts
    assert parallel_hosts([gb] * 64, cpus=16, available_bytes=40 * gb) == 3  # memory: 12 GB a host
    assert parallel_hosts([gb] * 64, cpus=16, available_bytes=2 * gb) == 1  # never none


def test_xla_work_counts_devices_ops_per_module_and_collectives_and_nothing_in_python_only_traces(tmp_path):
    from ray_tpu_profile.analysis.device_traces import xla_work
    from ray_tpu_profile.analysis.xspace import EventSpec, LineSpec, PlaneSpec, write_xspace

    def op(name, start_ms, ordinal, module="jit_run_model_impl"):
        stats = {"hlo_op": name, "hlo_module": module, "program_id": 5, "device_ordinal": ordinal}
        return EventSpec(name, round(start_ms * MS) * 1000, MS * 1000, stats=stats)

    python = [EventSpec("$model_runner.py:10 execute_model", 0, 5 * MS * 1000)]
    thunks = [op("dot.1", 0, 0), op("all-reduce.2", 1, 0), op("dot.1", 0, 1), op("all-reduce.2", 1.2, 1)]
    thunks.append(op("argmax.3", 3, 0, module="jit_sample"))
    xla = write_xspace(
        tmp_path / "xla.xplane.pb",
        [PlaneSpec("/host:CPU", [LineSpec("python", 10, python), LineSpec("XLA thunks", 10, thunks)])],
    )
    work = xla_work(xla)
    assert (work.devices, work.ops_by_module, work.collectives) == (2, {"jit_run_model_impl": 4, "jit_sample": 1}, 2)
    only_python = write_xspace(tmp_path / "py.xplane.pb", [PlaneSpec("/host:CPU", [LineSpec("python", 10, python)])])
    assert xla_work(only_python).to_json() == {"devices": 0, "ops_by_module": {}, "collectives": 0}


def test_a_cpu_clusters_collectives_match_across_processes_by_module_not_by_their_own_program_ids(tmp_path):
    """Each process of a JAX CPU cluster numbers its programs itself (121 on one host is 120
    on the next): its collectives are matched by the module that names them."""
    from ray_tpu_profile.analysis.collectives import Participant, match_occurrences
    from ray_tpu_profile.analysis.xspace import EventSpec, LineSpec, PlaneSpec, write_xspace

    def host_trace(name, program_id, ordinals, arrive_ms):
        ops = [
            EventSpec(
                "all-reduce.2",
                round(arrive_ms * MS) * 1000,
                MS * 1000,
                stats={
                    "hlo_op": "all-reduce.2",
                    "hlo_module": "jit_run_model_impl",
                    "program_id": program_id,
                    "device_ordinal": o,
                },
            )
            for o in ordinals
        ]
        path = write_xspace(tmp_path / f"{name}.xplane.pb", [PlaneSpec("/host:CPU", [LineSpec("XLA thunks", 0, ops)])])
        return {Participant(name, t.device): collective_ops(t) for t in read_device_traces(path)}

    ops = {**host_trace("h0", 121, (0, 1), 1.0), **host_trace("h1", 120, (2048, 2049), 3.0)}
    assert {calls[0].program for calls in ops.values()} == {"jit_run_model_impl"}
    (occurrence,) = match_occurrences(ops)
    assert occurrence.last.participant.host == "h1" and len(occurrence.arrivals) == 4
