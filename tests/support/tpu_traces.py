"""TPU-like xplanes written for tests (there is no TPU here): hosts of 4-chip-like planes
`/device:TPU:N` with `XLA Modules`, `XLA Ops` and `XLA TraceMe` lines, one jitted step per
module execution, a compute op then an all-reduce; one chosen chip computes longer, and
the others wait for it in `barrier-cores` as TPU chips do. Each host's events are stamped
by its own clock, which may read ahead of the driver's by a known offset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ray_tpu_profile.analysis.xspace import EventSpec, LineSpec, PlaneSpec, write_xspace

MS = 1_000_000
PS_PER_NS = 1000
ORIGIN_NS = 1_780_000_000_000_000_000
"""The driver's clock at the first step (epoch ns)."""
STEP_MS = 100.0
COMPUTE_MS = 10.0
ALL_REDUCE_MS = 0.5


@dataclass(frozen=True)
class Slow:
    """Which chip computes longer, and by how much."""

    host: str
    device: int
    extra_ms: float


def tpu_planes(
    host_index: int,
    chips: int,
    steps: int,
    slow: Slow | None,
    host: str,
    clock_ahead_ns: int,
    origin_ns: int = ORIGIN_NS,
) -> list[PlaneSpec]:
    """One host's device planes plus its Task Environment (capture times, its own clock);
    origin_ns: the driver's clock at the first step."""
    late_ms = max(slow.extra_ms, 0.0) if slow else 0.0
    planes = []
    for chip in range(chips):
        modules, ops, waits = [], [], []
        for step in range(steps):
            begin_ns = round(step * STEP_MS * MS)
            mine = late_ms if slow and (slow.host, slow.device) == (host, chip) else 0.0
            arrive_ns = begin_ns + round((COMPUTE_MS + mine) * MS)
            start_ns = begin_ns + round((COMPUTE_MS + late_ms) * MS) + 1_000 * host_index  # 1 us apart per host
            modules.append(
                EventSpec(
                    "jit_step(42)", begin_ns * PS_PER_NS, (start_ns + round(ALL_REDUCE_MS * MS) - begin_ns) * PS_PER_NS
                )
            )
            ops.append(
                EventSpec(
                    "fusion.1",
                    begin_ns * PS_PER_NS,
                    (arrive_ns - begin_ns) * PS_PER_NS,
                    metadata_stats={"program_id": 42, "symbol_id": 1, "hlo_category": "loop fusion", "flops": 2e9},
                )
            )
            # A copy nested in the fusion: its time is the copy's, not the fusion's (self time).
            ops.append(
                EventSpec(
                    "copy.2",
                    (begin_ns + MS) * PS_PER_NS,
                    MS * PS_PER_NS,
                    metadata_stats={"program_id": 42, "symbol_id": 3, "hlo_category": "copy"},
                )
            )
            ops.append(
                EventSpec(
                    "all-reduce.3",
                    start_ns * PS_PER_NS,
                    round(ALL_REDUCE_MS * MS) * PS_PER_NS,
                    # Ids that differ across chips for the same call, as real TPU traces have.
                    stats={"run_id": 1000 * chip + step, "all_reduce_unique_id": 7 + chip},
                    metadata_stats={"program_id": 42, "symbol_id": 2, "hlo_category": "all-reduce"},
                )
            )
            if start_ns > arrive_ns:
                waits.append(EventSpec("barrier-cores", arrive_ns * PS_PER_NS, (start_ns - arrive_ns) * PS_PER_NS))
        origin = origin_ns + clock_ahead_ns
        planes.append(
            PlaneSpec(
                f"/device:TPU:{chip}",
                [
                    LineSpec("XLA Modules", origin, modules),
                    LineSpec("XLA Ops", origin, ops),
                    LineSpec("XLA TraceMe", origin, waits),
                ],
                stats={"peak_teraflops_per_second": 918.0, "peak_hbm_bw_gigabytes_per_second": 1640.0},
            )
        )
    stop_ns = origin_ns + clock_ahead_ns + round(steps * STEP_MS * MS)
    planes.append(
        PlaneSpec(
            "Task Environment", stats={"profile_start_time": origin_ns + clock_ahead_ns, "profile_stop_time": stop_ns}
        )
    )
    return planes


SHAPE = "4x16x8"
LATENCY_S = {"warmup": [0.5, 0.101, 0.099, 0.1, 0.102], "profiled": [0.1]}


def tpu_run_dir(
    root: Path,
    hosts: tuple[str, ...] = ("host-a", "host-b"),
    chips: int = 2,
    steps: int = 3,
    slow: Slow | None = None,
    clock_ahead_ns: dict[str, int] | None = None,
    clock_known: bool = True,
    uncertainty_ns: int = 50_000,
) -> Path:
    """A run directory of one engine across `hosts`: their xplanes in one XProf session and a
    manifest whose hosts' clocks (when clock_known) hold the offsets the xplanes were
    stamped with. Only the manifest fields the analysis and `diff` read are filled (the
    same iteration latencies in every run: only the chips differ)."""
    ahead = clock_ahead_ns or {}
    manifest_hosts = []
    for i, host in enumerate(hosts):
        rel = f"plugins/profile/run1/{host}.xplane.pb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_xspace(root / rel, tpu_planes(i, chips, steps, slow, host, ahead.get(host, 0)))
        offset_ns = ahead.get(host, 0)
        manifest_hosts.append(
            {
                "name": host,
                "engine": "engine0",
                "status": "ok",
                "files": [{"path": rel, "bytes": (root / rel).stat().st_size, "sha256": "-"}],
                "capture": {
                    "start_ns": ORIGIN_NS + offset_ns,
                    "stop_ns": ORIGIN_NS + offset_ns + round(steps * STEP_MS * MS),
                },
                "clock": {"offset_ms": offset_ns / MS, "uncertainty_ms": uncertainty_ns / MS, "warning": None}
                if clock_known
                else None,
                "worker": None,
                "latency_s": LATENCY_S,
                "shapes": {SHAPE: {"latency_s": LATENCY_S}},
            }
        )
    manifest = {
        "run_id": root.name,
        "status": "ok",
        "workload": {"shape": SHAPE, "shapes": [SHAPE]},
        "capture": {"profiler": "jax", "start_skew_ms": 0.0},
        "engines": [{"name": "engine0", "hosts": list(hosts), "owner": hosts[0]}],
        "hosts": manifest_hosts,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def ship_summaries(run_dir: Path) -> None:
    """Each host's summary beside its traces, listed in the manifest, as `run` leaves them
    (made here from the run directory's traces, with report.json's top)."""
    from ray_tpu_profile.analysis.host_summary import SUMMARY, TOP_OPERATIONS, summarise_from_run_dir, write_summary
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST
    from ray_tpu_profile.rundir.layout import host_file_dest

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for host in manifest["hosts"]:
        dest = host_file_dest(host["name"], SUMMARY).as_posix()
        (run_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        summary = summarise_from_run_dir(run_dir, host, TOP_OPERATIONS, DEFAULT_MAX_EVENTS_PER_HOST)
        write_summary(run_dir / dest, summary)
        host["files"].append({"path": dest, "bytes": (run_dir / dest).stat().st_size, "sha256": "-"})
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
