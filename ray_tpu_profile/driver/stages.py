"""The stages of a run, each a function of the run state and the hosts' barrier, in the
order pipeline.execute calls them. Each stage runs on every healthy host and records a
host's failure on that host alone."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ray_tpu_profile.config import Workload
from ray_tpu_profile.core import schedule
from ray_tpu_profile.core.records import HostRecord, HostStatus, PhaseTiming, Stage, WorkerIdentity
from ray_tpu_profile.driver.barrier import Barrier, describe_error
from ray_tpu_profile.driver.capture_plans import CapturePlan
from ray_tpu_profile.driver.progress import Progress
from ray_tpu_profile.driver.signals import StopSignals
from ray_tpu_profile.driver.state import RunState, ShapeRun
from ray_tpu_profile.errors import RunStopped
from ray_tpu_profile.rundir import layout


class RunSession:
    """What the stages share besides the run state: progress, the stop flag, and clean-ups
    that run when the session ends, whatever happened (the hosts' reservation)."""

    def __init__(self, progress: Progress, stop: StopSignals, cleanups: ExitStack):
        self.progress = progress
        self.stop = stop
        self.cleanups = cleanups


@contextmanager
def open_run(run: RunState, progress: Progress, actor_logs: bool) -> Iterator[RunSession]:
    """The cluster (connected or started), stop signals and the staging run directory. A
    failure or stop inside the block is recorded in run (error, stopped, which hosts
    failed) and ends the block; the session's clean-ups run whatever happened."""
    from ray_tpu_profile.placement import cluster

    placement = run.config.placement
    started = time.monotonic()
    stop = StopSignals()
    # The stop handler goes in after ray.init: Ray installs its own, which aborts.
    with (
        cluster.ray_session(
            placement.address,
            placement.simulated_hosts,
            log_to_driver=actor_logs,
            chips_per_host=placement.simulated_chips,
            prestart_workers=run.local_actors_without_runtime_env,
        ) as info,
        stop,
        ExitStack() as cleanups,
    ):
        run.timings.add("cluster_start", time.monotonic() - started)
        run.cluster_info = info
        chosen, run.whole_slice, run.engines = choose_hosts(run, cluster.discover_hosts())  # ConfigError: nothing made
        run.records = [HostRecord(host=h, engine=e.name, ranks=e.ranks(h)) for e in run.engines for h in e.hosts]
        if run.result_url:  # the driver's files are built here, then published
            run.local_root = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-"))
        run.run_dir = layout.staging_dir(run.local_root, run.run_id)
        run.run_dir.mkdir(parents=True)
        try:
            yield RunSession(progress, stop, cleanups)
        except (KeyboardInterrupt, RunStopped) as e:
            run.stopped = True
            run.error = (
                f"stopped during {run.stage} ({'SIGINT' if isinstance(e, KeyboardInterrupt) else e.signal_name})"
            )
            progress.host_failed(run.stage, "all", run.error)
        except Exception as e:  # recorded in the manifest and reflected in the exit code
            run.error = f"{run.stage}: {describe_error(e)}"
            run.end_hosts()
            progress.host_failed(run.stage, "all", run.error)
        run.timings.close()
        stopping = time.monotonic()
    run.timings.add("cluster_stop", time.monotonic() - stopping)  # actors, placement group, local cluster


def choose_hosts(run: RunState, found: list) -> tuple[list, bool, list]:
    """The hosts to profile among those found, whether they are a whole TPU slice, and the
    engines they make (ConfigError when the cluster cannot serve the request)."""
    from ray_tpu_profile.core.hosts import select_hosts, select_slice
    from ray_tpu_profile.placement.engines import plan_engines

    placement = run.config.placement
    hosts = select_hosts(found, placement.hosts, placement.slice_name)
    in_slice = select_slice(found, hosts[0].slice_name) if hosts[0].slice_name else hosts
    engines = plan_engines(hosts, run.tensor_parallel_size, run.pipeline_parallel_size, slice_hosts=len(in_slice))
    return hosts, hosts[0].slice_name is not None and len(hosts) == len(in_slice), engines


def place(run: RunState, session: RunSession) -> Barrier:
    """Reserves the hosts (one placement-group bundle each, all its chips; or per engine
    that spans hosts, the bundles its executor wants), starts one actor per host, and
    returns the barrier over them. Each actor says where it runs: it must be on its host,
    with the env it was given (users report env vars that never reach Ray workers:
    checked, not assumed)."""
    from ray_tpu_profile.placement import cluster

    run.enter(Stage.PLACE)
    placement = run.config.placement
    chosen = [r.host for r in run.records]
    if run.engines_span_hosts:
        reservation = cluster.reserve_engines(run.engines, run.run_id, placement.stage_timeout_s, run.bundle_per_chip)
    else:
        reservation = cluster.reserve_hosts(chosen, run.run_id, placement.stage_timeout_s, run.whole_slice)
    session.cleanups.callback(reservation.release)
    run.cluster_info["reservation"] = reservation.kind
    env = run.actor_env
    actors = cluster.start_actors(reservation, chosen, run.run_id, env, set_by=run.actor_env_set_by)
    hosts = Barrier(
        run.records,
        {name: cluster.RayHost(a, name) for name, a in actors.items()},
        session.progress,
        placement.stage_timeout_s,
        session.stop.check,
        run.enter,
        partners=run.engine_hosts(),
    )
    identities = hosts.run(Stage.PLACE, lambda h: h.identity(tuple(env)))
    for r in hosts.healthy():
        identity = identities[r.host.name]
        r.pid, r.scratch_dir = identity["pid"], identity["output_dir"]
        missing = sorted(k for k, v in env.items() if identity["env"].get(k) != v)
        if identity["node_id"] != r.host.node_id:
            hosts.fail(r, Stage.PLACE, f"actor landed on node {identity['node_id']}, not {r.host.node_id}")
        elif missing:
            hosts.fail(r, Stage.PLACE, f"env var(s) {', '.join(missing)} did not reach the model process")
    return hosts


def measure_clocks(run: RunState, hosts: Barrier, shape: ShapeRun | None = None) -> None:
    """Every healthy host's clock offset from the driver's (clock_exchange.py) and its NTP
    state, kept on its record; with a shape, its window and capture are scheduled with
    these offsets. A host whose clock cannot be trusted is warned about, in the progress
    and in the manifest, not failed: its traces are good, their alignment is what is in doubt."""
    import secrets

    from ray_tpu_profile.core.clocks import NtpState, untrusted_reason
    from ray_tpu_profile.host.clock_echo import TOKEN_BYTES

    token, driver_ip = secrets.token_bytes(TOKEN_BYTES), driver_node_ip()
    states = hosts.run(
        Stage.CLOCKS, lambda h: h.clock_state(token, driver_ip), lambda r, state: _describe_clock_state(state)
    )
    healthy = hosts.healthy()
    found = _exchange_clocks(hosts, healthy, states, token, driver_ip)
    hosts.check_stop()
    when = f"before the capture of {shape.workload.shape}" if shape else "at place"
    for record in healthy:
        offset, channel = found[record.host.name]
        if isinstance(offset, BaseException):
            hosts.fail(record, Stage.CLOCKS, f"clock exchange failed: {describe_error(offset)}")
            continue
        state = states[record.host.name]
        # Simulated hosts share one clock: the machine's NTP state says nothing about them.
        ntp = NtpState(**state["ntp"]) if state["ntp"] and not state["simulated"] else None
        warning = untrusted_reason(offset, ntp, run.capture.max_clock_uncertainty_ms)
        measured = {
            "measured": when,
            "offset_ms": offset.offset_ns / schedule.NS_PER_MS,
            "uncertainty_ms": offset.uncertainty_ns / schedule.NS_PER_MS,
        }
        earlier = record.clock["measurements"] if record.clock else []
        record.clock = {
            **offset.to_json(),
            "channel": channel,
            "measured": when,
            "ntp": state["ntp"],
            "simulated": state["simulated"],
            "warning": warning,
            "measurements": [*earlier, measured],
        }
        if shape is not None:
            shape.clock_offsets[record.host.name] = offset
            record.shape(shape.workload.shape).clock = measured
        hosts.progress.host_ok(
            Stage.CLOCKS,
            record.host.name,
            f"clock offset {measured['offset_ms']:+.3f} ms +-{measured['uncertainty_ms']:.3f} ms",
        )
        if warning:
            hosts.progress.note(
                f"warning: {record.host.name}: {warning}; its alignment with the other hosts is only as good as that"
            )


def _exchange_clocks(
    hosts: Barrier, healthy: list[HostRecord], states: dict[str, Any], token: bytes, driver_ip: str
) -> dict[str, tuple[Any, str]]:
    """Each healthy host's (offset or error, channel): over its clock echo where it opened
    one (states: clock_state's answers), else over actor calls; echoes closed after."""
    from ray_tpu_profile.driver import clock_exchange

    echoes = {name: state["echo"] for name, state in states.items() if (state.get("echo") or {}).get("address")}
    try:
        found = clock_exchange.measure_with_fallback(
            {
                name: clock_exchange.udp_sampler(tuple(e["address"]), token, source_ip=driver_ip)
                for name, e in echoes.items()
            },
            {r.host.name: clock_exchange.actor_call_sampler(hosts.handles[r.host.name].clock_ns) for r in healthy},
        )
    finally:
        _close_clock_echoes(hosts, list(echoes))
    for name, (offset, _) in found.items():
        echo_error = (states.get(name, {}).get("echo") or {}).get("error")
        if echo_error:
            found[name] = (offset, f"{clock_exchange.CHANNEL_ACTOR_CALL} (no clock echo: {echo_error})")
    return found


def driver_node_ip() -> str:
    """The address the hosts' clock echoes answer: this driver's node's, as Ray knows it
    (loopback without a Ray session: hosts that are fakes in tests open no echo)."""
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"


def _close_clock_echoes(hosts: Barrier, names: list[str]) -> None:
    """Close the hosts' clock echoes (each closes itself if this never reaches it); a host
    that cannot be reached is said, not failed: the exchange it served is over."""
    from ray_tpu_profile.driver.clock_exchange import CALL_TIMEOUT_S

    futures = {name: hosts.handles[name].close_clock_echo() for name in names}
    for name, future in futures.items():
        try:
            future.result(timeout=CALL_TIMEOUT_S)
        except Exception as e:  # said; the echo closes itself when idle (clock_echo.IDLE_CLOSE_S)
            hosts.progress.note(f"{name}: clock echo not closed ({describe_error(e)}); it closes itself when idle")


def _describe_clock_state(state: dict[str, Any]) -> str:
    """A host's progress line for its clock state (host.clock_state()): its kernel clock discipline."""
    return "kernel clock " + (
        "(simulated host: the machine's clock, shared)"
        if state["simulated"]
        else "n/a"
        if state["ntp"] is None
        else "synchronised"
        if state["ntp"]["synchronised"]
        else "NOT synchronised"
    )


def load(run: RunState, hosts: Barrier) -> None:
    def keep(record: HostRecord, phase: PhaseTiming) -> str:
        record.load = phase
        return f"{phase.duration_s:.2f} s"

    first, roles = run.config.workloads[0], run.engine_roles()
    hosts.run(
        Stage.LOAD,
        lambda h: h.load(run.engine_argv, first, run.capture, run.run_id, run.tiny_model, roles[h.name]),
        keep,
    )
    if run.model_on_xla and hosts.healthy():  # vLLM's TPU stack: on simulated hosts, some parts stand in
        asked = hosts.healthy()[0]
        try:
            run.stand_ins = hosts.call_one(asked, lambda h: h.stand_ins())
        except Exception as e:  # that host's failure, as any at load
            hosts.fail(asked, Stage.LOAD, describe_error(e))


def find_workers(run: RunState, hosts: Barrier) -> None:
    """Each host's worker process, for engines that span hosts: every engine's owner asks
    its workers (with a capture socket opened in each, for jax / xla) where they run; each
    host then traces the worker of its first rank there, which must be on this host (vLLM's
    Ray executor: a worker per chip), or the worker on its node (tpu-inference's: one per
    host, ranked by that executor)."""
    if not run.engines_span_hosts:
        return
    found = hosts.run(
        Stage.WORKERS,
        lambda h: h.engine_workers(),
        lambda r, workers: f"{len(workers)} worker(s)" if workers else "not the owner",
    )
    engine_workers = {r.host.name: found.get(run.owner_record(r).host.name) or [] for r in hosts.healthy()}
    for record in hosts.healthy():
        if not record.healthy:  # failed with its engine, earlier in this loop
            continue
        if not run.bundle_per_chip:
            # tpu-inference: one worker per host with all its chips, ranked by its executor.
            mine = sorted(
                (w for w in engine_workers[record.host.name] if w["node_id"] == record.host.node_id),
                key=lambda w: w["rank"],
            )
            if mine:
                record.worker = WorkerIdentity.from_json(mine[0])
            else:
                hosts.fail(record, Stage.WORKERS, f"no worker of its engine runs on this host ({record.host.node_id})")
            continue
        worker = next((w for w in engine_workers[record.host.name] if w["rank"] == record.ranks[0]), None)
        if worker is None:
            hosts.fail(record, Stage.WORKERS, f"its engine has no rank {record.ranks[0]}")
        elif worker["node_id"] != record.host.node_id:
            hosts.fail(
                record,
                Stage.WORKERS,
                f"rank {worker['rank']} runs on node {worker['node_id']}, not on this host ({record.host.node_id})",
            )
        else:
            record.worker = WorkerIdentity.from_json(worker)
    workers = {r.host.name: r.worker.to_json() for r in hosts.healthy() if r.worker}
    # Each host is told its engine's workers on its node: at its clean-up it removes what
    # they leave when killed (HostActor.worker_leftovers).
    node_workers = {
        r.host.name: [w for w in engine_workers[r.host.name] if w["node_id"] == r.host.node_id] for r in hosts.healthy()
    }
    hosts.run(
        Stage.WORKERS,
        lambda h: h.trace_worker(workers[h.name], node_workers[h.name]),
        lambda r, waited_s: f"tracing rank {r.worker.rank}, pid {r.worker.pid}",
    )


@contextmanager
def shape_stages(run: RunState, workload: Workload) -> Iterator[ShapeRun]:
    """The stages of one shape (switch, warm up, window, capture), timed as that shape's."""
    shape = run.shapes[workload.shape] = ShapeRun(workload, workload.shape if run.config.sweep else None)
    run.shape = workload.shape
    try:
        yield shape
    finally:
        run.timings.close()
        run.shape = None


def switch_shape(run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
    """A sweep: the loaded model takes the next shape (no reload: the load count says so)."""
    if run.config.sweep:
        shape.loads = hosts.run(
            Stage.SHAPE,
            lambda h: h.set_shape(shape.workload, shape.tag),
            lambda r, n: f"{shape.workload.shape} (model loads so far: {n})",
        )


def warm_up(run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
    hosts.run(Stage.WARMUP, lambda h: h.warmup(), _keep(shape, "warmup"))
    name_dead_workers(run, hosts, Stage.WARMUP)


WORKER_CHECK_TIMEOUT_S = 30.0


def name_dead_workers(run: RunState, hosts: Barrier, stage: Stage) -> None:
    """An engine across hosts that failed in this stage: each of its hosts says whether
    the worker it traces is still alive, and every host's reason names the ones gone (the
    engine's owner only sees that its engine stopped)."""
    failed = {r.engine for r in run.records if not r.healthy and r.stage == stage and r.worker}
    for engine in sorted(failed):
        members = [r for r in run.records if r.engine == engine]
        gone = []
        for r in members:
            try:
                alive = hosts.call_one(r, lambda h: h.worker_alive(), WORKER_CHECK_TIMEOUT_S)
            except Exception:  # its actor is gone too (killed with its engine): nothing to ask
                continue
            if not alive:
                gone.append(f"the worker of rank {r.worker.rank} on {r.host.name} (pid {r.worker.pid}) is gone")
        if gone:
            for r in members:
                r.error = f"{r.error} [{'; '.join(gone)}]"


def place_window(run: RunState, hosts: Barrier, shape: ShapeRun, plan: CapturePlan) -> None:
    shape.window = plan.place_window(run, hosts, shape)


CAPTURE_ATTEMPTS = 3
"""Captures of one shape before a host whose trace missed its --phase is failed. The
window is placed from warm-up iterations, and a profiled iteration can run slower than
all of them (on 2 shared cores a prefill timed at 12.6 ms took 49.9 ms, and a decode
window placed at 28 ms began inside it); the next capture is taken at a new instant."""


def capture(run: RunState, hosts: Barrier, shape: ShapeRun, plan: CapturePlan) -> None:
    """One instant for every host, picked once all are warm (the barrier before) on the
    driver's clock; each host is given it on its own (measure_clocks). Taken again, on
    every host, while a host's trace (as it read it back) missed --phase."""
    missed: list[dict[str, Any]] = []
    for attempt in range(1, CAPTURE_ATTEMPTS + 1):
        _capture_once(run, hosts, shape, plan)
        outside = plan.missed_phase(run, hosts, shape)
        if not outside or attempt == CAPTURE_ATTEMPTS:
            break
        missed.append({"attempt": attempt, "hosts": outside})
        hosts.progress.note(
            f"capture {attempt} of {CAPTURE_ATTEMPTS}: the trace missed --phase {run.capture.phase} on "
            + "; ".join(f"{name} ({why})" for name, why in outside.items())
            + ": capturing again on every host"
        )
    shape.planned["capture_attempts"] = attempt
    if missed:
        shape.planned["missed_phase"] = missed


def _capture_once(run: RunState, hosts: Barrier, shape: ShapeRun, plan: CapturePlan) -> None:
    window = shape.window
    delay_ms = window.delay_ms if isinstance(window, schedule.TimeWindow) else run.capture.delay_ms
    at_ns = schedule.capture_instant_ns(time.time_ns())
    iterations_ns, trace_ns = schedule.capture_instants_ns(at_ns, delay_ms, lead_in=window is None)
    shape.planned = dict(
        instant_ns=at_ns,
        iterations_start_ns=iterations_ns,
        trace_start_ns=trace_ns,
        delay_ms=delay_ms,
        phase=run.capture.phase,
        duration_ms=run.capture.duration_ms,
    )
    on_host = lambda name, ns: run.host_instant_ns(shape, name, ns)  # noqa: E731 - each host's clock
    hosts.run(
        Stage.CAPTURE,
        lambda h: h.profile(on_host(h.name, iterations_ns), on_host(h.name, trace_ns), window),
        _keep(shape, "profiled"),
    )
    name_dead_workers(run, hosts, Stage.CAPTURE)
    plan.after_capture(run, hosts, shape)
    if hosts.healthy():
        shape.backend = hosts.call_one(hosts.healthy()[0], lambda h: h.capture_info())


def _keep(shape: ShapeRun, key: str):
    def on_result(record: HostRecord, phase: PhaseTiming) -> str:
        setattr(record.shape(shape.workload.shape), key, phase)
        latencies = phase.latencies_s
        return (
            f"{len(latencies)} iteration(s), mean {sum(latencies) / len(latencies):.3f} s"
            if latencies
            else "no iterations"
        )

    return on_result


def gather(run: RunState, hosts: Barrier, gathered: list[HostRecord]) -> None:
    """Every healthy host's files into the run directory (or straight to the result URL),
    each verified; hosts in parallel, a host's failure its own. Each host gathered whole
    is appended to `gathered` as it is (a stop may come half way): its scratch stays until
    clean_up, after its summary."""
    run.enter(Stage.GATHER)
    healthy = hosts.healthy()
    hosts.progress.stage(Stage.GATHER, [r.host.name for r in healthy])

    def one(record: HostRecord) -> None:
        try:
            _gather_files(run, hosts, record)
            if not record.files:
                raise RuntimeError("the capture wrote no file")
        except Exception as e:  # recorded per host; other hosts' gathers go on
            hosts.fail(record, Stage.GATHER, describe_error(e))
            return
        record.status = HostStatus.OK
        gathered.append(record)
        total = sum(f["bytes"] for f in record.files)
        where = (
            f"written by the host to {run.result_url}, traces read back and sha256 verified"
            if run.result_url
            else "sha256 verified"
        )
        hosts.progress.host_ok(Stage.GATHER, record.host.name, f"{len(record.files)} file(s), {total:,} bytes, {where}")

    with ThreadPoolExecutor(max_workers=gather_workers(len(healthy))) as pool:
        list(pool.map(one, healthy))
    hosts.check_stop()


def _gather_files(run: RunState, hosts: Barrier, record: HostRecord, only: Collection[str] | None = None) -> None:
    """The host's files (those of `only`, where given) into record.files, as gather says."""
    from ray_tpu_profile.driver.gather import gather_host, upload_host

    actor, name = hosts.handles[record.host.name].actor, record.host.name
    if run.result_url:
        upload_host(actor, name, run.result_url, run.run_dir, hosts.timeout_s, hosts.check_stop, record.files, only)
    else:
        gather_host(actor, name, run.run_dir, hosts.timeout_s, hosts.check_stop, record.files, only)


def summarise(run: RunState, hosts: Barrier, timeline_max_events: int | None) -> None:
    """Every healthy host summarises its own traces for the reports (host/summaries.py),
    all at once, and its summary is gathered: the driver's reports then merge summaries
    and read no host's events. This comes after the gather and verify, so a host that
    dies summarising (out of memory on a huge trace) has its traces in the run directory
    already: such a host is not failed, and the reports summarise its traces on the
    driver (the manifest says why)."""
    from ray_tpu_profile.analysis.host_summary import SUMMARY, TOP_OPERATIONS
    from ray_tpu_profile.analysis.timeline import placements, timeline_origin_ns

    def keep(record: HostRecord, summary: dict[str, Any]) -> str:
        record.summary = summary
        if "error" in summary:
            return f"no summary ({summary['error']}); the reports will read its traces"
        return f"{summary['events']:,} events summarised in {summary['seconds']:.2f} s, {summary['bytes']:,} bytes"

    def lost(record: HostRecord, why: str) -> str:
        return keep(record, {"error": why})

    healthy = hosts.healthy()
    if not healthy:
        return
    # Where each host's events go in the timeline, known now (its first warmup comes
    # before any trace): the driver then splices each host's piece as it is.
    manifest = run.manifest()
    at = placements(manifest, timeline_origin_ns(manifest))
    hosts.run(Stage.SUMMARIES, lambda h: h.summarise(TOP_OPERATIONS, timeline_max_events, None, at[h.name]), keep, lost)

    def one(record: HostRecord) -> None:
        try:
            _gather_files(run, hosts, record, only={SUMMARY})
        except Exception as e:  # the host's traces are in; only its summary is lost
            hosts.progress.note(lost(record, f"its summary was not gathered: {describe_error(e)}"))

    made = [r for r in healthy if r.summary and "error" not in r.summary]
    with ThreadPoolExecutor(max_workers=gather_workers(len(made))) as pool:
        list(pool.map(one, made))
    hosts.check_stop()


CLEAN_UP_TIMEOUT_S = 30.0
"""Longest wait for one host's scratch removal: it also runs on the way out of a stopped
run, where a frozen host must not hold the driver for --timeout-s."""


def clean_up(hosts: Barrier, gathered: list[HostRecord]) -> None:
    """Each gathered host's scratch removed, all at once; also after a stop or an error
    (the pipeline calls it on the way out), so it does not watch for the stop. A host whose
    scratch stays (its actor died) is not failed: its files are in the run directory, and
    the manifest says so. A host not gathered (failed, or the run stopped first) has its
    scratch removed only if it holds no file: what it holds is nowhere else."""
    timeout_s = min(hosts.timeout_s, CLEAN_UP_TIMEOUT_S)
    was_gathered = {id(r) for r in gathered}

    def one(record: HostRecord) -> None:
        handle = hosts.handles.get(record.host.name)
        if handle is None or record.scratch_dir is None:
            return  # never placed, or never said where its scratch is
        try:
            if id(record) in was_gathered:
                handle.cleanup().result(timeout=timeout_s)
                return
            kept = handle.cleanup_if_empty().result(timeout=timeout_s)
            if not kept:
                return
            record.scratch_kept = f"it holds {len(kept)} file(s) the run did not gather"
        except Exception as e:  # said, and kept in the manifest; nothing of the run is lost
            record.scratch_kept = describe_error(e)
        hosts.progress.note(f"{record.host.name}: its scratch {record.scratch_dir} stays: {record.scratch_kept}")

    with ThreadPoolExecutor(max_workers=gather_workers(len(hosts.records))) as pool:
        list(pool.map(one, hosts.records))


def gather_workers(hosts: int) -> int:
    """Hosts gathered at once: all of them up to GATHER_HOSTS_AT_ONCE, so that the driver
    holds at most that many hosts' chunks in flight (16 x 4 x 8 MiB = 512 MiB), not 64's."""
    from ray_tpu_profile.driver.gather import GATHER_HOSTS_AT_ONCE

    return max(1, min(hosts, GATHER_HOSTS_AT_ONCE))


def verify(run: RunState, hosts: Barrier, plan: CapturePlan) -> None:
    """Every shape's traces, read back on the driver (capture_plans says what they must hold)."""
    run.enter(Stage.VERIFY)
    for shape in run.shapes.values():
        plan.verify_shape(run, hosts, shape)
