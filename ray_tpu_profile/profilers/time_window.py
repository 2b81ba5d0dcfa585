"""The time-window backends (JAX's XLA profiler, torch_xla's): a trace of the model's
process from an instant, for a duration, taken in that process itself. Three triggers:

- in-process (the default): the host's actor runs the model and calls the profiler's
  in-process session (in_process.capture) at the instant;
- capture socket: another process on the host (a worker of an engine across hosts, a live
  vLLM process under `attach`) is asked over its Unix socket (capture_socket) to do so;
- --profiler-port: a TSL profiler server the model process already runs (for example
  tpu-inference's JAX_PROFILER_SERVER_PORT), traced with xprof's gRPC client on localhost.

The tool itself opens no port (issue 25: a TSL server listens on every interface)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_tpu_profile.core import host_clock
from ray_tpu_profile.core.host_clock import now_ns
from ray_tpu_profile.core.schedule import NS_PER_MS, TimeWindow, plan_again, split_trace_delay
from ray_tpu_profile.errors import ToolError
from ray_tpu_profile.profilers.base import CaptureBackend
from ray_tpu_profile.profilers.in_process import NO_EVENTS

XPLANE_DIR = "xplane"
"""Under the host's output dir: <XPLANE_DIR>/plugins/profile/<session>/<host>.xplane.pb."""


WARMUP_CAPTURE_MS = 50
WARMUP_CAPTURE_ATTEMPTS = 3
"""The first capture in a process can come back empty: its tracer set-up may outlast its
50 ms window (slower under load). That is what the warm-up is for, so it tries again."""
TRACED_LEAD_IN_MS = 20
"""Between that trace's start and its iteration's: the iteration must lie inside the trace,
and a start on a loaded host was seen up to 5 ms late."""


class ServerNotReady(ToolError, RuntimeError):
    pass


class NotThisProcess(ToolError, RuntimeError):
    """--profiler-port names a port another process listens on, not the model process."""


def listens_here(port: int, pid: int | None = None) -> bool:
    """Whether process pid (default: this one) holds a listening TCP socket on port."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def profiler_kind_here(find_spec: Callable[[str], Any] | None = None) -> str:
    """The profiler this Python environment's vLLM stack runs on: torch_xla's where torch_xla
    is installed without tpu-inference, else JAX's (as --profiler auto chooses)."""
    import importlib.util

    find = find_spec or importlib.util.find_spec
    return "xla" if find("torch_xla") is not None and find("tpu_inference") is None else "jax"


def free_local_port() -> int:
    """A port free right now on this host (the OS picks; never a fixed 9012)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trace_with_xprof(
    service_addr: str,
    logdir: str,
    duration_ms: int,
    delay_ms: int,
    *,
    session_id: str,
    host_name: str,
    python_tracer_level: int = 1,
) -> None:
    """xprof's client for any TSL profiler server (JAX's and torch_xla's alike). Writes
    <logdir>/plugins/profile/<session_id>/<host_name>.xplane.pb."""
    from xprof.convert import _pywrap_profiler_plugin

    _pywrap_profiler_plugin.trace(
        service_addr,
        logdir,
        "",  # worker_list: non-empty answers UNIMPLEMENTED outside Cloud TPU
        True,
        duration_ms,
        1,  # one attempt: a dead server must fail now, not after retries
        {
            "session_id": session_id,
            "override_hostnames": host_name,
            "host_tracer_level": 2,
            "device_tracer_level": 1,
            # Records Python calls: on CPU the only events; on TPU, vLLM's host side.
            "python_tracer_level": python_tracer_level,
            "delay_ms": delay_ms,
        },
    )


def wait_until_ns(instant_ns: int) -> None:
    """Block until this host's clock reaches instant_ns: the scheduled start the driver
    gave it (its instant in this host's clock), not a guessed delay."""
    remaining_s = (instant_ns - now_ns()) / 1e9
    if remaining_s > 0:
        threading.Event().wait(remaining_s)


def wait_for_server(port: int, timeout_s: float, poll_s: float = 0.05) -> float:
    """Until the server accepts connections on localhost:port; returns seconds waited.
    Bounded: raises ServerNotReady after timeout_s (clients' own retries last 120 s)."""
    start = time.monotonic()
    last_error: OSError | None = None
    while time.monotonic() - start < timeout_s:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=poll_s * 10):
                return time.monotonic() - start
        except OSError as e:
            last_error = e
            threading.Event().wait(poll_s)  # polling a condition with a deadline
    raise ServerNotReady(
        f"profiler server on localhost:{port} did not answer within {timeout_s:g} s "
        f"({last_error.strerror if last_error else 'no attempt'}); is it running in the model process?"
    )


def timed_client_call(start_ns: int) -> tuple[int, int]:
    """Wait until a TSL client call with a whole-millisecond delay begins tracing at
    start_ns; returns (that delay, how many times the call was planned). A late wake-up
    is planned again (schedule.plan_again)."""
    plans = 0
    while True:
        plans += 1
        call_at_ns, client_delay_ms = split_trace_delay(start_ns, now_ns())
        wait_until_ns(call_at_ns)
        if not plan_again(start_ns, call_at_ns, now_ns()):
            return client_delay_ms, plans


EMPTY_WINDOW_HINT = (
    " (the window held no traced work: did the profiled iterations end before tracing began? "
    "more --num-iters, or a window placed on them with --delay-ms / --duration-ms)"
)
"""Said after a capture's error when its window held nothing."""


def check_xplane(path: Path) -> dict[str, Any]:
    """An xplane read back where it was written (xprof, as the driver's verify would): its
    capture times, event count, process id and what XLA ran in it (device_traces.xla_work);
    {"error": why} for one xprof cannot read or that holds nothing; {"skipped": why} where
    xprof is not installed here (the driver then reads it itself). Every host reads its own
    at once, so the driver need not (issue 26)."""
    import importlib.util

    if importlib.util.find_spec("xprof") is None:
        return {"skipped": "xprof is not installed on this host"}
    from ray_tpu_profile.analysis.device_traces import xla_work
    from ray_tpu_profile.analysis.xplane import XplaneError, read_xplane

    try:
        info = read_xplane(path)
    except XplaneError as e:
        return {"error": str(e)}
    return {
        "start_ns": info.start_ns,
        "stop_ns": info.stop_ns,
        "planes": list(info.planes),
        "events": info.events,
        "process_id": info.process_id,
        "xla": xla_work(path).to_json(),
    }


class TimeWindowBackend(CaptureBackend):
    """Subclasses name the profiler (name) and its TSL server client (_server_client)."""

    uses_server = True
    """A time window (for capture_plans: not the torch profiler's engine steps)."""

    def __init__(
        self,
        trace_dir: Path,
        host_name: str,
        *,
        session_id: str,
        delay_ms: int,
        duration_ms: int,
        port: int | None = None,
        ready_timeout_s: float = 30.0,
        python_tracer_level: int = 1,
        real_time_start: bool = True,
    ):
        super().__init__(trace_dir, host_name)
        self.run_session_id = session_id
        self.session_id = session_id
        self.delay_ms = delay_ms
        self.duration_ms = duration_ms
        self.port = port
        """--profiler-port: the model process's own TSL server; None: no server."""
        self.socket_path: str | None = None
        self.traced_pid: int | None = None
        """The process the capture socket must belong to (None: this one, in-process)."""
        self.ready_timeout_s = ready_timeout_s
        self.python_tracer_level = python_tracer_level
        self.real_time_start = real_time_start
        self.start_wake_up: str | None = None
        """How the capture's starting thread woke at its instant (in_process.prompt_wake_up;
        None for --profiler-port, whose server starts the trace)."""
        self.server_wait_s = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.warmed_up = False
        self.warmup_capture_attempts: int | None = None
        """Throwaway captures it took to get one with events (see WARMUP_CAPTURE_ATTEMPTS)."""
        self.client_call_plans: int | None = None
        """--profiler-port: how many times the client call was planned (see schedule.plan_again)."""
        self.xplane_checks: dict[str, dict[str, Any]] = {}
        """Session -> this host's own reading of its xplane (check_xplane), for the driver's verify."""

    @property
    def trigger(self) -> str:
        """How a capture is started, for the manifest and messages."""
        if self.socket_path:
            return f"capture socket {self.socket_path}"
        if self.port:
            return f"profiler server localhost:{self.port}"
        return "in-process"

    def set_shape(self, shape_tag: str | None) -> None:
        """Each shape of a sweep is its own XProf session: <run>-<shape>."""
        super().set_shape(shape_tag)
        self.session_id = f"{self.run_session_id}-{shape_tag}" if shape_tag else self.run_session_id

    @abstractmethod
    def _server_client(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        """--profiler-port: blocking TSL client call that writes
        <logdir>/plugins/profile/<session>/<host>.xplane.pb."""

    def _trace_with_xprof(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        """_server_client through xprof's client, which names the session and host for us."""
        options = {"session_id": self.session_id, "host_name": self.host_name}
        trace_with_xprof(
            service_addr, logdir, duration_ms, delay_ms, **options, python_tracer_level=self.python_tracer_level
        )

    def _trace(self, logdir: Path, duration_ms: int, start_ns: int) -> str | None:
        """Trace from start_ns (this host's clock) for duration_ms; returns when the xplane
        is written under logdir, with how the starting thread woke (None: a server started it)."""
        if self.port:
            self._trace_server(logdir, duration_ms, start_ns)
            return None
        from ray_tpu_profile.profilers import capture_socket, in_process

        args = {
            "session_id": self.session_id,
            "host_name": self.host_name,
            # The profiler stamps and waits on the real wall clock, not a simulated host's view.
            "wall_start_ns": start_ns - host_clock.SHIFT_NS,
            "duration_ms": duration_ms,
            "python_tracer_level": self.python_tracer_level,
            "real_time_start": self.real_time_start,
        }
        if self.socket_path:
            captured = capture_socket.request_capture(self.socket_path, self.traced_pid, logdir=logdir, **args)
        else:
            captured = in_process.capture(self.name, logdir, **args)
        return captured.start_wake_up

    def _trace_server(self, logdir: Path, duration_ms: int, start_ns: int) -> None:
        """The TSL client, called so that tracing begins at start_ns (timed_client_call)."""
        delay_ms, self.client_call_plans = timed_client_call(start_ns)
        self._server_client(f"localhost:{self.port}", str(logdir), duration_ms, delay_ms)

    def attach(self, llm: Any) -> None:
        """In-process: what the capture needs is imported now (in_process.prepare).
        --profiler-port: the model process's own server must answer, and be this process's
        (simulated hosts share one localhost: another's would answer too)."""
        if not self.port:
            from ray_tpu_profile.profilers import in_process

            in_process.prepare(self.name)
        else:
            self.server_wait_s = wait_for_server(self.port, self.ready_timeout_s)
            if not listens_here(self.port):
                raise NotThisProcess(
                    f"--profiler-port {self.port}: another process listens there, not this model process"
                )

    def trace_worker(self, worker: dict[str, Any]) -> None:
        """An engine across hosts: trace its worker on this host, over the capture socket
        the worker opened (host.engine_workers)."""
        from ray_tpu_profile.profilers import capture_socket

        self.socket_path, self.traced_pid = worker["socket"], int(worker["pid"])
        started = time.monotonic()
        capture_socket.ping(self.socket_path, self.traced_pid)
        self.server_wait_s = time.monotonic() - started

    def warm_up(self, run_once: Callable[[], float] | None) -> list[float]:
        """A throwaway capture over warmup iterations. The first capture in a process pays
        for tracer set-up (seen: 190-640 ms), so the real one would start late by a different
        amount on every host; it also proves the capture works before the real window.
        Iterations run until it has finished, so its window always holds work (an empty
        capture is an error). Once per process: later warmups (the next shapes of a sweep)
        need none. The iterations run here are extra to --num-iters-warmup: the capture
        slows them (up to 4x on CPU), so they are no samples of the model's latency."""
        if self.warmed_up:
            return []
        scratch = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-warmup-"))
        errors: list[BaseException] = []

        def trace() -> None:
            for attempt in range(1, WARMUP_CAPTURE_ATTEMPTS + 1):
                try:
                    self._trace(scratch, WARMUP_CAPTURE_MS, now_ns())
                    self.warmup_capture_attempts = attempt
                    return
                except BaseException as e:  # re-raised below in the caller's thread
                    if NO_EVENTS not in str(e) or attempt == WARMUP_CAPTURE_ATTEMPTS:
                        errors.append(e)
                        return

        thread = threading.Thread(target=trace, name=f"warmup-capture-{self.host_name}", daemon=True)
        thread.start()
        latencies = []
        try:
            # Without iterations of its own (a host of an engine across hosts) the worker
            # traced here runs its owner's.
            while run_once and (not latencies or thread.is_alive()):
                latencies.append(run_once())
        finally:
            thread.join(timeout=WARMUP_CAPTURE_MS / 1000 + 60)
            shutil.rmtree(scratch, ignore_errors=True)
        if errors:
            raise RuntimeError(f"warm-up capture ({self.trigger}) failed: {errors[0]}") from errors[0]
        self.warmed_up = True
        return latencies

    def start(self, llm: Any, trace_start_ns: int | None = None, window: TimeWindow | None = None) -> None:
        if window is not None:
            self.delay_ms, self.duration_ms = window.delay_ms, window.duration_ms
        if trace_start_ns is None:  # not scheduled by the driver: from now
            trace_start_ns = now_ns() + self.delay_ms * NS_PER_MS
        self.logdir = self.trace_dir / XPLANE_DIR
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._error = None
        self.start_wake_up = None
        self._thread = threading.Thread(
            target=self._capture, args=(trace_start_ns,), name=f"capture-{self.host_name}", daemon=True
        )
        self._thread.start()

    def _capture(self, trace_start_ns: int) -> None:
        try:
            self.start_wake_up = self._trace(self.logdir, self.duration_ms, trace_start_ns)
        except BaseException as e:  # handed to stop(), which raises it in the actor call
            self._error = e

    def run_traced(
        self, run_once: Callable[[], float] | None, covered_ms: int, at_ns: int
    ) -> tuple[float | None, int, int]:
        """One iteration inside a throwaway trace of this backend's own configuration, for
        a --phase decode window, which must fit how long the phases take while traced (the python
        tracer slows the host side: prefill took up to 2.3x its untraced time on CPU). The
        trace begins at at_ns (the driver's instant, the same on every host: the hosts
        compete for cores as they will in the capture) and covers the iteration's first
        covered_ms. Returns (latency s, trace start ns, trace stop ns); the trace is removed."""
        from ray_tpu_profile.analysis.xplane import capture_times_ns

        scratch = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-traced-"))
        errors: list[BaseException] = []
        duration_ms = TRACED_LEAD_IN_MS + covered_ms

        def trace() -> None:
            try:
                self._trace(scratch, duration_ms, at_ns)
            except BaseException as e:  # re-raised below in the caller's thread
                errors.append(e)

        thread = threading.Thread(target=trace, name=f"traced-iteration-{self.host_name}", daemon=True)
        thread.start()
        try:
            try:
                wait_until_ns(at_ns + TRACED_LEAD_IN_MS * NS_PER_MS)  # tracing first
                latency_s = run_once() if run_once else None
            finally:  # even when the iteration failed: the trace must end before its folder goes
                thread.join(timeout=duration_ms / 1000 + 60)
            if errors:
                raise RuntimeError(
                    f"traced warmup iteration's capture ({self.trigger}) failed: {errors[0]}"
                ) from errors[0]
            if thread.is_alive():
                raise TimeoutError(f"traced warmup iteration's capture ({self.trigger}) did not finish")
            written = list(scratch.glob("plugins/profile/*/*.xplane.pb"))
            if len(written) != 1:
                raise RuntimeError(f"traced warmup iteration's capture wrote {len(written)} xplane files, expected 1")
            start_ns, stop_ns = capture_times_ns(written[0])
        finally:
            if not thread.is_alive():  # one still tracing writes there: not removed under it
                shutil.rmtree(scratch, ignore_errors=True)
        return latency_s, start_ns, stop_ns

    def stop(self, llm: Any) -> None:
        """Wait for the detached capture to finish (bounded by its window) and surface its error."""
        assert self._thread is not None, "start() was not called"
        self._thread.join(timeout=self.delay_ms / 1000 + self.duration_ms / 1000 + 60)
        if self._thread.is_alive():
            raise TimeoutError(f"capture ({self.trigger}) did not finish 60 s after its window")
        if self._error is not None:
            hint = EMPTY_WINDOW_HINT if NO_EVENTS in str(self._error) else ""
            raise RuntimeError(f"capture ({self.trigger}) failed: {self._error}{hint}") from self._error
        xplane = self.logdir / "plugins" / "profile" / self.session_id / f"{self.host_name}.xplane.pb"
        self.xplane_checks[self.session_id] = {**check_xplane(xplane), "start_wake_up": self.start_wake_up}

    def describe(self) -> dict[str, Any]:
        return {
            "profiler": self.name,
            "window": {"kind": "time", "delay_ms": self.delay_ms, "duration_ms": self.duration_ms},
            "session": self.session_id,
            "trigger": self.trigger,
            "warmup_capture_attempts": self.warmup_capture_attempts,
            "client_call_plans": self.client_call_plans,
        }
