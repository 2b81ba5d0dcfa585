"""`ray-tpu-profile attach`: trace a live vLLM deployment's registered processes
(plugin.py: each opened a capture socket) on every host at one instant, without restarting it, into a run directory
like `run`'s (mode "attach"): one XProf session, manifest, reports and timeline.

With --address, every node of the Ray cluster is asked (a pinned actor per node,
node_actor.AttachActor); without it, this host's registry is read and traced from this
process. The order: find -> warm up each process -> clocks -> one instant -> capture ->
gather -> verify -> manifest and reports.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_tpu_profile.attach.registry import RegistryEntry, matching
from ray_tpu_profile.config import AttachConfig
from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.core.records import HostRecord, HostStatus, RunStatus, ShapeRecord, Stage, run_status
from ray_tpu_profile.core.schedule import DEFAULT_LEAD_MS, NS_PER_MS
from ray_tpu_profile.driver.finish import derive_reports
from ray_tpu_profile.driver.progress import Progress
from ray_tpu_profile.driver.report_imports import ReportImports
from ray_tpu_profile.driver.signals import StopSignals
from ray_tpu_profile.errors import ConfigError, RunStopped
from ray_tpu_profile.rundir import layout

SHAPE = "live"
"""The one 'shape' of an attach run: whatever the deployment was serving."""
LOAD_CONTEXT_S = 1.0
"""/metrics is read this long before the window and after it, besides at its ends."""
CLEANUP_WAIT_S = 10.0
"""How long the nodes' actors get to remove their scratch before they are killed."""
HOW_TO_ENABLE = 'start vLLM with RAY_TPU_PROFILE_ATTACH=1 in its environment (README, "Profile a running server")'


@dataclass
class AttachTarget:
    """One host's AttachActor: a Ray actor, or an object in this process; call() returns
    a future either way."""

    name: str
    target: Any
    local_pool: ThreadPoolExecutor | None = None

    def call(self, method: str, *args: Any) -> Future:
        if self.local_pool is not None:
            return self.local_pool.submit(getattr(self.target, method), *args)
        return getattr(self.target, method).remote(*args).future()


class AttachSession:
    """The hosts to ask, opened and released (actors killed, Ray disconnected) as a block."""

    def __init__(self, address: str | None):
        self.address = address
        self.hosts: list[AttachTarget] = []
        self.kv_entries: list[dict[str, Any]] = []
        self.problems: list[str] = []
        """Registry entries skipped (malformed, untrusted), each with why: said, not fatal."""
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> AttachSession:
        if self.address is None:
            from ray_tpu_profile.attach.node_actor import AttachActor

            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="attach-local")
            self.hosts = [AttachTarget(socket.gethostname(), AttachActor(socket.gethostname()), self._pool)]
            return self
        import logging

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ray_tpu_profile.attach import registry
        from ray_tpu_profile.attach.node_actor import AttachActor
        from ray_tpu_profile.core.hosts import hosts_from_nodes

        ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        try:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            tpu_names = {h.node_id: h.name for h in hosts_from_nodes(nodes)}
            remote = ray.remote(AttachActor)
            for node in nodes:
                node_id = node["NodeID"]
                name = tpu_names.get(node_id) or f"node-{node_id[:8]}"
                actor = remote.options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                    name=f"ray-tpu-profile-attach-{os.getpid()}-{name}",
                ).remote(name, node_id)
                self.hosts.append(AttachTarget(name, actor))
            self.kv_entries = [e.to_json() for e in registry.kv_entries(self.problems)]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            # A stop mid-capture leaves the client waiting out its window: not waited for.
            self._pool.shutdown(wait=False, cancel_futures=True)
            for host in self.hosts:
                host.target.cleanup()
            return
        import ray

        # Each node's scratch goes with its actor (--list made one too); a host that does
        # not answer keeps its own, named in the error it already raised.
        cleaned = [host.target.cleanup.remote() for host in self.hosts]
        ray.wait(cleaned, num_returns=len(cleaned), timeout=CLEANUP_WAIT_S)
        for host in self.hosts:
            ray.kill(host.target)
        ray.shutdown()


def find_servers(session: AttachSession, timeout_s: float) -> dict[str, list[RegistryEntry]]:
    """Host name -> its live registered servers. Entries that could not be read (malformed,
    another user's directory) are skipped and added to session.problems."""
    futures = {h.name: h.call("servers", session.kv_entries) for h in session.hosts}
    found = {}
    for name, future in futures.items():
        answer = future.result(timeout=timeout_s)
        found[name] = [RegistryEntry.from_json(e) for e in answer["servers"]]
        session.problems += answer["problems"]
    return found


def chosen_servers(found: dict[str, list[RegistryEntry]], config: AttachConfig) -> dict[str, list[RegistryEntry]]:
    """The servers --name selects, by host; ConfigError when there are none."""
    where = f"in the Ray cluster at {config.address}" if config.address else "on this host"
    everything = [e for entries in found.values() for e in entries]
    if not everything:
        raise ConfigError(
            "--address",
            config.address or "(none: this host)",
            f"no vLLM process is registered for attach {where}; {HOW_TO_ENABLE}",
        )
    chosen = {host: matching(entries, config.name) for host, entries in found.items()}
    chosen = {host: entries for host, entries in chosen.items() if entries}
    if not chosen:
        names = sorted({e.name or "(unnamed)" for e in everything})
        raise ConfigError(
            "--name", config.name, f"matches no registered process {where}; names there: {', '.join(names)}"
        )
    return chosen


def listing(found: dict[str, list[RegistryEntry]], name: str | None) -> list[dict[str, Any]]:
    from ray_tpu_profile.attach.node_actor import trace_host_name

    return [
        {"host": host, "trace_name": trace_host_name(host, e), **e.to_json()}
        for host, entries in found.items()
        for e in matching(entries, name)
    ]


@dataclass
class Traced:
    """The processes being traced, by trace name, with what became of each."""

    entries: dict[str, tuple[str, RegistryEntry]]
    """Trace name -> (host, its registry entry)."""
    handles: dict[str, AttachTarget]
    progress: Progress
    records: dict[str, HostRecord] = field(default_factory=dict)
    """Trace name -> its record, as `run` keeps one per host: status, stage, error, files."""
    idle: set[str] = field(default_factory=set)
    """Processes that answered but ran nothing traced in the window: kept, not failed."""
    call_plans: dict[str, int] = field(default_factory=dict)
    start_wake_ups: dict[str, str | None] = field(default_factory=dict)
    """Trace name -> how its capture's starting thread woke (in_process.prompt_wake_up)."""
    stage: Stage = Stage.WARMUP
    offsets: dict[str, Any] = field(default_factory=dict)
    clock_channels: dict[str, str] = field(default_factory=dict)
    """How each host's offset was measured (clock_exchange: "udp", or "actor call (why)")."""
    starts: dict[str, dict[str, Any]] = field(default_factory=dict)
    load: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    report_imports: ReportImports | None = None
    """The reports' plotting import, started once the clocks are measured."""

    def __post_init__(self) -> None:
        self.records = {
            name: HostRecord(
                Host(name=name, node_id=entry.node_id or "", node_ip="", chips=0),  # the manifest says null
                status=HostStatus.OK,
                stage=Stage.DONE,
                pid=entry.pid,
                engine=entry.name,
                ranks=(entry.rank,) if entry.rank is not None else (),
            )
            for name, (_, entry) in self.entries.items()
        }
        self._mark = time.monotonic()

    def names_on(self, host: str) -> list[str]:
        """The processes on host still being traced (not failed, not idle)."""
        return [n for n, (h, _) in self.entries.items() if h == host and self.records[n].healthy and n not in self.idle]

    def fail(self, name: str, stage: Stage, error: str) -> None:
        if self.records[name].healthy:
            self.records[name].fail(stage, error)
            self.progress.host_failed(stage, name, error)

    def done(self, stage: Stage, next_stage: Stage) -> None:
        """stage is over (timed); next_stage begins."""
        now = time.monotonic()
        self.timings[stage], self._mark, self.stage = round(now - self._mark, 3), now, next_stage


def execute(config: AttachConfig, argv: list[str], progress: Progress) -> tuple[dict[str, Any], Path]:
    """Captures; returns the manifest and where the run directory is. ConfigError before
    anything is written when there is nothing to trace."""
    from ray_tpu_profile.attach.node_actor import trace_host_name

    started = time.monotonic()
    stopped = None
    with AttachSession(config.address) as session, StopSignals(at_once=True):
        found = find_servers(session, config.timeout_s)
        for problem in session.problems:
            progress.note(f"attach: registry entry skipped: {problem}")
        chosen = chosen_servers(found, config)
        run_id = layout.new_run_id()
        run_dir = layout.staging_dir(config.profile_result_dir, run_id)
        traced = Traced(
            {trace_host_name(host, e): (host, e) for host, es in chosen.items() for e in es},
            {h.name: h for h in session.hosts if h.name in chosen},
            progress,
        )
        traced.timings["find"] = round(time.monotonic() - started, 3)
        # From the run directory's first byte on, a stop (raised at once, between any two
        # statements) leaves a manifest saying so: made inside the try (CI: a Ctrl-C just
        # after the directory, during the progress line, left it half made with a traceback).
        try:
            _trace(config, traced, run_id, chosen, run_dir)
        except RunStopped as e:  # Ctrl-C, `ray job stop`: what was gathered and verified is kept
            stopped = f"stopped during {traced.stage} ({e.signal_name})"
            for name in traced.records:
                if name not in traced.starts and name not in traced.idle:
                    traced.fail(name, traced.stage, stopped)
    manifest = _manifest(config, argv, run_id, found, traced)
    if stopped:
        manifest.update(status=RunStatus.STOPPED, stage=traced.stage, error=stopped)
        run_dir.mkdir(parents=True, exist_ok=True)  # the stop may have come before it was made
    layout.write_json_atomic(run_dir / layout.MANIFEST, manifest)
    # In place before the reports (as run's): a kill while they are derived hides nothing.
    final = Path(config.profile_result_dir) / run_id
    os.replace(run_dir, final)
    reports_error, stop_signal = derive_reports(final, None, progress, "on the run directory", traced.report_imports)
    manifest["outputs"]["reports_error"] = reports_error
    if stop_signal:
        manifest.update(status=RunStatus.STOPPED, stage=Stage.REPORTS, error=f"stopped during reports ({stop_signal})")
    manifest["timings_s"]["total"] = round(time.monotonic() - started, 3)
    layout.write_json_atomic(final / layout.MANIFEST, manifest)
    return manifest, final


def _trace(
    config: AttachConfig, traced: Traced, run_id: str, chosen: dict[str, list[RegistryEntry]], run_dir: Path
) -> None:
    """The run directory, then every stage on each traced process; what each found is kept in traced."""
    run_dir.mkdir(parents=True)
    traced.progress.note(
        f"attach: {len(traced.entries)} process(es) on {len(traced.handles)} host(s): {', '.join(traced.entries)}"
    )
    _warm_up(config, traced, run_id, chosen)
    traced.offsets, traced.clock_channels = _clock_offsets(traced.handles) if config.address else ({}, {})
    traced.done(Stage.CLOCKS, Stage.CAPTURE)
    # The reports' slowest import while the driver waits for the window to end; after the
    # clock exchange, whose stamps the GIL it holds would delay.
    traced.report_imports = ReportImports().start()
    sampler = _capture(config, traced)
    traced.done(Stage.CAPTURE, Stage.GATHER)
    _gather(traced, run_dir, config)
    traced.done(Stage.GATHER, Stage.VERIFY)
    traced.starts = _verify(run_dir, traced)
    traced.done(Stage.VERIFY, Stage.DONE)
    traced.load = sampler.result(timeout_s=LOAD_CONTEXT_S + 30) if sampler else None


def _warm_up(config: AttachConfig, traced: Traced, session_id: str, chosen: dict[str, list[RegistryEntry]]) -> None:
    """A backend per registered process on its host, and a throwaway capture of each; a
    process that does not answer fails here."""
    prepared = _each_host(
        traced.handles,
        lambda h: h.call(
            "prepare",
            [e.to_json() for e in chosen[h.name]],
            session_id,
            config.duration_ms,
            config.python_tracer_level,
            config.real_time_start,
        ),
        config.timeout_s,
    )
    for host, result in prepared.items():
        for name in traced.names_on(host):
            error = result[name] if isinstance(result, dict) else f"host {host}: {result}"
            if error:
                traced.fail(name, Stage.WARMUP, error)
    traced.done(Stage.WARMUP, Stage.CLOCKS)


def _capture(config: AttachConfig, traced: Traced) -> Any:
    """Every live registered process traced from one instant (each host's in its own clock); returns
    the /metrics sampler when --server-url was given."""
    from ray_tpu_profile.profilers.time_window import NO_EVENTS

    instant_ns = time.time_ns() + (DEFAULT_LEAD_MS + config.delay_ms) * NS_PER_MS
    sampler = None
    if config.server_url:
        from ray_tpu_profile.analysis.server_load import LoadSampler

        instant_ns += round(LOAD_CONTEXT_S * 1e9)  # the "before" interval lies between now and the window
        start_s, end_s = instant_ns / 1e9, instant_ns / 1e9 + config.duration_ms / 1000
        sampler = LoadSampler(
            config.server_url, [start_s - LOAD_CONTEXT_S, start_s, end_s, end_s + LOAD_CONTEXT_S]
        ).start()
    ready = {host: traced.names_on(host) for host in traced.handles}
    offsets = traced.offsets
    captured = _each_host(
        traced.handles,
        lambda h: h.call(
            "capture", offsets[h.name].to_host_ns(instant_ns) if h.name in offsets else instant_ns, ready[h.name]
        ),
        (instant_ns - time.time_ns()) / 1e9 + config.duration_ms / 1000 + config.timeout_s,
    )
    for host, result in captured.items():
        for name in ready[host]:
            error = result[name]["error"] if isinstance(result, dict) else f"host {host}: {result}"
            if error and NO_EVENTS in error:
                # The process answered but ran nothing traced in the window (a frontend
                # between requests, an idle replica): kept as idle, not failed.
                traced.idle.add(name)
                traced.progress.note(f"  {name}: idle, no traced work in the window")
            elif error:
                traced.fail(name, Stage.CAPTURE, error)
            else:
                traced.call_plans[name] = result[name]["client_call_plans"]
                traced.start_wake_ups[name] = result[name]["start_wake_up"]
    return sampler


def _each_host(
    handles: dict[str, AttachTarget], call: Callable[[AttachTarget], Future], timeout_s: float
) -> dict[str, Any]:
    """call(host) on every host at once; host -> its result, or the exception that kept it."""
    futures = {name: call(h) for name, h in handles.items()}
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as e:  # that host's failure; the others deliver
            results[name] = e
    return results


def _clock_offsets(handles: dict[str, AttachTarget]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each host's clock offset (as `run` measures it: over its node actor's clock echo,
    else actor calls), and the channel each was measured on."""
    import secrets

    from ray_tpu_profile.driver import clock_exchange
    from ray_tpu_profile.driver.stages import driver_node_ip
    from ray_tpu_profile.host.clock_echo import TOKEN_BYTES

    token, driver_ip = secrets.token_bytes(TOKEN_BYTES), driver_node_ip()
    opened = _each_host(handles, lambda h: h.call("open_clock_echo", token, driver_ip), clock_exchange.CALL_TIMEOUT_S)
    echoes = {name: e["address"] for name, e in opened.items() if isinstance(e, dict) and e.get("address")}
    try:
        measured = clock_exchange.measure_with_fallback(
            {
                name: clock_exchange.udp_sampler(tuple(address), token, source_ip=driver_ip)
                for name, address in echoes.items()
            },
            {name: clock_exchange.actor_call_sampler(lambda h=h: h.call("now_ns")) for name, h in handles.items()},
        )
    finally:
        _each_host(
            {name: handles[name] for name in echoes},
            lambda h: h.call("close_clock_echo"),
            clock_exchange.CALL_TIMEOUT_S,
        )
    offsets = {name: found for name, (found, _) in measured.items() if not isinstance(found, BaseException)}
    return offsets, {name: channel for name, (_, channel) in measured.items()}


def _gather(traced: Traced, run_dir: Path, config: AttachConfig) -> None:
    """Each traced process's files into the run directory, verified: through Ray, host by
    host side by side (each host's processes one after another); locally, moved into place."""
    from ray_tpu_profile.core.files import move_file, sha256_file
    from ray_tpu_profile.driver.gather import gather_host

    handles, records = traced.handles, traced.records

    def one_host(host: str) -> None:
        handle = handles[host]
        for name in traced.names_on(host):
            try:
                if handle.local_pool is not None:
                    source = handle.target.base_dir / name
                    for path in sorted(p for p in source.rglob("*") if p.is_file()):
                        dest_rel = layout.host_file_dest(name, path.relative_to(source).as_posix())
                        (run_dir / dest_rel).parent.mkdir(parents=True, exist_ok=True)
                        # The scratch may be on another filesystem than the result dir.
                        move_file(path, run_dir / dest_rel)
                        records[name].files.append(
                            {
                                "path": dest_rel.as_posix(),
                                "bytes": (run_dir / dest_rel).stat().st_size,
                                "sha256": sha256_file(run_dir / dest_rel),
                            }
                        )
                else:
                    handle.call("select", name).result(timeout=config.timeout_s)
                    gather_host(handle.target, name, run_dir, config.timeout_s, gathered=records[name].files)
            except Exception as e:  # that process's failure; what it delivered stays listed
                traced.fail(name, Stage.GATHER, f"{type(e).__name__}: {e}")
                continue
            if handle.local_pool is None:
                _summarise(handle, name, run_dir, config.timeout_s, records[name], traced.progress)

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(handles)))) as pool:
        list(pool.map(one_host, handles))
    for handle in handles.values():
        if handle.local_pool is None:
            handle.call("cleanup")


def _summarise(handle: Any, name: str, run_dir: Path, timeout_s: float, record: HostRecord, progress: Progress) -> None:
    """The process's summary for the reports, made by its node's actor beside its traces
    once they are in (host/summaries.py), and gathered. A summary lost (the actor died
    making it) loses no trace: the reports then read that process's traces."""
    from ray_tpu_profile.analysis.host_summary import SUMMARY, TOP_OPERATIONS
    from ray_tpu_profile.driver.gather import gather_host

    try:
        record.summary = handle.call("summarise", TOP_OPERATIONS, None, name).result(timeout=timeout_s)
        if "error" not in record.summary:
            gather_host(handle.target, name, run_dir, timeout_s, gathered=record.files, only={SUMMARY})
    except Exception as e:  # only the summary is lost: the traces are in and listed
        record.summary = {"error": f"{type(e).__name__}: {e}"}
    if "error" in record.summary:
        progress.note(f"{name}: no summary ({record.summary['error']}); the reports read its traces")


def _verify(run_dir: Path, traced: Traced) -> dict[str, dict[str, Any]]:
    """Each traced process's xplane read back with xprof: readable, with events, from the
    registered process. Returns name -> its capture's start/stop ns, events."""
    from ray_tpu_profile.analysis.xplane import XplaneError, read_xplane

    checked = {}
    fail = traced.fail
    for name, (host, entry) in traced.entries.items():
        if name not in traced.names_on(host):
            continue
        xplanes = [f["path"] for f in traced.records[name].files if f["path"].endswith(".xplane.pb")]
        if len(xplanes) != 1:
            fail(name, Stage.VERIFY, f"{len(xplanes)} xplane files delivered, expected 1")
            continue
        try:
            info = read_xplane(run_dir / xplanes[0])
        except XplaneError as e:
            fail(name, Stage.VERIFY, str(e))
            continue
        if info.process_id is not None and info.process_id != entry.pid:
            fail(name, Stage.VERIFY, f"the xplane is of pid {info.process_id}, the registered process's is {entry.pid}")
            continue
        checked[name] = {
            "start_ns": info.start_ns,
            "stop_ns": info.stop_ns,
            "events": info.events,
            "planes": list(info.planes),
        }
    return checked


def _manifest(
    config: AttachConfig, argv: list[str], run_id: str, found: dict[str, list[RegistryEntry]], traced: Traced
) -> dict[str, Any]:
    """attach's manifest.json: `run`'s (layout.build_manifest over one record per traced
    process), plus the servers found and the server's load."""
    from ray_tpu_profile.core.versions import package_versions

    records = traced.records
    for name, (host, _) in traced.entries.items():
        clock = _host_clock(config, traced.offsets, traced.clock_channels, host)
        capture = {
            **traced.starts.get(name, {}),
            "client_call_plans": traced.call_plans.get(name),
            "start_wake_up": traced.start_wake_ups.get(name),
        }
        records[name].clock = clock
        records[name].shapes[SHAPE] = ShapeRecord(capture={**capture, "idle": name in traced.idle}, clock=clock)
    status, error, delivered = _run_status(traced)
    failed = [r for r in records.values() if not r.healthy]
    manifest = layout.build_manifest(
        run_id=run_id,
        status=status,
        stage=Stage.DONE if status == RunStatus.OK else failed[0].stage if failed else Stage.CAPTURE,
        error=error,
        command=layout.redacted_argv(argv),
        versions=package_versions(),
        workload={"shape": SHAPE, "shapes": [SHAPE], "deployment": config.name},
        capture=_capture_section(config, traced, run_id),
        cluster={"kind": "existing" if config.address else "this host", "address": config.address},
        engine={},
        records=records.values(),
        timings_s=traced.timings,
        host_extras={
            # A traced process is not a TPU host of the cluster's: no address, chips or slice of its own.
            name: {"node_id": entry.node_id, "node_ip": None, "chips": None}
            | {"host": host, "role": entry.role, "server": entry.to_json()}
            for name, (host, entry) in traced.entries.items()
        },
    )
    servers = {"found": listing(found, None), "traced": delivered, "idle": sorted(traced.idle)}
    return {"mode": "attach", **manifest, "servers": servers, "load": traced.load}


def _run_status(traced: Traced) -> tuple[RunStatus, str | None, list[str]]:
    """The run's status (run's rule) and error, and the processes that delivered a trace;
    a run where every healthy process was idle captured nothing and fails."""
    records = traced.records
    status = run_status((r.status for r in records.values()), stopped=False)
    delivered = [n for n, r in records.items() if r.healthy and n not in traced.idle]
    failed = [n for n, r in records.items() if not r.healthy]
    error = None if not failed else f"{len(failed)} of {len(records)} process(es) failed: " + ", ".join(failed)
    if not delivered and status != RunStatus.FAILED:
        status, error = RunStatus.FAILED, "no traced process ran anything in the window: was the deployment serving?"
    return status, error, delivered


def _capture_section(config: AttachConfig, traced: Traced, session_id: str) -> dict[str, Any]:
    """The manifest's capture: the profilers, the window and the measured start skew across servers."""
    from ray_tpu_profile.core.clocks import skew

    entries, offsets = traced.entries, traced.offsets
    measured = skew(
        {name: s["start_ns"] for name, s in traced.starts.items()},
        {name: offsets[host] for name, (host, _) in entries.items() if host in offsets},
    )
    profilers = sorted({e.profiler for _, e in entries.values()})
    return {
        "profiler": ", ".join(profilers),
        "chosen_by": "the registered servers",
        "delay_ms": config.delay_ms,
        "duration_ms": config.duration_ms,
        "session": session_id,
        "python_tracer_level": config.python_tracer_level,
        "real_time_start": config.real_time_start,
        "start_skew_ms": measured.skew_ms,
        "start_skew_uncertainty_ms": measured.uncertainty_ms,
        "start_skew_raw_ms": measured.raw_ms,
    }


def _host_clock(
    config: AttachConfig, offsets: dict[str, Any], channels: dict[str, str], host: str
) -> dict[str, Any] | None:
    """A host's measured clock offset and any warning about it; None where none was measured."""
    from ray_tpu_profile.core.clocks import untrusted_reason

    if host not in offsets:
        return None
    return {
        **offsets[host].to_json(),
        "channel": channels.get(host, ""),
        "warning": untrusted_reason(offsets[host], None, config.max_clock_uncertainty_ms),
    }
