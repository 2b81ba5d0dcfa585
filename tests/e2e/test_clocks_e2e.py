"""Clock correction end to end, on a real cluster whose second simulated host sees time
40 ms ahead.

Simulated hosts share this machine's one clock, so a host with its own clock cannot be
made for real. The test-only hook: RAY_TPU_PROFILE_SIMULATED_CLOCK_SHIFT_MS on that
host's raylet (host_clock.py; a real host ignores it) shifts what the tool's host code
reads as the time: the driver's clock exchange and the waits for scheduled instants.
The profilers still stamp the xplanes with the real clock, so the xplanes show where
each trace really began: that is what is checked here."""

from __future__ import annotations

import pytest

from support.cli import TINY_WORKLOAD, load_manifest, run_ok
from support.cluster import module_cluster, wait_until_released

SHIFT_MS = 40.0
WORKLOAD = ["--profiler", "jax", "--duration-ms", "300", *TINY_WORKLOAD, "--num-iters-warmup", "2"]


@pytest.fixture(scope="module")
def shifted_cluster(tmp_path_factory):
    """Head (no TPU) + 2 simulated TPU hosts; local-sim-w1's view of time is SHIFT_MS ahead."""
    from ray_tpu_profile.core.host_clock import SIMULATED_CLOCK_SHIFT_ENV
    from ray_tpu_profile.placement.cluster import simulated_host_node_args

    shift = lambda i: {SIMULATED_CLOCK_SHIFT_ENV: str(SHIFT_MS)} if i == 1 else {}  # noqa: E731
    with module_cluster(tmp_path_factory, simulated_host_node_args(2), "shifted-host", shift) as cluster:
        yield cluster


def run_on(cluster, out, *flags):
    proc, run_dir = run_ok(cluster.address, out, *WORKLOAD, *flags)
    manifest = load_manifest(run_dir)
    starts = {h["name"]: h["capture"]["start_ns"] for h in manifest["hosts"]}  # from the xplanes: the real clock
    return proc, manifest, starts


def test_with_correction_the_shifted_host_starts_with_the_other(shifted_cluster, tmp_path):
    proc, manifest, starts = run_on(shifted_cluster, tmp_path)
    w0, w1 = manifest["hosts"]
    assert abs(w0["clock"]["offset_ms"]) <= w0["clock"]["uncertainty_ms"]
    assert abs(w1["clock"]["offset_ms"] - SHIFT_MS) <= w1["clock"]["uncertainty_ms"]  # measured, not told
    # Over each host's clock echo (UDP on the node's address), not actor calls: 48 round
    # trips each, the offset bounded by every one of them.
    assert [h["clock"]["channel"] for h in manifest["hosts"]] == ["udp", "udp"]
    assert all(len(h["clock"]["round_trips_ms"]) == 48 for h in manifest["hosts"])
    capture = manifest["capture"]
    really_apart_ms = abs(starts["local-sim-w1"] - starts["local-sim-w0"]) / 1e6
    # What the correction can get wrong is the offset's error, bounded above (within its
    # uncertainty). What is left is each host waking up on time: 0.18 ms apart on a quiet
    # machine, but one host's trace started 4.4 ms late while CI loaded the 2 cores. So
    # the check is that the 40 ms are gone, not a sub-ms figure only a quiet machine gives.
    assert really_apart_ms < 10.0, (really_apart_ms, capture)
    assert capture["start_skew_raw_ms"] == pytest.approx(really_apart_ms)
    assert "clock uncertainty" in proc.stdout and "on the hosts' own clocks" in proc.stdout
    assert wait_until_released() == ([], [])


def test_without_correction_the_shifted_host_starts_early_by_the_shift(shifted_cluster, tmp_path):
    proc, manifest, starts = run_on(shifted_cluster, tmp_path, "--no-clock-correction")
    w1 = manifest["hosts"][1]
    assert abs(w1["clock"]["offset_ms"] - SHIFT_MS) <= w1["clock"]["uncertainty_ms"]  # measured all the same
    # Its clock reads the instant SHIFT_MS before the other's does: it really began that much
    # earlier. Some ms more at most: the other host's trace then starts while the shifted one
    # is already iterating on the same 2 cores, and wakes up late (seen: 1.9 ms).
    early_ms = (starts["local-sim-w0"] - starts["local-sim-w1"]) / 1e6
    assert SHIFT_MS - 1.0 < early_ms < SHIFT_MS + 5.0, early_ms
    assert manifest["command"][-1] == "--no-clock-correction"
    assert wait_until_released() == ([], [])
