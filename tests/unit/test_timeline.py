"""The merged timeline: downsampling rule, alignment on wall clock, and reading real torch
and JAX captures made here (no cluster)."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest

from ray_tpu_profile.analysis.timeline import (
    TOOL_TRACK,
    Event,
    build_timeline,
    keep_longest,
    tool_events,
    write_timeline,
)
from ray_tpu_profile.analysis.traces import torch_trace_events, xplane_events


def test_keep_longest_keeps_the_longest_in_time_order():
    events = [("t", f"e{i}", 1000 * i, d) for i, d in enumerate([5, 1, 9, 3, 9, 7])]
    kept = keep_longest(iter(events), 3)
    assert kept.total == 6
    # Durations 9, 9, 7 survive; in start order.
    assert [e.name for e in kept.events] == ["e2", "e4", "e5"]
    assert kept.shortest_kept_ns == 7
    assert all(isinstance(e, Event) for e in kept.events)


def test_keep_longest_ties_keep_the_earlier_event():
    events = [("t", f"e{i}", 1000 * i, 4) for i in range(5)]
    assert [e.name for e in keep_longest(events, 2).events] == ["e0", "e1"]


def test_keep_longest_under_the_cap_keeps_everything():
    kept = keep_longest([("t", "a", 5, 1), ("t", "b", 1, 2)], 10)
    assert [e.name for e in kept.events] == ["b", "a"] and kept.total == 2
    assert keep_longest([], 10).shortest_kept_ns is None


def _host(name, start_ns):
    """A manifest host entry with one shape whose capture began at start_ns."""
    return {
        "name": name,
        "status": "ok",
        "files": [],
        "shapes": {
            "1x8x8": {
                "phases": {"warmup": None, "profiled": None},
                "capture": {"start_ns": start_ns, "stop_ns": start_ns + 2_000_000},
            }
        },
    }


def test_timeline_one_process_per_host_aligned_on_wall_clock():
    t0 = 1_800_000_000_000_000_000
    manifest = {
        "run_id": "r",
        "capture": {"start_skew_ms": 0.25},
        "workload": {"shape": "1x8x8"},
        "hosts": [_host("a", t0), _host("b", t0 + 250_000)],
    }
    events = {
        "a": (tool_events(manifest["hosts"][0]), keep_longest([("cpu", "step", t0 + 1000, 500)], 10)),
        "b": (tool_events(manifest["hosts"][1]), keep_longest([("cpu", "step", t0 + 251_000, 500)], 10)),
    }
    trace = build_timeline(manifest, events, 10)
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert names == {1: "a", 2: "b"}
    capture = {
        names[e["pid"]]: e["ts"] for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "capture 1x8x8"
    }
    assert capture == {"a": 0.0, "b": 250.0}  # microseconds: exactly the skew
    steps = {names[e["pid"]]: (e["ts"], e["dur"], e["tid"]) for e in trace["traceEvents"] if e["name"] == "step"}
    assert steps == {"a": (1.0, 0.5, 1), "b": (251.0, 0.5, 1)}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert threads == {(1, 0): TOOL_TRACK, (1, 1): "cpu", (2, 0): TOOL_TRACK, (2, 1): "cpu"}
    meta = trace["otherData"]
    assert meta["origin_ns"] == t0 and meta["capture_start_skew_ms_by_shape"] == {"1x8x8": 0.25}
    assert "longest" in meta["downsampling"]["rule"] and meta["downsampling"]["hosts"]["a"]["kept"] == 1


def test_timeline_puts_each_host_on_the_drivers_clock():
    """Host b's clock reads 20 ms ahead of the driver's: its events move back by its
    measured offset, and the shift is stated."""
    t0 = 1_800_000_000_000_000_000
    a, b = _host("a", t0), _host("b", t0 + 20_000_000 + 300_000)
    a["clock"], b["clock"] = {"offset_ms": 0.0}, {"offset_ms": 20.0}
    manifest = {"run_id": "r", "capture": {"start_skew_ms": 0.3}, "workload": {"shape": "1x8x8"}, "hosts": [a, b]}
    events = {
        "a": (tool_events(a), keep_longest([("cpu", "step", t0 + 1000, 500)], 10)),
        "b": (tool_events(b), keep_longest([("cpu", "step", t0 + 20_301_000, 500)], 10)),
    }
    trace = build_timeline(manifest, events, 10)
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    capture = {
        names[e["pid"]]: e["ts"] for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "capture 1x8x8"
    }
    steps = {names[e["pid"]]: e["ts"] for e in trace["traceEvents"] if e["name"] == "step"}
    assert capture == {"a": 0.0, "b": 300.0} and steps == {"a": 1.0, "b": 301.0}  # the skew, not the clocks' 20 ms
    assert trace["otherData"]["clock_shift_ms"] == {"a": 0.0, "b": 20.0}
    assert "driver's wall clock" in trace["otherData"]["clock"]


def test_tool_events_are_the_iterations_per_shape():
    phase = {"iteration_starts_s": [10.0, 10.5], "latencies_s": [0.25, 0.5]}
    host = _host("a", 10_000_000_000)
    host["shapes"] = {
        "1x8x8": {
            "phases": {"warmup": phase, "profiled": None},
            "capture": {"start_ns": 11_000_000_000, "stop_ns": 11_100_000_000},
        },
        "2x8x8": {"phases": {"warmup": None, "profiled": None}, "capture": None},
    }
    events = tool_events(host)
    assert events == [
        Event(TOOL_TRACK, "warmup 0 1x8x8", 10_000_000_000, 250_000_000),
        Event(TOOL_TRACK, "warmup 1 1x8x8", 10_500_000_000, 500_000_000),
        Event(TOOL_TRACK, "capture 1x8x8", 11_000_000_000, 100_000_000),
    ]


def test_torch_trace_events_are_at_wall_clock_time(tmp_path):
    """A real torch profiler trace: Kineto's `ts` plus baseTimeNanoseconds is wall clock."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    before_ns = time.time_ns()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.ones(64, 64) @ torch.ones(64, 64)
    after_ns = time.time_ns()
    path = tmp_path / "t.pt.trace.json"
    prof.export_chrome_trace(str(path))
    events = list(torch_trace_events(path))
    assert events and any("mm" in name for _, name, _, _ in events)
    # Kineto's clock and time.time() may differ by its own rounding: allow 50 ms.
    assert all(before_ns - 50_000_000 <= start <= after_ns + 50_000_000 for _, _, start, _ in events)


def test_xplane_events_are_at_wall_clock_time(tmp_path):
    """A real JAX capture read through xprof's trace converter."""
    import jax
    import jax.numpy as jnp

    from ray_tpu_profile.analysis.xplane import capture_start_ns

    f = jax.jit(lambda x: x @ x)
    f(jnp.ones((64, 64))).block_until_ready()
    before_ns = time.time_ns()
    with jax.profiler.trace(str(tmp_path)):
        f(jnp.ones((64, 64))).block_until_ready()
    after_ns = time.time_ns()
    (path,) = tmp_path.glob("plugins/profile/*/*.xplane.pb")
    events = list(xplane_events(path))
    assert len(events) > 0
    start = capture_start_ns(path)
    assert before_ns <= start <= after_ns
    assert all(start <= s <= after_ns for _, _, s, _ in events)


def _run_dir_with_a_torch_trace_and_a_broken_one(run_dir):
    """Host a delivered a real torch trace; failed host b a file that is no trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            torch.ones(32, 32) @ torch.ones(32, 32)
    (run_dir / "hosts" / "a").mkdir(parents=True)
    prof.export_chrome_trace(str(run_dir / "hosts" / "a" / "a.pt.trace.json"))
    (run_dir / "hosts" / "b").mkdir(parents=True)
    (run_dir / "hosts" / "b" / "b.pt.trace.json").write_text("{half a fil")
    latency_s = {"warmup": [0.1], "profiled": [0.2, 0.3]}
    ok = {
        **_host("a", time.time_ns()),
        "stage": "done",
        "error": None,
        "latency_s": {"load": 1.0, **latency_s},
        "files": [{"path": "hosts/a/a.pt.trace.json", "bytes": 1}],
    }
    failed = {
        **_host("b", time.time_ns()),
        "status": "failed",
        "stage": "verify",
        "error": "not a trace",
        "latency_s": {"load": 1.0, **latency_s},
        "files": [{"path": "hosts/b/b.pt.trace.json", "bytes": 1}],
    }
    for host in (ok, failed):
        host["shapes"]["1x8x8"]["latency_s"] = latency_s
    (run_dir / "manifest.json").write_text(
        json.dumps(
            {"run_id": "r", "status": "partial", "capture": {}, "workload": {"shape": "1x8x8"}, "hosts": [ok, failed]}
        )
    )


def test_write_timeline_reads_a_run_directory(tmp_path):
    """write_timeline on a run directory whose one host delivered a real torch trace; a
    failed host's file that is no trace is named, not fatal."""
    _run_dir_with_a_torch_trace_and_a_broken_one(tmp_path)
    path = write_timeline(tmp_path, max_events_per_host=5)
    trace = json.loads(gzip.decompress(path.read_bytes()))
    hosts = trace["otherData"]["downsampling"]["hosts"]
    assert hosts["a"]["kept"] == 5 and hosts["a"]["trace_events"] > 5
    assert {k: v for k, v in hosts["b"].items() if k != "unreadable"} == {
        "trace_events": 0,
        "kept": 0,
        "dropped": 0,
        "shortest_kept_us": None,
    }
    assert hosts["a"]["unreadable"] == [] and len(hosts["b"]["unreadable"]) == 1
    assert hosts["b"]["unreadable"][0].startswith("hosts/b/b.pt.trace.json: JSONDecodeError")
    pids = {e["pid"] for e in trace["traceEvents"]}
    assert pids == {1, 2}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("cap", [1, 3])
def test_cap_bounds_trace_events_per_host(cap):
    events = [("t", "x", i, i) for i in range(100)]
    assert len(keep_longest(events, cap).events) == cap


def test_xplane_events_are_not_capped_by_the_converter(tmp_path, monkeypatch):
    """xprof's converter keeps only the earliest N events when TSL's cap says so (1M by
    default); the reader lifts the cap: a cap of 10 in the environment changes nothing."""
    import jax
    import jax.numpy as jnp

    from ray_tpu_profile.analysis.xplane import TRACE_VIEWER_MAX_EVENTS_ENV, read_xplane

    f = jax.jit(lambda x: (x @ x).sum())
    with jax.profiler.trace(str(tmp_path)):
        for _ in range(30):
            f(jnp.ones((32, 32))).block_until_ready()
    (path,) = tmp_path.glob("plugins/profile/*/*.xplane.pb")
    monkeypatch.setenv(TRACE_VIEWER_MAX_EVENTS_ENV, "10")
    events = list(xplane_events(path))
    # Every event of the xplane (the converter adds a few derived ones of its own).
    assert len(events) >= read_xplane(path).events > 10
    assert os.environ[TRACE_VIEWER_MAX_EVENTS_ENV] == "10"  # restored after the call


def test_write_report_reads_each_trace_once_for_report_and_timeline(tmp_path, monkeypatch):
    """The end of a run writes report.json and the timeline from one read of each trace
    file (counted by wrapping the reader), with the same content as each on its own, where
    the hosts shipped no summaries of their own."""
    from ray_tpu_profile.analysis import traces
    from ray_tpu_profile.analysis.report import build_report, write_report

    _run_dir_with_a_torch_trace_and_a_broken_one(tmp_path)
    alone_report = build_report(tmp_path)
    alone_timeline = json.loads(gzip.decompress(write_timeline(tmp_path, max_events_per_host=5).read_bytes()))
    reads = []
    real_reader = traces.torch_trace_events

    def counting_reader(path):
        reads.append(Path(path).relative_to(tmp_path).as_posix())
        return real_reader(path)

    monkeypatch.setattr(traces, "torch_trace_events", counting_reader)
    notes = []
    report = write_report(tmp_path, 5, notes.append)
    assert json.loads((tmp_path / "report.json").read_text()) == report and (tmp_path / "report.png").stat().st_size
    assert sorted(reads) == ["hosts/a/a.pt.trace.json", "hosts/b/b.pt.trace.json"]
    assert report == alone_report
    assert report["hosts"][0]["top_operations"] and report["hosts"][1]["unreadable_traces"]
    timeline = json.loads(gzip.decompress((tmp_path / "timeline.json.gz").read_bytes()))
    assert timeline == alone_timeline
    # No host shipped a summary here: each was made from the traces, and the note says why.
    assert any(n.startswith("0 host(s) summarised their own traces, 2 summarised here") for n in notes), notes
    assert report["summarised_on"] == {"a": "its host shipped none", "b": "its host shipped none"}


def test_write_report_one_output_failing_costs_the_others_nothing(tmp_path):
    """The timeline cannot be written (its temporary path is taken by a directory): it
    is named in the error, and report.json, report.txt and report.png are still written."""
    from ray_tpu_profile.analysis.report import ReportError, write_report

    _run_dir_with_a_torch_trace_and_a_broken_one(tmp_path)
    (tmp_path / ".timeline.json.gz.tmp").mkdir()
    with pytest.raises(ReportError) as e:
        write_report(tmp_path, 5)
    assert str(e.value).startswith("timeline.json.gz: IsADirectoryError") and ";" not in str(e.value)
    assert {"report.json", "report.txt", "report.png"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "timeline.json.gz").exists()


def test_collective_waits_are_slices_linked_by_one_flow_ending_at_the_last_arrival():
    from ray_tpu_profile.analysis.timeline import collective_waits

    occurrence = {
        "engine": "engine0",
        "name": "all-reduce.3",
        "occurrence": 0,
        "last": {"host": "b", "device": "/device:TPU:0"},
        "participants": [
            {"host": "b", "device": "/device:TPU:0", "arrive_ns": 5_000, "start_ns": 5_000, "wait_ms": 0.0},
            {"host": "a", "device": "/device:TPU:0", "arrive_ns": 2_000, "start_ns": 5_000, "wait_ms": 0.003},
            {"host": "a", "device": "/device:TPU:1", "arrive_ns": 3_000, "start_ns": 5_000, "wait_ms": 0.002},
        ],
    }
    events = collective_waits([occurrence], {"a": 1, "b": 2}, origin_ns=1_000)
    slices = [(e["pid"], e["ts"], e["dur"]) for e in events if e["ph"] == "X"]
    assert slices == [(1, 1.0, 3.0), (1, 2.0, 2.0), (2, 4.0, 0.001)]  # us since the origin
    flow = [(e["ph"], e["pid"], e["ts"]) for e in events if e.get("cat") == "collective"]
    assert flow == [("s", 1, 1.0), ("t", 1, 2.0), ("f", 2, 4.0)]
    names = sorted(e["args"]["name"] for e in events if e["ph"] == "M")
    assert names == [
        "collective waits /device:TPU:0",
        "collective waits /device:TPU:0",
        "collective waits /device:TPU:1",
    ]
