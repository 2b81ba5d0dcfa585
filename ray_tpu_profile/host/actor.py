"""The per-host actor: owns one vLLM engine and one capture backend, in one process.

Plain class; cluster.py wraps it with ray.remote. Every method returns plain data.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ray_tpu_profile.config import Capture, Workload
from ray_tpu_profile.core import host_clock
from ray_tpu_profile.core.records import EngineRole, PhaseTiming
from ray_tpu_profile.core.schedule import Window
from ray_tpu_profile.host.clock_echo import ClockEchoHost
from ray_tpu_profile.host.files import HostFiles
from ray_tpu_profile.host.iterations import HostIterations
from ray_tpu_profile.host.summaries import HostSummaries


class HostActor(ClockEchoHost, HostFiles, HostIterations, HostSummaries):
    """One host's side of a run: its vLLM engine and capture backend in this process, and
    the files they wrote (under output_dir) until the driver has them. Every call returns
    plain data (records.PhaseTiming, FileEntry, dicts); an error raised here fails this host at
    the driver's current stage and no other.

    Args:
        host_name: the host's name in the run (hosts.Host.name): trace files and sessions carry it.
        run_id: the run's id; output_dir is <scratch_root>/ray-tpu-profile-<run_id>-<host_name>-<random>,
            made 0700 (mkdtemp): a name no other user can guess or take first, nor read from.
        scratch_root: where the host writes before the gather (default: the system temp dir).
        env: variables this process sets in its own env before anything reads them (those
            read late, when the engine is built: cluster.start_actors).
    """

    def __init__(self, host_name: str, run_id: str, scratch_root: str | None = None, env: dict[str, str] | None = None):
        os.environ.update(env or {})
        self.host_name = host_name
        # Everything this host hands back lives under output_dir; nothing else is sent.
        self.output_dir = Path(tempfile.mkdtemp(prefix=f"ray-tpu-profile-{run_id}-{host_name}-", dir=scratch_root))
        self.worker_leftovers: list[Path] = []
        """What this host's engine workers make and never remove, removed at cleanup: the
        file each rendezvoused through (engine.file_store for an in-process engine;
        engine_workers.identify for one across hosts) and, across hosts, the directory of
        each one's capture socket (its workers are killed, not closed)."""
        self.engine = None
        self.backend = None
        self.loads = 0
        """Models loaded by this actor: a sweep must load once."""
        self.last_warmup: PhaseTiming | None = None

    def identity(self, env_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """Where this actor runs, and the values of env_keys as this process sees them."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "output_dir": str(self.output_dir),
            "env": {key: os.environ.get(key) for key in env_keys},
        }

    def clock_ns(self) -> int:
        """This host's clock, for the driver's fallback clock exchange over actor calls."""
        return host_clock.now_ns()

    def clock_state(self, echo_token: bytes | None = None, driver_ip: str | None = None) -> dict[str, Any]:
        """This host's kernel clock discipline, whether it is simulated (sharing the machine's
        clock), and, given the driver's token and address, its clock echo ("echo")."""
        from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV

        ntp = host_clock.ntp_state()
        echo = self.open_clock_echo(echo_token, driver_ip) if echo_token and driver_ip else None
        return {
            "ntp": ntp.to_json() if ntp else None,
            "simulated": os.environ.get(SIMULATED_TPU_ENV) == "1",
            "echo": echo,
        }

    def load(
        self,
        engine_argv: list[str],
        workload: Workload,
        capture: Capture,
        session_id: str,
        tiny_model: bool,
        role: EngineRole | None = None,
    ) -> PhaseTiming:
        """The capture backend, and the engine where it runs here: in this process for an
        engine within one host (its capture too); for an engine across hosts, on
        its owner, with vLLM's Ray executor placing a worker per chip on every host of it.
        Any other host of such an engine loads nothing: its worker belongs to the owner."""
        import ray

        from ray_tpu_profile.host.engine import Engine, file_store, parse_engine_args
        from ray_tpu_profile.profilers import make_backend
        from ray_tpu_profile.sim_platform import tpu_inference_cpu

        started = time.time()
        self.role = role or EngineRole(self.host_name, owner=True, spans_hosts=False, ranks=())
        self.backend = make_backend(capture, self.output_dir, self.host_name, session_id)
        if not self.role.owner:
            return PhaseTiming(started_at_s=started, finished_at_s=time.time())
        self.loads += 1
        engine_args = parse_engine_args(engine_argv)
        if tiny_model:
            from ray_tpu_profile.host.tiny_model import ensure_tiny_model

            # Built on this host (same seed, same weights everywhere): hosts share no disk.
            engine_args.model = str(ensure_tiny_model())
        if self.role.spans_hosts:
            engine_args.distributed_executor_backend = "ray"
            # vLLM's TPU stack on simulated hosts: its workers' JAX cluster, coordinated here.
            tpu_inference_cpu.share_jax_cluster(ray.util.get_node_ip_address(), self.role.node_ids)
        self.backend.configure(engine_args, self.role.engine if self.role.spans_hosts else None)
        self.engine = Engine.build(engine_args, workload)
        if not self.role.spans_hosts:
            # Asked first: a host whose attach fails still has its engine's file removed.
            self.worker_leftovers = [store] if (store := file_store(self.engine.llm)) else []
            self.backend.attach(self.engine.llm)
        return PhaseTiming(started_at_s=started, finished_at_s=time.time())

    def engine_workers(self) -> list[dict[str, Any]] | None:
        """The owner of an engine across hosts: every worker's rank, pid and node, with a
        capture socket opened in each for a time-window backend (engine_workers.py), and the
        directory its torch traces go to on each host. None on any other host."""
        from ray_tpu_profile.host import engine_workers

        if not (self.role.spans_hosts and self.role.owner):
            return None
        llm = self.engine.llm
        if getattr(self.backend, "uses_server", False):
            workers = llm.collective_rpc(engine_workers.open_capture_socket, args=(self.backend.name,))
        else:
            workers = llm.collective_rpc(engine_workers.identify)
        trace_dir = getattr(self.backend, "engine_dir", None)
        return [{**w, "trace_dir": str(trace_dir(self.role.engine).resolve())} if trace_dir else w for w in workers]

    def trace_worker(self, worker: dict[str, Any], node_workers: list[dict[str, Any]] | None = None) -> float:
        """This host traces that worker of its engine (on this host); returns how long its
        capture socket took to answer (0 for torch). node_workers: its engine's workers on
        this host (engine_workers' reports), whose leftovers it removes at cleanup."""
        self.worker = worker
        self.worker_leftovers = worker_leftovers(node_workers or [])
        self.backend.trace_worker(worker)
        return getattr(self.backend, "server_wait_s", 0.0)

    def worker_alive(self) -> bool:
        """Whether the worker process this host traces still runs (it is on this host)."""
        import psutil

        return psutil.pid_exists(self.worker["pid"])

    def cleanup(self) -> None:
        """The scratch directory (HostFiles.cleanup), and what this host's engine workers
        leave (worker_leftovers): they and the actor are killed, not shut down, so it would
        stay in the host's temp dir after every run."""
        super().cleanup()
        self._remove_worker_leftovers()

    def cleanup_if_empty(self) -> list[str]:
        """A failed host's: its scratch as HostFiles.cleanup_if_empty, and its engine
        workers' leftovers (they hold nothing of the run)."""
        self._remove_worker_leftovers()
        return super().cleanup_if_empty()

    def _remove_worker_leftovers(self) -> None:
        for path in self.worker_leftovers:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def collect_traces(self) -> list[str]:
        """An engine across hosts, after a capture: this host's ranks' trace files, moved
        into its output directory."""
        return self.backend.collect(self.role.ranks, self.role.engine)

    # profile() = start_capture + run_profiled + finish_capture; the parts are separate
    # so bench/skew.py can also start captures one host after another (the naive way).
    def set_shape(self, workload: Workload, shape_tag: str | None) -> int:
        """Switch the loaded model to another shape of a sweep; returns the load count."""
        self.engine.set_workload(workload)
        self.backend.set_shape(shape_tag)
        return self.loads

    def start_capture(self, trace_start_ns: int | None, window: Window | None = None) -> None:
        self.backend.start(self.engine.llm if self.engine else None, trace_start_ns, window)

    def prefill_steps(self) -> int:
        from ray_tpu_profile.host.engine import prefill_steps

        return prefill_steps(self.engine)

    def finish_capture(self) -> None:
        self.backend.stop(self.engine.llm if self.engine else None)

    def profile(self, iterations_start_ns: int, trace_start_ns: int, window: Window | None = None) -> PhaseTiming:
        """Capture around the profiled iterations (both instants from
        schedule.capture_instants_ns); the phase spans profiler start to stop (trace
        written), its latencies and marks are the iterations'."""
        started = time.time()
        self.start_capture(trace_start_ns, window)
        try:
            iterations = self.run_profiled(iterations_start_ns)
        finally:
            self.finish_capture()
        return dataclasses.replace(iterations, started_at_s=started, finished_at_s=time.time())

    def last_capture_start_ns(self, session_id: str) -> int:
        """When this host's last xplane says tracing began (for bench/skew.py)."""
        from ray_tpu_profile.analysis.xplane import read_xplane

        path = self.output_dir / "xplane" / "plugins" / "profile" / session_id / f"{self.host_name}.xplane.pb"
        return read_xplane(path).start_ns

    def xplane_checks(self) -> dict[str, dict[str, Any]]:
        """Session -> this host's reading of its own xplane (time_window.check_xplane)."""
        return dict(getattr(self.backend, "xplane_checks", {}))

    def capture_info(self) -> dict[str, Any]:
        return self.backend.describe()

    def stand_ins(self) -> dict[str, str]:
        """The parts of vLLM's TPU stack standing in here (tpu_inference_cpu.stand_ins_here)."""
        from ray_tpu_profile.sim_platform import tpu_inference_cpu

        return tpu_inference_cpu.stand_ins_here()


def worker_leftovers(workers: list[dict[str, Any]]) -> list[Path]:
    """What engine workers made and leave behind when killed, from what they reported
    (engine_workers.identify, open_capture_socket): each one's process-group file and its
    capture socket's directory."""
    from ray_tpu_profile.profilers.capture_socket import listener_directory

    paths = [Path(w["process_group_file"]) for w in workers if w.get("process_group_file")]
    directories = (listener_directory(w["socket"]) for w in workers if w.get("socket"))
    return paths + [d for d in directories if d is not None]
