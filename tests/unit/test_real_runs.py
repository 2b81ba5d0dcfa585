"""report, diff, timeline and plot on real run directories (tests/data: the embedded
default on 2 simulated hosts, one torch and one jax run, made by scripts/make-test-data.sh),
read here without a cluster; and the same run's xplanes with TPU device planes added, as a
TPU host's xplane holds them beside its host plane."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from ray_tpu_profile.analysis.diff import Run, diff_runs
from ray_tpu_profile.analysis.report import build_report, write_report
from ray_tpu_profile.rundir.layout import read_manifest
from support.cli import REPO, validated

DATA = REPO / "tests" / "data"
TORCH, JAX = DATA / "torch-2hosts", DATA / "jax-2hosts"


def copied(run: Path, tmp_path: Path) -> Path:
    """A writable copy (reports are written into the run directory)."""
    return Path(shutil.copytree(run, tmp_path / run.name))


def run_of(path: Path, label: str) -> Run:
    return Run(label, str(path), path, read_manifest(path))


@pytest.mark.parametrize("run", [TORCH, JAX], ids=["torch", "jax"])
def test_the_real_runs_are_what_the_manifest_schema_says(run):
    manifest = validated("manifest", json.loads((run / "manifest.json").read_text()))
    assert manifest["status"] == "ok" and [h["status"] for h in manifest["hosts"]] == ["ok", "ok"]
    for host in manifest["hosts"]:
        for f in host["files"]:
            assert (run / f["path"]).stat().st_size == f["bytes"]


@pytest.mark.parametrize("run", [TORCH, JAX], ids=["torch", "jax"])
def test_a_report_of_a_real_run_reads_every_host_s_trace(run):
    report = validated("report", json.loads(json.dumps(build_report(run))))
    assert [h["name"] for h in report["hosts"]] == ["local-sim-w0", "local-sim-w1"]
    for host in report["hosts"]:
        assert host["top_operations"] and not host["unreadable_traces"]
        assert host["kept_n"] == 8 and host["spread"] is not None
    assert report["devices"] == [] and report["stragglers"] == []  # no device planes on CPU


def test_write_report_writes_all_four_outputs_of_a_real_run(tmp_path):
    run_dir = copied(JAX, tmp_path)
    report = write_report(run_dir)
    assert sorted(p.name for p in run_dir.iterdir() if p.is_file()) == [
        "latency.json",
        "manifest.json",
        "report.json",
        "report.png",
        "report.txt",
        "timeline.json.gz",
    ]
    assert validated("report", json.loads((run_dir / "report.json").read_text())) == json.loads(json.dumps(report))
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    names = [e["args"]["name"] for e in timeline["traceEvents"] if e.get("name") == "process_name"]
    assert names == ["local-sim-w0", "local-sim-w1"]


def test_a_real_run_against_itself_is_within_noise_and_torch_against_jax_compares_latency_only():
    same = diff_runs(run_of(TORCH, "A"), run_of(TORCH, "B"))
    assert [r["verdict"] for r in same["latency"]] == ["within noise", "within noise"]
    assert all(r["a_n"] == r["b_n"] == 8 for r in same["latency"])
    assert all(h["counts"]["increased"] == h["counts"]["decreased"] == 0 for h in same["ops"]["hosts"].values())
    mixed = diff_runs(run_of(TORCH, "A"), run_of(JAX, "B"))
    assert not mixed["ops"]["compared"] and len(mixed["latency"]) == 2


def test_a_jax_run_with_tpu_device_planes_reports_devices_collectives_and_the_straggler(tmp_path):
    """The real jax run's xplanes, each with two TPU device planes appended (an XSpace's planes
    are a repeated field: appending a serialized XSpace adds its planes), stamped in the
    host's capture window by its own clock; local-sim-w1's chip 1 computes 3 ms longer."""
    from ray_tpu_profile.analysis.xspace import build_xspace
    from support.tpu_traces import Slow, tpu_planes

    run_dir = copied(JAX, tmp_path)
    manifest = read_manifest(run_dir)
    for i, host in enumerate(manifest["hosts"]):
        (xplane,) = [run_dir / f["path"] for f in host["files"] if f["path"].endswith(".xplane.pb")]
        origin_ns = host["capture"]["start_ns"]
        planes = tpu_planes(i, 2, 3, Slow("local-sim-w1", 1, 3.0), host["name"], 0, origin_ns=origin_ns)
        devices_only = [p for p in planes if p.name.startswith("/device:")]
        with open(xplane, "ab") as f:
            f.write(build_xspace(devices_only).SerializeToString())
    report = write_report(run_dir)
    assert [(d["host"], d["device"]) for d in report["devices"]] == [
        (h, f"/device:TPU:{c}") for h in ("local-sim-w0", "local-sim-w1") for c in (0, 1)
    ]
    # Each host is an engine of its own here (TP 1): collectives are matched within an engine.
    engine_of = {h["name"]: h["engine"] for h in manifest["hosts"]}
    stragglers = {s["engine"]: s for s in report["stragglers"]}
    assert stragglers[engine_of["local-sim-w1"]]["straggler"] == {"host": "local-sim-w1", "device": "/device:TPU:1"}
    assert stragglers[engine_of["local-sim-w0"]]["verdict"].endswith("no straggler")
    assert report["collectives_total"] == 6
    # The hosts' own operations are still the Python tracer's: device time is not mixed in.
    assert not any(
        o["name"].startswith(("fusion.", "all-reduce.")) for h in report["hosts"] for o in h["top_operations"]
    )
    text = (run_dir / "report.txt").read_text()
    assert "local-sim-w1 /device:TPU:1 arrived last at 3 of 3 collectives" in text
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    threads = {e["args"]["name"] for e in timeline["traceEvents"] if e.get("name") == "thread_name"}
    assert any("/device:TPU:1" in t for t in threads) and "collective waits /device:TPU:0" in threads
    # Each occurrence: a wait slice per chip, and one flow across them ending at the last to arrive.
    flows = [e for e in timeline["traceEvents"] if e.get("cat") == "collective"]
    assert len(flows) == 6 * 2 and sorted(e["ph"] for e in flows) == ["f"] * 6 + ["s"] * 6
