"""The driver's side of each kind of capture backend: where a --phase window goes, and what
every host's delivered trace must show. The stages call place_window and verify_shape and
never branch on the backend themselves (a server backend's time window, checked in the
xplanes; the torch profiler's engine-step window, checked by the step names)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ray_tpu_profile.config import Capture
from ray_tpu_profile.core import clocks, schedule
from ray_tpu_profile.core.records import HostRecord, PhaseTiming, ShapeRecord, Stage
from ray_tpu_profile.core.schedule import StepWindow, TimeWindow, Window
from ray_tpu_profile.driver.barrier import Barrier, describe_error, result_watching_stop
from ray_tpu_profile.driver.state import RunState, ShapeRun

if TYPE_CHECKING:
    from ray_tpu_profile.analysis.xplane import XplaneInfo


class CapturePlan(ABC):
    def __init__(self, capture: Capture):
        self.capture = capture

    def place_window(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> Window | None:
        """The window that holds only --phase, from what the hosts measured in warmup
        (WindowError, naming what would fit, when none can); None for --phase all or when
        no host is left."""
        if self.capture.phase == "all" or not hosts.healthy():
            return None
        window = self._phase_window(run, hosts, shape)
        if window is not None:
            hosts.progress.note(f"{self.capture.phase} window: {window.describe()} ({window.chosen_from})")
        return window

    @abstractmethod
    def _phase_window(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> Window | None: ...

    def after_capture(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """Once every host has captured this shape (default: nothing)."""

    def missed_phase(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> dict[str, str]:
        """Host name -> why its just-taken trace is not inside --phase of its profiled
        iteration, for the hosts that can tell before the gather (default: none can)."""
        return {}

    @abstractmethod
    def verify_shape(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """Checks every healthy host's gathered trace of this shape; fails those that do not
        hold what was asked, records what was found on the others."""


def make_plan(capture: Capture) -> CapturePlan:
    return ServerPlan(capture) if capture.uses_server else TorchPlan(capture)


class ServerPlan(CapturePlan):
    """jax / xla: a detached trace of a time window, begun at one instant on every host."""

    def _phase_window(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> TimeWindow | None:
        if self.capture.phase == "decode":
            self._traced_iteration(run, hosts, shape)
        else:
            run.enter(Stage.WINDOW)
        # The hosts that ran iterations: engine owners (another host of an engine across
        # hosts runs its owner's).
        done = {r.host.name: r.shapes[shape.workload.shape] for r in hosts.healthy() if run.owner_record(r) is r}
        if not done:
            return None

        def samples(d: ShapeRecord, key: str) -> tuple[float, ...]:
            # The first warmup iteration also warmed up the profiler: left out.
            warmup = getattr(d.warmup, key)
            return (warmup[1:] or warmup) + (getattr(d.traced, key) if d.traced else ())

        # Per host the extreme the window must clear, not a median: the profiled iteration
        # varies. Decode: the latest prefill end and earliest last token; prefill: the
        # earliest prefill end.
        decode = self.capture.phase == "decode"
        pick = max if decode else min
        return schedule.phase_time_window(
            self.capture.phase,
            {name: pick(samples(d, "prefill_s")) for name, d in done.items()},
            {name: min(samples(d, "end_s")) for name, d in done.items()},
            self.capture.duration_ms if self.capture.duration_given else None,
            measured_in="warmup iterations" + (", one of them traced," if decode else "") + " per host",
        )

    @staticmethod
    def _traced_iteration(run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """The profiled iteration will be traced, and the tracer slows the host side
        (prefill took up to 2.3x its untraced time on CPU): each host runs one more warmup
        iteration under a throwaway trace so decode starts after a traced prefill. (A
        prefill window ends at the earliest prefill end: untraced timings keep it inside.)"""

        def keep(record: HostRecord, phase: PhaseTiming) -> str:
            if not phase.prefill_s:  # a host of an engine across hosts traced its worker only
                return "traced its worker through its owner's iteration"
            record.shape(shape.workload.shape).traced = phase
            return f"traced warmup iteration: prefill over {phase.prefill_s[0] * 1000:.1f} ms"

        # Every host traces as long as its engine's owner needs to cover prefill.
        owners_warmup = {r.host.name: run.owner_record(r).shapes[shape.workload.shape].warmup for r in hosts.healthy()}
        covered_ms = {name: schedule.traced_cover_ms(warmup.prefill_s) for name, warmup in owners_warmup.items()}

        # At one instant on every host, as the capture will be: hosts that share cores slow
        # each other's prefill then (2 simulated hosts on 2 cores: a prefill timed at 11 ms
        # apart took 32 ms in the capture).
        at_ns = schedule.capture_instant_ns(time.time_ns())
        hosts.run(
            Stage.WINDOW,
            lambda h: h.traced_iteration(run.host_instant_ns(shape, h.name, at_ns), covered_ms[h.name]),
            keep,
        )

    def missed_phase(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> dict[str, str]:
        """From each host's own reading of its xplane (a host without xprof cannot tell:
        verify reads its trace later), all asked at once."""
        if not isinstance(shape.window, TimeWindow) or not hosts.healthy():
            return {}
        session = _session(run, shape)
        asked = {r.host.name: (r, hosts.handles[r.host.name].xplane_checks()) for r in hosts.healthy()}
        missed = {}
        for name, (record, future) in asked.items():
            try:
                check = result_watching_stop(future, hosts.timeout_s, hosts.check_stop).get(session) or {}
            except Exception as e:  # this host's failure; the others' checks go on
                hosts.fail(record, Stage.CAPTURE, describe_error(e))
                continue
            if "start_ns" not in check:
                continue
            trace = TraceSpan(check["start_ns"], check["stop_ns"])
            profiled = run.owner_record(record).shape(shape.workload.shape).profiled
            problem = phase_problem(shape.window, profiled, trace)
            if problem:
                missed[name] = problem
        return missed

    def verify_shape(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """Each host must have delivered exactly its own xplane, readable by xprof. Its
        profile_start_time is when tracing really began there: the skew comes from it.
        Each host read its own back right after its capture (time_window.check_xplane), all
        at once; the driver reads one only where its host could not (no xprof there), and
        the gathered copy is the host's by its sha256 (gather)."""
        from ray_tpu_profile.analysis.xplane import XplaneError

        name, planned_ns = shape.workload.shape, shape.planned["trace_start_ns"]
        session = _session(run, shape)
        checks = hosts.run(Stage.VERIFY, lambda h: h.xplane_checks(), lambda r, c: _describe_check(c.get(session)))
        starts = {}
        for record in hosts.healthy():
            expected = f"plugins/profile/{session}/{record.host.name}.xplane.pb"
            check = checks.get(record.host.name, {}).get(session) or {}
            try:
                xplane, work = _delivered_xplane(run, record, expected, check)
            except XplaneError as e:
                hosts.fail(record, Stage.VERIFY, str(e))
                continue
            owner = run.owner_record(record)  # its iterations, for a host of an engine across hosts
            problem = (
                phase_problem(shape.window, owner.shape(name).profiled, TraceSpan(xplane.start_ns, xplane.stop_ns))
                or worker_problem(record, {xplane.process_id} - {None})
                or xla_problem(run, work)
            )
            if problem:
                hosts.fail(record, Stage.VERIFY, problem)
                continue
            starts[record.host.name] = xplane.start_ns
            # The trace is stamped by the host's clock; the plan is on the driver's.
            offset = shape.clock_offsets.get(record.host.name)
            start_on_driver_ns = offset.to_driver_ns(xplane.start_ns) if offset else xplane.start_ns
            checked = record.shape(name).capture = {
                "xplane": expected,
                "start_ns": xplane.start_ns,
                "stop_ns": xplane.stop_ns,
                "start_offset_ms": (start_on_driver_ns - planned_ns) / schedule.NS_PER_MS,
                "events": xplane.events,
                "read_on": "host" if "start_ns" in check else "driver",
                # How its starting thread woke at the instant (in_process.prompt_wake_up).
                "start_wake_up": check.get("start_wake_up"),
                **({"xla": work} if work is not None else {}),
            }
            hosts.progress.host_ok(
                Stage.VERIFY,
                record.host.name,
                f"{name}: {xplane.events:,} events, trace began {checked['start_offset_ms']:+.3f} ms from the plan"
                + (f", its start woke {checked['start_wake_up']}" if checked["start_wake_up"] else ""),
            )
        skew = clocks.skew(starts, shape.clock_offsets)
        shape.checked = {
            "session": session,
            "start_skew_ms": skew.skew_ms,
            "start_skew_uncertainty_ms": skew.uncertainty_ms,
            "start_skew_raw_ms": skew.raw_ms,
        }
        if starts:
            hosts.progress.note(f"{name}: capture start skew across {len(starts)} host(s): {skew.describe()}")


@dataclass(frozen=True)
class TraceSpan:
    """When a host's trace began and ended (epoch ns, its own clock)."""

    start_ns: int
    stop_ns: int


def _session(run: RunState, shape: ShapeRun) -> str:
    """The xprof session of a shape's capture: one per shape in a sweep."""
    return f"{run.run_id}-{shape.tag}" if shape.tag else run.run_id


def _delivered_xplane(
    run: RunState, record: HostRecord, expected: str, check: dict[str, Any]
) -> tuple[XplaneInfo, dict[str, Any] | None]:
    """(XplaneInfo, its xla_work) of the xplane a host delivered: as the host read it
    (check), else read here (a host without xprof). XplaneError when it delivered none, or
    one that cannot be read."""
    from ray_tpu_profile.analysis.device_traces import xla_work
    from ray_tpu_profile.analysis.xplane import XplaneError, XplaneInfo, read_xplane

    if expected not in {f["path"] for f in record.files}:
        raise XplaneError(f"the capture wrote no {expected}")
    if "error" in check:
        raise XplaneError(check["error"])
    if "start_ns" in check:
        read = {f.name: check[f.name] for f in fields(XplaneInfo) if f.name in check}
        return XplaneInfo(**{**read, "planes": tuple(check["planes"])}), check.get("xla")
    work = xla_work(run.run_dir / expected).to_json() if run.model_on_xla else None
    return read_xplane(run.run_dir / expected), work


def _describe_check(check: dict[str, Any] | None) -> str:
    """A host's progress line for its own reading of its xplane."""
    if not check:
        return "no xplane read on the host"
    if "events" in check:
        return f"xplane read on the host: {check['events']:,} events"
    return f"xplane not read on the host ({check.get('skipped') or check.get('error')})"


def worker_problem(record: HostRecord, traced_pids: set[int]) -> str | None:
    """Whether a host's trace came from the process it was to trace: for a host of an
    engine across hosts its own worker (the pid the worker reported on this host), not
    another host's; else the host's actor, which runs the engine and its profiler server
    (not whatever other process listens on that port)."""
    if not traced_pids:
        return None
    if record.worker:
        if record.worker.pid not in traced_pids:
            return (
                f"the trace came from pid {', '.join(map(str, sorted(traced_pids)))}, not from this host's worker "
                f"(rank {record.worker.rank}, pid {record.worker.pid})"
            )
    elif record.pid is not None and record.pid not in traced_pids:
        return (
            f"the trace came from pid {', '.join(map(str, sorted(traced_pids)))}, not from this host's engine "
            f"process (pid {record.pid}): another process listens on its profiler port"
        )
    return None


def xla_problem(run: RunState, work: dict[str, Any] | None) -> str | None:
    """Where vLLM runs the model on XLA (tpu-inference), whether a host's trace (its
    device_traces.xla_work) misses the model's XLA ops, or its collectives when the engine
    has more than one device (TP across a host's chips, or across hosts). None: it holds
    them, or there is nothing to check (another stack; a trace read before xla_work)."""
    if not run.model_on_xla or work is None:
        return None
    if not work["ops_by_module"]:
        return "the trace holds no XLA op: the model's XLA programs did not run in the window"
    if run.tensor_parallel_size > 1 and not work["collectives"]:
        return (
            f"the trace holds XLA ops of {', '.join(work['ops_by_module'])} but no collective, with "
            f"--tensor-parallel-size {run.tensor_parallel_size}"
        )
    return None


def phase_problem(window: TimeWindow | None, profiled: PhaseTiming | None, trace: TraceSpan) -> str | None:
    """Whether the trace [start_ns, stop_ns] of a host lies inside the window's phase of its
    first profiled iteration, per vLLM's request metrics (prefill over at the first token
    of every request). None: it does, or there is no phase window to check."""
    if window is None:
        return None
    if not profiled or not profiled.prefill_s:
        return "no request metrics from the profiled iteration to check the phase against"
    t0_ns = profiled.iteration_starts_s[0] * 1e9
    prefill_end_ns, end_ns = t0_ns + profiled.prefill_s[0] * 1e9, t0_ns + profiled.end_s[0] * 1e9
    ms = lambda ns: (ns - t0_ns) / 1e6  # noqa: E731 - offsets into the iteration, for the message
    if window.phase == "decode" and not (trace.start_ns >= prefill_end_ns and trace.stop_ns <= end_ns):
        return (
            f"--phase decode: trace {ms(trace.start_ns):.1f}-{ms(trace.stop_ns):.1f} ms is not inside decode "
            f"{ms(prefill_end_ns):.1f}-{ms(end_ns):.1f} ms of the profiled iteration"
        )
    if window.phase == "prefill" and not (trace.start_ns < prefill_end_ns and trace.stop_ns <= prefill_end_ns):
        return (
            f"--phase prefill: trace {ms(trace.start_ns):.1f}-{ms(trace.stop_ns):.1f} ms is not inside prefill "
            f"(over at {ms(prefill_end_ns):.1f} ms) of the profiled iteration"
        )
    return None


class TorchPlan(CapturePlan):
    """torch: vLLM's profiler around the profiled iterations; a phase is a range of engine
    steps, and each step's name in the trace says whether it held prefill work."""

    def _phase_window(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> StepWindow:
        run.enter(Stage.WINDOW)
        owner = next(r for r in hosts.healthy() if run.owner_record(r) is r)
        steps = hosts.call_one(owner, lambda h: h.prefill_steps())
        return schedule.phase_step_window(self.capture.phase, steps, shape.workload.output_len)

    def after_capture(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """An engine across hosts: each host takes its own ranks' trace files, written on it
        by its worker, once the owner has stopped the profiler on every worker."""
        if run.engines_span_hosts and hosts.healthy():
            hosts.run(
                Stage.CAPTURE,
                lambda h: h.collect_traces(),
                lambda r, files: f"{len(files)} trace file(s) of rank(s) {', '.join(map(str, r.ranks))}",
            )

    def verify_shape(self, run: RunState, hosts: Barrier, shape: ShapeRun) -> None:
        """With --phase, the captured steps must all be of that phase; a host of an engine
        across hosts must hold its own worker's trace."""
        from ray_tpu_profile.analysis.steps import check_phase, torch_trace_pids, torch_trace_steps

        phase = self.capture.phase
        if phase == "all" and not run.engines_span_hosts:
            return
        for record in hosts.healthy():
            counts, pids = {"prefill": 0, "decode": 0}, set()
            folder = f"hosts/{record.host.name}/torch/" + (f"{shape.tag}/" if shape.tag else "")
            for f in record.files:
                rest = f["path"][len(folder) :]
                if f["path"].startswith(folder) and "/" not in rest and rest.endswith(".pt.trace.json.gz"):
                    for kind, n in torch_trace_steps(run.run_dir / f["path"]).items():
                        counts[kind] += n
                    pids |= torch_trace_pids(run.run_dir / f["path"]) if record.worker else set()
            record.shape(shape.workload.shape).capture = {"steps": counts}
            problem = (check_phase(phase, counts) if phase != "all" else None) or worker_problem(record, pids)
            if problem:
                hosts.fail(record, Stage.VERIFY, problem)
            else:
                hosts.progress.host_ok(
                    Stage.VERIFY,
                    record.host.name,
                    f"{counts['prefill']} prefill and "
                    f"{counts['decode']} decode step(s)" + (f", from pid {record.worker.pid}" if record.worker else ""),
                )
