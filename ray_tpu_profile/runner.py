"""place -> load -> warm up (barrier) -> capture -> gather -> manifest.

Each stage is called on every healthy host at once and waited for as a whole: the
next stage starts on no host before every host finished this one (a barrier). A
host that fails or times out is marked failed with its stage and reason; the
others carry on, and whatever they captured is gathered and verified.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ray_tpu_profile import cluster, engine, layout, schedule
from ray_tpu_profile.config import RunConfig
from ray_tpu_profile.errors import RunStopped
from ray_tpu_profile.hosts import Host, check_tensor_parallel_fits, select_hosts, select_slice
from ray_tpu_profile.progress import Progress
from ray_tpu_profile.records import HostRecord
from ray_tpu_profile.tiny_model import default_tiny_model_dir
from ray_tpu_profile.versions import package_versions

WAIT_SLICE_S = 0.5


def describe_error(error: BaseException) -> str:
    """One line: the root cause of a Ray task error rather than its whole traceback."""
    import ray.exceptions as rex

    if isinstance(error, rex.RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, rex.ActorDiedError):
        return "actor process died" + (f": {error.error_msg.splitlines()[0]}" if getattr(error, "error_msg", "") else "")
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


class Run:
    def __init__(self, config: RunConfig, argv: list[str], progress: Progress, actor_logs: bool = False):
        self.config = config
        self.actor_logs = actor_logs
        self.argv = argv
        self.progress = progress
        self.run_id = layout.new_run_id()
        self.tiny_model = config.model is None
        model = config.model or str(default_tiny_model_dir())
        self.engine_argv = engine.engine_argv(model, config.engine_argv, self.tiny_model)
        self.records: list[HostRecord] = []
        self.stage = "validate"
        self.error: str | None = None
        self.stopped = False
        self.run_dir: Path | None = None
        self.local_root = config.profile_result_dir
        """Where the run directory is built on this machine; for a remote result URL a
        temporary one holding the driver's files and the traces it reads back."""
        self.result_url = f"{config.profile_result_url}/{self.run_id}" if config.profile_result_url else None
        self.cluster_info: dict[str, Any] = {}
        self.capture = config.capture
        self.capture_info: dict[str, Any] = {"profiler": config.capture.profiler}
        # Driver wall time per stage, for the summary and bench/overhead.py.
        self.timings_s: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._stage_t0: float | None = None
        self.stop_signals = StopSignals()
        self.shape_info: dict[str, dict[str, Any]] = {}
        """Per shape: its tag, capture instant, window, session, skew."""

    # -- validation that needs no cluster: raises ConfigError ------------------------
    def validate(self) -> None:
        self.capture, why = self.config.capture.resolve()
        self.capture_info = {"profiler": self.capture.profiler, "chosen_by": why}
        self.engine_args = engine.parse_engine_args(self.engine_argv)
        for workload in self.config.workloads:
            engine.check_engine_args(self.engine_args, workload)

    @property
    def actor_env(self) -> dict[str, str]:
        """Env of every model process: the tool's, then the user's --env (which wins)."""
        return {**engine.ENGINE_ENV, **dict(self.config.placement.env)}

    def choose_hosts(self, found: list[Host]) -> tuple[list[Host], bool]:
        """The hosts to profile among those found (ConfigError when the cluster cannot
        serve the request), and whether they are a whole TPU slice."""
        placement = self.config.placement
        hosts = select_hosts(found, placement.hosts, placement.slice_name)
        check_tensor_parallel_fits(self.engine_args.tensor_parallel_size, hosts)
        whole_slice = hosts[0].slice_name is not None and len(hosts) == len(select_slice(found, hosts[0].slice_name))
        return hosts, whole_slice

    def plan(self) -> dict[str, Any]:
        """What `run` would do, without loading a model: for `ray-tpu-profile plan`."""
        self.validate()
        placement = self.config.placement
        with cluster.ray_session(placement.address, placement.simulated_hosts, log_to_driver=False) as info:
            found = cluster.discover_hosts()
            hosts, whole_slice = self.choose_hosts(found)
        slices = sorted({h.slice_name for h in found if h.slice_name})
        return {
            "cluster": info,
            "slices": [
                {"name": s, "hosts": [h.name for h in found if h.slice_name == s],
                 "pod_type": next(h.pod_type for h in found if h.slice_name == s)}
                for s in slices
            ],
            "hosts": [h.to_json() for h in hosts],
            "placement": {
                "reservation": cluster.reservation_kind(hosts, whole_slice),
                "bundles": [{"TPU": h.chips} for h in hosts],
                "strategy": "STRICT_SPREAD",
            },
            "actors": [{"name": f"ray-tpu-profile-<run-id>-{h.name}", "host": h.name, "node_id": h.node_id,
                        "chips": h.chips} for h in hosts],
            "workload": {"shape": self.config.workloads[0].shape, **_asdict(self.config.workloads[0]),
                         "shapes": [w.shape for w in self.config.workloads]},
            "capture": {**self.capture_info, "delay_ms": self.capture.delay_ms, "duration_ms": self.capture.duration_ms},
            "engine": {"argv": self.engine_argv, "tensor_parallel_size": self.engine_args.tensor_parallel_size,
                       "env": layout.redacted_env(self.actor_env)},
        }

    # -- the run --------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Runs to the end and returns the manifest. ConfigError escapes before anything
        is created; after that, every failure ends up in the manifest."""
        self._t0 = time.monotonic()
        self.validate()
        self.progress.note(f"profiler: {self.capture_info['profiler']} ({self.capture_info['chosen_by']})")
        self.timings_s["validate"] = self._since(self._t0)
        placement = self.config.placement
        cluster_t0 = time.monotonic()
        # The SIGTERM handler goes in after ray.init: Ray installs its own, which aborts.
        with cluster.ray_session(
            placement.address, placement.simulated_hosts, log_to_driver=self.actor_logs
        ) as info, self.stop_signals:
            self.timings_s["cluster_start"] = self._since(cluster_t0)
            self.cluster_info = info
            hosts, whole_slice = self.choose_hosts(cluster.discover_hosts())
            self.records = [HostRecord(host=h) for h in hosts]
            if self.result_url:
                self.local_root = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-"))
            self.run_dir = layout.staging_dir(self.local_root, self.run_id)
            self.run_dir.mkdir(parents=True)
            reservation = None
            try:
                self._enter("place")
                reservation = cluster.reserve_hosts(hosts, self.run_id, placement.stage_timeout_s, whole_slice)
                self.cluster_info["reservation"] = reservation.kind
                self.actors = cluster.start_actors(reservation, hosts, self.run_id, self.actor_env)
                self._run_stages()
            except (KeyboardInterrupt, RunStopped) as e:
                self.stopped = True
                self.error = f"stopped during {self.stage} ({'SIGINT' if isinstance(e, KeyboardInterrupt) else e.signal_name})"
                self.progress.host_failed(self.stage, "all", self.error)
            except Exception as e:  # recorded in the manifest and reflected in the exit code
                self.error = f"{self.stage}: {describe_error(e)}"
                for r in self.records:
                    if r.status == "pending":
                        r.fail(self.stage, self.error)
                self.progress.host_failed(self.stage, "all", self.error)
            finally:
                if reservation is not None:
                    reservation.release()
                manifest = self._finish()
        return manifest

    def _run_stages(self) -> None:
        timeout_s = self.config.placement.stage_timeout_s
        env = self.actor_env
        identities = self._stage("place", lambda a: a.identity.remote(tuple(env)), timeout_s)
        for r in self._healthy():
            identity = identities[r.host.name]
            r.pid, r.scratch_dir = identity["pid"], identity["output_dir"]
            if identity["node_id"] != r.host.node_id:
                r.fail("place", f"actor landed on node {identity['node_id']}, not {r.host.node_id}")
            missing = sorted(k for k, v in env.items() if identity["env"].get(k) != v)
            if missing:  # users report env vars that never reach Ray workers: check, don't assume
                r.fail("place", f"env var(s) {', '.join(missing)} did not reach the model process")
        capture, workloads = self.capture, self.config.workloads
        self._stage(
            "load",
            lambda a: a.load.remote(self.engine_argv, workloads[0], capture, self.run_id, self.tiny_model),
            timeout_s,
            lambda r, phase: setattr(r, "load", phase) or f"{phase.duration_s:.2f} s",
        )
        for workload in workloads:
            self._run_shape(workload, timeout_s)
        self._gather(timeout_s)
        for workload in workloads:
            shape = self.shape_info[workload.shape]
            if capture.uses_server:
                self._verify_xplanes(workload.shape, shape)
            elif capture.phase != "all":
                self._verify_torch_steps(workload.shape, shape)
        # The top-level fields of capture describe the first shape (the only one outside a
        # sweep), as HostRecord's do; a sweep has every shape under `shapes`.
        first = self.shape_info[workloads[0].shape]
        self.capture_info.update({k: v for k, v in first.items() if k != "tag"})
        self._close_stage()
        self.stage = "done"

    def _run_shape(self, workload, timeout_s: float) -> None:
        """Warm up (barrier), place the window, capture at one instant: one shape."""
        capture, tag = self.capture, workload.shape if self.config.sweep else None
        info: dict[str, Any] = {"tag": tag}
        self.shape_info[workload.shape] = info
        if self.config.sweep:
            loads = self._stage("shape", lambda a: a.set_shape.remote(workload, tag), timeout_s,
                                lambda r, n: f"{workload.shape} (model loads so far: {n})")
            info["loads"] = loads

        def keep(key: str):
            def on_result(record: HostRecord, phase) -> str:
                record.shapes.setdefault(workload.shape, {})[key] = phase
                return _mean_text(phase.latencies_s)
            return on_result

        self._stage("warmup", lambda a: a.warmup.remote(), timeout_s, keep("warmup"))
        window = self._phase_window(workload, timeout_s) if capture.phase != "all" and self._healthy() else None
        delay_ms = window["delay_ms"] if window and window["kind"] == "time" else capture.delay_ms
        # One instant for every host, picked once all are warm (the barrier above).
        at_ns = schedule.capture_instant_ns(time.time_ns())
        iterations_ns, trace_ns = schedule.capture_instants_ns(at_ns, delay_ms, lead_in=window is None)
        info.update(instant_ns=at_ns, iterations_start_ns=iterations_ns, trace_start_ns=trace_ns, delay_ms=delay_ms,
                    phase=capture.phase)
        self._stage("capture", lambda a: a.profile.remote(iterations_ns, trace_ns, window), timeout_s, keep("profiled"))
        if self._healthy():
            described = self._call_one(self._healthy()[0], lambda a: a.capture_info.remote(), timeout_s)
            info.update({k: v for k, v in described.items() if k not in info})
            info.setdefault("duration_ms", capture.duration_ms)
        if window is not None:
            info["window"] = window

    def _healthy(self) -> list[HostRecord]:
        return [r for r in self.records if r.healthy]

    @staticmethod
    def _since(t0: float) -> float:
        return round(time.monotonic() - t0, 4)

    def _close_stage(self) -> None:
        if self._stage_t0 is not None:
            self.timings_s[self.stage] = self._since(self._stage_t0)
            self._stage_t0 = None

    def _enter(self, stage: str) -> None:
        self._close_stage()
        self.stage = stage
        self._stage_t0 = time.monotonic()
        for r in self._healthy():
            r.stage = stage
        self._write_manifest()

    def _call_one(self, record: HostRecord, call: Callable, timeout_s: float) -> Any:
        import ray

        return ray.get(call(self.actors[record.host.name]), timeout=timeout_s)

    def _stage(self, stage: str, call: Callable, timeout_s: float, on_result: Callable | None = None) -> dict[str, Any]:
        """Call every healthy host, wait for all (the barrier), record failures per host."""
        import ray

        self._enter(stage)
        healthy = self._healthy()
        self.progress.stage(stage, [r.host.name for r in healthy])
        by_ref = {call(self.actors[r.host.name]): r for r in healthy}
        results: dict[str, Any] = {}
        pending = list(by_ref)
        deadline = time.monotonic() + timeout_s
        while pending:
            # Short slices so a stop signal is seen within WAIT_SLICE_S.
            done, pending = ray.wait(pending, num_returns=1, timeout=min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
            self.stop_signals.check()
            if not done:
                if time.monotonic() < deadline:
                    continue
                break
            record = by_ref[done[0]]
            try:
                result = ray.get(done[0])
            except Exception as e:  # one host's failure is recorded, the others go on
                record.fail(stage, describe_error(e))
                self.progress.host_failed(stage, record.host.name, record.error)
                continue
            results[record.host.name] = result
            detail = on_result(record, result) if on_result else "ready"
            self.progress.host_ok(stage, record.host.name, detail)
        for ref in pending:
            record = by_ref[ref]
            record.fail(stage, f"timed out after {timeout_s:g} s (--timeout-s)")
            self.progress.host_failed(stage, record.host.name, record.error)
            ray.kill(self.actors[record.host.name], no_restart=True)
        return results

    def _gather(self, timeout_s: float) -> None:
        from ray_tpu_profile.gather import gather_host, upload_host

        self._enter("gather")
        healthy = self._healthy()
        self.progress.stage("gather", [r.host.name for r in healthy])

        def one(record: HostRecord) -> None:
            actor = self.actors[record.host.name]
            try:
                if self.result_url:
                    upload_host(actor, record.host.name, self.result_url, self.run_dir, timeout_s,
                                self.stop_signals.check, record.files)
                else:
                    gather_host(actor, record.host.name, self.run_dir, timeout_s, self.stop_signals.check, record.files)
                if not record.files:
                    raise RuntimeError("the capture wrote no file")
                self._call_one(record, lambda a: a.cleanup.remote(), timeout_s)
            except Exception as e:  # recorded per host; other hosts' gathers go on
                record.fail("gather", describe_error(e))
                self.progress.host_failed("gather", record.host.name, record.error)
                return
            record.status = "ok"
            total = sum(f["bytes"] for f in record.files)
            where = (f"written by the host to {self.result_url}, traces read back and sha256 verified" if self.result_url
                     else "sha256 verified")
            self.progress.host_ok("gather", record.host.name, f"{len(record.files)} file(s), {total:,} bytes, {where}")

        with ThreadPoolExecutor(max_workers=max(1, len(healthy))) as pool:
            list(pool.map(one, healthy))
        self.stop_signals.check()

    def _phase_window(self, workload, timeout_s: float) -> dict[str, Any] | None:
        """The window that holds only --phase, from what the hosts measured in warmup
        (WindowError, naming what would fit, when it cannot; None: no host is left)."""
        capture, healthy = self.capture, self._healthy()
        if capture.uses_server:
            if capture.phase == "decode":
                # The profiled iteration will be traced, and the tracer slows the host side
                # (prefill took up to 2.3x its untraced time on CPU): each host runs one more
                # warmup iteration under a throwaway trace so decode starts after a traced
                # prefill. (A prefill window ends at the earliest prefill end: untraced
                # timings already keep it inside.)
                def keep(record: HostRecord, phase) -> str:
                    record.shapes.setdefault(workload.shape, {})["traced"] = phase
                    return f"traced warmup iteration: prefill over {phase.prefill_s[0] * 1000:.1f} ms"

                # At one instant on every host, as the capture will be: hosts that share cores
                # slow each other's prefill then (2 simulated hosts on 2 cores: a prefill timed
                # at 11 ms apart took 32 ms in the capture).
                at_ns = schedule.capture_instant_ns(time.time_ns())
                self._stage("window", lambda a: a.traced_iteration.remote(at_ns), timeout_s, keep)
            else:
                self._enter("window")
            done = {r.host.name: r.shapes[workload.shape] for r in self._healthy()}
            if not done:
                return None

            def samples(d: dict, key: str) -> tuple[float, ...]:
                # The first warmup iteration also warmed up the profiler: left out.
                warmup = getattr(d["warmup"], key)
                return (warmup[1:] or warmup) + (getattr(d["traced"], key) if "traced" in d else ())

            # Per host the extreme the window must clear, not a median: the profiled
            # iteration varies. Decode: the latest prefill end and earliest last token;
            # prefill: the earliest prefill end.
            pick = max if capture.phase == "decode" else min
            window = schedule.phase_time_window(
                capture.phase,
                {name: pick(samples(d, "prefill_s")) for name, d in done.items()},
                {name: min(samples(d, "end_s")) for name, d in done.items()},
                capture.duration_ms if capture.duration_given else None,
                measured_in="warmup iterations" + (", one of them traced," if capture.phase == "decode" else "")
                + " per host",
            )
        else:
            self._enter("window")
            steps = self._call_one(healthy[0], lambda a: a.prefill_steps.remote(), timeout_s)
            window = schedule.phase_step_window(capture.phase, steps, workload.output_len)
        detail = (f"delay {window['delay_ms']} ms, duration {window['duration_ms']} ms" if window["kind"] == "time"
                  else f"vLLM delay_iterations {window['delay_iterations']}, max_iterations {window['max_iterations']}")
        self.progress.note(f"{capture.phase} window: {detail} ({window['chosen_from']})")
        return window

    def _verify_torch_steps(self, shape: str, info: dict[str, Any]) -> None:
        """The torch trace names every engine step by its prefill/decode work: the captured
        steps must all be of --phase."""
        from ray_tpu_profile.steps import check_phase, torch_trace_steps

        self._enter("verify")
        phase = self.capture.phase
        for record in self._healthy():
            counts = {"prefill": 0, "decode": 0}
            folder = f"hosts/{record.host.name}/torch/" + (f"{info['tag']}/" if info["tag"] else "")
            for f in record.files:
                if f["path"].startswith(folder) and "/" not in f["path"][len(folder):] and f["path"].endswith(".pt.trace.json.gz"):
                    for kind, n in torch_trace_steps(self.run_dir / f["path"]).items():
                        counts[kind] += n
            record.shapes.setdefault(shape, {})["capture"] = {"steps": counts}
            problem = check_phase(phase, counts)
            if problem:
                record.fail("verify", problem)
                self.progress.host_failed("verify", record.host.name, problem)
            else:
                self.progress.host_ok("verify", record.host.name, f"{counts[phase]} {phase} step(s), no other")

    def _verify_xplanes(self, shape: str, info: dict[str, Any]) -> None:
        """Each host must have delivered exactly its own xplane, readable by xprof. Its
        profile_start_time is when tracing really began there: the skew comes from it."""
        from ray_tpu_profile.xplane import XplaneError, read_xplane

        self._enter("verify")
        planned_ns = info["trace_start_ns"]
        # None: the backend's own window (--phase all), or no host was left to place one
        window = info.get("window") if self.capture.phase != "all" else None
        session = f"{self.run_id}-{info['tag']}" if info["tag"] else self.run_id
        starts = {}
        for record in self._healthy():
            expected = f"plugins/profile/{session}/{record.host.name}.xplane.pb"
            try:
                if expected not in {f["path"] for f in record.files}:
                    raise XplaneError(f"the capture wrote no {expected}")
                xplane = read_xplane(self.run_dir / expected)
            except XplaneError as e:
                record.fail("verify", str(e))
                self.progress.host_failed("verify", record.host.name, record.error)
                continue
            profiled = record.shapes.get(shape, {}).get("profiled")
            problem = _phase_problem(window, profiled, xplane) if window else None
            if problem:
                record.fail("verify", problem)
                self.progress.host_failed("verify", record.host.name, problem)
                continue
            starts[record.host.name] = xplane.start_ns
            checked = record.shapes.setdefault(shape, {})["capture"] = {
                "xplane": expected,
                "start_ns": xplane.start_ns,
                "stop_ns": xplane.stop_ns,
                "start_offset_ms": (xplane.start_ns - planned_ns) / schedule.NS_PER_MS,
                "events": xplane.events,
            }
            self.progress.host_ok(
                "verify", record.host.name,
                f"{shape}: {xplane.events:,} events, trace began {checked['start_offset_ms']:+.3f} ms from the plan",
            )
        info["session"] = session
        info["start_skew_ms"] = schedule.spread_ms(starts)
        if starts:
            self.progress.note(f"{shape}: capture start skew across {len(starts)} host(s): {info['start_skew_ms']:.3f} ms")

    # -- the manifest -----------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return layout.build_manifest(
            run_id=self.run_id,
            status=layout.run_status(self.records, self.stopped),
            stage=self.stage,
            error=self.error,
            command=layout.redacted_argv(self.argv),
            versions=package_versions(),
            workload={"shape": self.config.workloads[0].shape, **_asdict(self.config.workloads[0]),
                      "shapes": [w.shape for w in self.config.workloads]},
            capture={**self.capture_info, **({"shapes": self.shape_info} if self.config.sweep else {})},
            cluster={**self.cluster_info, "hosts_requested": self.config.placement.hosts,
                     "slice_requested": self.config.placement.slice_name},
            engine={"argv": self.engine_argv, "env": layout.redacted_env(self.actor_env), "tiny_model": self.tiny_model},
            timings_s=self.timings_s,
            records=self.records,
            result_url=self.result_url,
        )

    def _write_manifest(self) -> dict[str, Any]:
        data = self.manifest()
        if self.run_dir is not None:
            layout.write_json_atomic(self.run_dir / layout.MANIFEST, data)
        return data

    def _finish(self) -> dict[str, Any]:
        """Write manifest and latency, then rename the staging directory to its final name."""
        self._close_stage()
        self.timings_s["total"] = self._since(self._t0)
        for r in self.records:
            if r.status == "pending":
                r.fail(self.stage, self.error or f"did not finish (run ended during {self.stage})")
        data = self._write_manifest()
        layout.write_json_atomic(self.run_dir / layout.LATENCY, layout.build_latency([w.shape for w in self.config.workloads], self.records))
        final = self.local_root / self.run_id
        os.replace(self.run_dir, final)
        self.run_dir = final
        return data


def _phase_problem(window: dict, profiled, info) -> str | None:
    """Whether the trace [start, stop] of a host lies inside --phase of its first profiled
    iteration, per vLLM's request metrics (prefill over at the first token of every request)."""
    if not profiled or not profiled.prefill_s:
        return "no request metrics from the profiled iteration to check the phase against"
    t0_ns = profiled.iteration_starts_s[0] * 1e9
    prefill_end_ns, end_ns = t0_ns + profiled.prefill_s[0] * 1e9, t0_ns + profiled.end_s[0] * 1e9
    ms = lambda ns: (ns - t0_ns) / 1e6  # noqa: E731 - offsets into the iteration, for the message
    if window["phase"] == "decode" and not (info.start_ns >= prefill_end_ns and info.stop_ns <= end_ns):
        return (f"--phase decode: trace {ms(info.start_ns):.1f}-{ms(info.stop_ns):.1f} ms is not inside decode "
                f"{ms(prefill_end_ns):.1f}-{ms(end_ns):.1f} ms of the profiled iteration")
    if window["phase"] == "prefill" and not (info.start_ns < prefill_end_ns and info.stop_ns <= prefill_end_ns):
        return (f"--phase prefill: trace {ms(info.start_ns):.1f}-{ms(info.stop_ns):.1f} ms is not inside prefill "
                f"(over at {ms(prefill_end_ns):.1f} ms) of the profiled iteration")
    return None


def _mean_text(latencies: tuple[float, ...]) -> str:
    return f"{len(latencies)} iteration(s), mean {sum(latencies) / len(latencies):.3f} s" if latencies else "no iterations"


def _asdict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(obj)


class StopSignals:
    """SIGTERM (`ray job stop`, kill) and SIGINT (Ctrl-C) set a flag that the run checks
    between waits, then winds down: actors released, what was captured kept. A flag, not
    an exception from the handler: raised inside Ray's blocking calls it comes out as
    SystemError."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.event = threading.Event()
        self.signal_name: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise RunStopped(self.signal_name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> bool:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
