"""report.json's `devices`, `collectives` and `stragglers` for a run: what each chip did in
its host's capture window (devices.py), and, per engine, every collective matched across
its chips on the driver's clock, with who the others waited for (collectives.py). Reads
each host's xplane's device planes (device_traces.py); a run without device planes (torch
traces, or jax on CPU without XLA's HLO events) has none of them.

An engine's participants are the devices of its hosts (manifest `engines`; a run without
engines: each host is its own). Each host's times go onto the driver's clock by its last
measured clock offset (manifest hosts[].clock), and the bound on a difference of two
hosts' times is the sum of their uncertainties.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ray_tpu_profile.analysis.collectives import Occurrence, Participant, match_occurrences, stragglers
from ray_tpu_profile.analysis.device_traces import DeviceTrace, collective_ops, read_device_traces
from ray_tpu_profile.analysis.devices import MODULES_LINE, device_summary
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

COLLECTIVES_KEPT = 1000
"""Occurrences written to report.json, longest wait first (all are counted in stragglers)."""
NS_PER_MS = 1_000_000


def analyse_devices(run_dir: Path, manifest: Manifest, top: int = 10) -> dict[str, Any]:
    """{"devices": [...], "collectives": [...], "collectives_total": n, "stragglers": [...],
    "unreadable": [...]} for the run directory's xplanes."""
    traces: dict[str, list[DeviceTrace]] = {}
    devices, unreadable = [], []
    for host in manifest["hosts"]:
        for f in host["files"]:
            if not f["path"].endswith(".xplane.pb"):
                continue
            try:
                found = read_device_traces(Path(run_dir) / f["path"])
            except (ValueError, OSError) as e:
                unreadable.append(f"{f['path']}: {type(e).__name__}: {e}")
                continue
            traces.setdefault(host["name"], []).extend(found)
            window = _window(host, found)
            devices += [device_summary(host["name"], t.device, t.kind, t.events, window, t.stats, top) for t in found]
    occurrences, straggling = [], []
    for engine, hosts in _engines(manifest).items():
        found_occurrences = _engine_occurrences(hosts, traces, manifest)
        if not found_occurrences:
            continue
        for o in found_occurrences:
            occurrences.append((engine, o))
        steps = _steps(hosts, traces, manifest)
        straggling.append(stragglers(engine, found_occurrences, steps).to_json())
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


def _window(host: HostEntry, traces: list[DeviceTrace]) -> tuple[int, int]:
    """The host's capture window (host clock), else the span of its device events."""
    capture = host.get("capture") or {}
    if capture.get("start_ns") is not None and capture.get("stop_ns") is not None:
        return int(capture["start_ns"]), int(capture["stop_ns"])
    starts = [e.start_ns for t in traces for e in t.events]
    ends = [e.start_ns + e.duration_ns for t in traces for e in t.events]
    return (min(starts), max(ends)) if starts else (0, 0)


def _engines(manifest: Manifest) -> dict[str, list[str]]:
    engines = {e["name"]: list(e["hosts"]) for e in manifest.get("engines") or []}
    placed = {h for hosts in engines.values() for h in hosts}
    for host in manifest["hosts"]:
        if host["name"] not in placed:
            engines[host.get("engine") or host["name"]] = [host["name"]]
    return engines


def _clocks(manifest: Manifest) -> tuple[dict[str, Any], dict[str, int]]:
    """host -> its clock onto the driver's, and host -> its offset's uncertainty (ns)."""
    shift, uncertainty = {}, {}
    for host in manifest["hosts"]:
        clock = host.get("clock")
        if clock and clock.get("offset_ms") is not None:
            offset_ns = round(clock["offset_ms"] * NS_PER_MS)
            shift[host["name"]] = lambda t, o=offset_ns: t - o
            uncertainty[host["name"]] = round(clock["uncertainty_ms"] * NS_PER_MS)
    return shift, uncertainty


def _engine_occurrences(hosts: list[str], traces: dict[str, list[DeviceTrace]], manifest: Manifest) -> list[Occurrence]:
    ops = {Participant(h, t.device): collective_ops(t) for h in hosts for t in traces.get(h, [])}
    ops = {p: calls for p, calls in ops.items() if calls}
    if len(ops) < 2:
        return []
    shift, uncertainty = _clocks(manifest)
    return match_occurrences(ops, shift, uncertainty)


def _steps(hosts: list[str], traces: dict[str, list[DeviceTrace]], manifest: Manifest) -> list[tuple[int, int]]:
    """The engine's steps on the driver's clock: the executions of the most frequent XLA
    module on its first device (one jitted step per execution)."""
    first = next((t for h in hosts for t in traces.get(h, [])), None)
    if first is None:
        return []
    modules = [e for e in first.events if e.line == MODULES_LINE]
    if not modules:
        return []
    step_module, _ = Counter(e.name for e in modules).most_common(1)[0]
    host = next(h for h in hosts if first in traces.get(h, []))
    shift = _clocks(manifest)[0].get(host, lambda t: t)
    return [(shift(e.start_ns), shift(e.start_ns + e.duration_ns)) for e in modules if e.name == step_module]


def _add_waits(devices: list[dict[str, Any]], occurrences: list[Occurrence]) -> None:
    """Each device's total wait for the others at collectives (ms), beside its busy time."""
    waited: Counter[tuple[str, str]] = Counter()
    for o in occurrences:
        for a in o.arrivals:
            waited[(a.participant.host, a.participant.device)] += a.wait_ns
    for d in devices:
        d["collective_wait_ms"] = waited[(d["host"], d["device"])] / NS_PER_MS
