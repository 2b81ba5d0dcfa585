"""report.json's `devices`, `collectives` and `stragglers` for a run: what each chip did in
its host's capture window (devices.py), and, per engine, every collective matched across
its chips on the driver's clock, with who the others waited for (collectives.py). Reads
each host's xplane's device planes (device_traces.py); a run without device planes (torch
traces, or jax on CPU without XLA's HLO events) has none of them.

An engine's participants are the devices of its hosts (manifest `engines`; a run without
engines: each host is its own), or, where its devices ran no collective, its hosts'
traced processes (host_collectives.py). Each host's times go onto the driver's clock by its last
measured clock offset (manifest hosts[].clock), and the bound on a difference of two
hosts' times is the sum of their uncertainties.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ray_tpu_profile.analysis.collectives import CollectiveOp, Occurrence, Participant, match_occurrences, stragglers
from ray_tpu_profile.analysis.device_traces import collective_ops, iter_device_traces
from ray_tpu_profile.analysis.devices import MODULES_LINE, DeviceEvent, device_summary, step_module
from ray_tpu_profile.analysis.host_collectives import HostCollectives, host_collectives
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

T = TypeVar("T")
COLLECTIVES_KEPT = 1000
"""Occurrences written to report.json, longest wait first (all are counted in stragglers)."""
NS_PER_MS = 1_000_000


def analyse_devices(
    run_dir: Path,
    manifest: Manifest,
    top: int = 10,
    host_level: Mapping[str, HostCollectives] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """{"devices": [...], "collectives": [...], "collectives_total": n, "stragglers": [...],
    "unreadable": [...]} for the run directory's xplanes. Each device plane is summarised as
    it is read and let go: what is kept is its summary, its collective ops and, for a host's
    first device, its module executions (the engine's steps).

    An engine whose devices ran no collective (no device planes: torch traces, jax on CPU)
    is analysed at host level: each host's process is a participant (host_collectives.py).
    host_level: host -> its HostCollectives where the caller read the traces already; else
    they are read here, only if some engine needs them.

    Hosts' xplanes are analysed in parallel processes (workers; None: as many as pay, see
    parallel_hosts) where they are big enough for that to pay."""
    return merge_devices(run_dir, manifest, _each_host(run_dir, manifest, top, workers), host_level)


def merge_devices(
    run_dir: Path,
    manifest: Manifest,
    per_host: Iterable[HostDevices],
    host_level: Mapping[str, HostCollectives] | None = None,
) -> dict[str, Any]:
    """analyse_devices' result from each host's HostDevices, made where its traces are
    (host_summary.py) or read here: the cross-host part (collectives matched across each
    engine's participants on the driver's clock, stragglers, waits) reads no trace, except
    host-level collectives where host_level is None and some engine needs them."""
    devices, unreadable = [], []
    ops: dict[Participant, list[CollectiveOp]] = {}
    executions: dict[str, list[DeviceEvent]] = {}
    for host in per_host:
        devices += host.devices
        unreadable += host.unreadable
        ops.update({Participant(host.name, device): calls for device, calls in host.ops.items()})
        executions[host.name] = host.executions
    occurrences, straggling = [], []
    shift, uncertainty = _clocks(manifest)
    for engine, hosts in _engines(manifest).items():
        mine = {p: calls for p, calls in ops.items() if p.host in hosts and calls}
        steps: list[tuple[int, int]] = []
        if len(mine) > 1:
            first_host = next((h for h in hosts if executions.get(h)), None)
            steps = _steps(executions.get(first_host, []), shift.get(first_host)) if first_host else []
        elif len(hosts) > 1 or host_level is not None:
            # No device collectives: the hosts' processes take part (an engine on one host
            # too, where the caller has them at hand: its ranks' trace files, one each).
            if host_level is None:
                # A file that cannot be read is already named in its host's report entry.
                host_level = read_host_collectives(run_dir, manifest, unreadable=[])
            mine, steps = _host_level(hosts, host_level, shift)
        found = match_occurrences(mine, shift, uncertainty) if len(mine) > 1 else []
        if not found:
            continue
        occurrences += [(engine, o) for o in found]
        straggling.append(stragglers(engine, found, steps).to_json())
    _add_waits(devices, [o for _, o in occurrences])
    kept = sorted(occurrences, key=lambda eo: -eo[1].max_wait_ns)[:COLLECTIVES_KEPT]
    kept.sort(key=lambda eo: min(a.start_ns for a in eo[1].arrivals))
    return {
        "devices": devices,
        "collectives": [{"engine": engine, **o.to_json()} for engine, o in kept],
        "collectives_total": len(occurrences),
        "stragglers": straggling,
        "unreadable": unreadable,
    }


@dataclass
class HostDevices:
    """What one host's xplanes give the analysis: its devices' summaries, each device's
    collective ops, its first device's module executions (the engine's steps), and files
    that could not be read. Picklable: made in a worker process where hosts run in parallel."""

    name: str
    devices: list[dict[str, Any]] = field(default_factory=list)
    ops: dict[str, list[CollectiveOp]] = field(default_factory=dict)
    executions: list[DeviceEvent] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def host_devices(run_dir: Path, host: HostEntry, top: int) -> HostDevices:
    """One host's HostDevices from its xplanes in a run directory."""
    files = {f["path"]: Path(run_dir) / f["path"] for f in host["files"] if f["path"].endswith(".xplane.pb")}
    return devices_of_files(host["name"], files, top)


def devices_of_files(host_name: str, files: Mapping[str, Path], top: int) -> HostDevices:
    """A host's HostDevices from its xplanes (name in the run directory -> where it is
    now), each device plane summarised as it is read and let go, within its own capture
    window (host clock: the xplane's, which is where the manifest's comes from, and in a
    sweep each shape's xplane has its own)."""
    from ray_tpu_profile.analysis.xplane import capture_times_ns

    found = HostDevices(host_name)
    for name, path in files.items():
        if not name.endswith(".xplane.pb"):
            continue
        try:
            window = capture_times_ns(path)
            for trace in iter_device_traces(path):
                found.devices.append(
                    device_summary(host_name, trace.device, trace.kind, trace.events(), window, trace.stats, top)
                )
                if calls := collective_ops(trace):
                    found.ops[trace.device] = calls
                if not found.executions:  # the host's first device that ran modules
                    found.executions = list(trace.events(lambda line: line == MODULES_LINE))
        except (ValueError, OSError) as e:
            found.unreadable.append(f"{name}: {type(e).__name__}: {e}")
    return found


PARALLEL_FROM_BYTES = 64 << 20
"""Below this many bytes of xplanes in all, hosts are analysed in this process: starting
worker processes (each imports the analysis, ~1 s) would cost more than it saves."""
MEMORY_PER_XPLANE_BYTE = 12
"""What analysing an xplane may hold at its peak, per byte of the file (bench/RESULTS.md
`devices`: 2.5 GB for one 232 MB plane, ~11x): how many hosts at once fit."""


def parallel_hosts(xplane_bytes: list[int], cpus: int, available_bytes: int) -> int:
    """How many hosts to analyse at once: 1 below PARALLEL_FROM_BYTES, else as many as there
    are CPUs, hosts, and memory for the largest xplanes side by side."""
    if sum(xplane_bytes) < PARALLEL_FROM_BYTES or len(xplane_bytes) < 2:
        return 1
    per_host = MEMORY_PER_XPLANE_BYTE * max(xplane_bytes)
    return max(1, min(cpus, len(xplane_bytes), available_bytes // max(per_host, 1)))


def _each_host(run_dir: Path, manifest: Manifest, top: int, workers: int | None) -> Iterator[HostDevices]:
    """Every host's HostDevices, in manifest order: in worker processes where that pays."""
    hosts = [h for h in manifest["hosts"] if any(f["path"].endswith(".xplane.pb") for f in h["files"])]
    sizes = [sum(f["bytes"] for f in h["files"] if f["path"].endswith(".xplane.pb")) for h in hosts]
    yield from per_host(host_devices, [(run_dir, h, top) for h in hosts], sizes, workers)


def per_host(work: Callable[..., T], calls: list[tuple], sizes: list[int], workers: int | None) -> Iterator[T]:
    """work(*call) for each call (one per host), in order: in worker processes where the
    hosts' files (sizes, bytes) are big enough for that to pay (workers: how many; None:
    parallel_hosts decides). work must be a module-level function (it is pickled)."""
    import os

    if workers is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        workers = parallel_hosts(sizes, os.cpu_count() or 1, available)
    if workers <= 1 or len(calls) < 2:
        yield from (work(*call) for call in calls)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may be the Ray driver, whose threads a fork would copy mid-state.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(work, *zip(*calls))


def read_host_collectives(run_dir: Path, manifest: Manifest, unreadable: list[str]) -> dict[str, HostCollectives]:
    """Every host's HostCollectives, its traces read one host at a time (files that cannot
    be read go into unreadable)."""
    from ray_tpu_profile.analysis.traces import host_trace_files

    found = {}
    for host in manifest["hosts"]:
        found[host["name"]] = host_collectives(dict(host_trace_files(run_dir, host, unreadable)))
    return found


def _engines(manifest: Manifest) -> dict[str, list[str]]:
    engines = {e["name"]: list(e["hosts"]) for e in manifest.get("engines") or []}
    placed = {h for hosts in engines.values() for h in hosts}
    for host in manifest["hosts"]:
        if host["name"] not in placed:
            engines[host.get("engine") or host["name"]] = [host["name"]]
    return engines


def _clocks(manifest: Manifest) -> tuple[dict[str, Callable[[int], int]], dict[str, int]]:
    """host -> its clock onto the driver's (ClockOffset.to_driver_ns), and host -> its
    offset's uncertainty (ns), for the hosts whose offset was measured."""
    from ray_tpu_profile.core.clocks import ClockOffset

    shift: dict[str, Callable[[int], int]] = {}
    uncertainty: dict[str, int] = {}
    for host in manifest["hosts"]:
        clock = host.get("clock")
        if clock and clock.get("offset_ms") is not None:
            offset = ClockOffset(
                round(clock["offset_ms"] * NS_PER_MS), round(clock["uncertainty_ms"] * NS_PER_MS), 0, ()
            )
            shift[host["name"]], uncertainty[host["name"]] = offset.to_driver_ns, offset.uncertainty_ns
    return shift, uncertainty


def _steps(executions: list[DeviceEvent], to_driver: Callable[[int], int] | None) -> list[tuple[int, int]]:
    """An engine's steps on the driver's clock: the executions of its first device's step
    module (devices.step_module)."""
    if not executions:
        return []
    step = step_module(executions)
    windows = [(e.start_ns, e.start_ns + e.duration_ns) for e in executions if e.name == step]
    return _on_driver(windows, to_driver)


def _host_level(
    hosts: list[str], host_level: Mapping[str, HostCollectives], shift: Mapping[str, Callable[[int], int]]
) -> tuple[dict[Participant, list[CollectiveOp]], list[tuple[int, int]]]:
    """An engine's host-level participants, and its steps (its first host's with any) on
    the driver's clock."""
    of_hosts = {h: host_level.get(h, HostCollectives()) for h in hosts}
    mine = {Participant(h, label): calls for h, c in of_hosts.items() for label, calls in c.ops.items()}
    first_host = next((h for h, c in of_hosts.items() if c.steps_ns), None)
    steps = _on_driver(of_hosts[first_host].steps_ns, shift.get(first_host)) if first_host else []
    return mine, steps


def _on_driver(windows: list[tuple[int, int]], to_driver: Callable[[int], int] | None) -> list[tuple[int, int]]:
    move = to_driver or (lambda t: t)
    return [(move(start), move(end)) for start, end in windows]


def _add_waits(devices: list[dict[str, Any]], occurrences: list[Occurrence]) -> None:
    """Each device's total wait for the others at collectives (ms), beside its busy time."""
    waited: Counter[tuple[str, str]] = Counter()
    for o in occurrences:
        for a in o.arrivals:
            waited[(a.participant.host, a.participant.device)] += a.wait_ns
    for d in devices:
        d["collective_wait_ms"] = waited[(d["host"], d["device"])] / NS_PER_MS
