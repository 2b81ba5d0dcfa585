"""Backends that run a TSL profiler server (torch_xla, JAX) in the model's process and
take a detached trace of it from the same host at a given instant."""

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

from ray_tpu_profile.core.host_clock import now_ns
from ray_tpu_profile.core.schedule import NS_PER_MS, TimeWindow, plan_again, split_trace_delay
from ray_tpu_profile.errors import ToolError
from ray_tpu_profile.profilers.base import CaptureBackend

XPLANE_DIR = "xplane"
"""Under the host's output dir: <XPLANE_DIR>/plugins/profile/<session>/<host>.xplane.pb."""


WARMUP_CAPTURE_MS = 50
WARMUP_CAPTURE_ATTEMPTS = 3
"""The first capture in a process can come back empty: its tracer set-up may outlast its
50 ms window (slower under load). That is what the warm-up is for, so it tries again."""
TRACED_LEAD_IN_MS = 20
"""Between that trace's start and its iteration's: the iteration must lie inside the trace,
and a start on a loaded host was seen up to 5 ms late."""
NO_EVENTS = "No trace event was collected"
"""The TSL client's message for a capture whose window held no traced work."""


class ServerNotReady(ToolError, RuntimeError):
    pass


class PortTaken(ToolError, RuntimeError):
    """The profiler server could not bind its port: another process listens there."""


def start_profiler_server(kind: str, port: int) -> Any:
    """A TSL profiler server in this process: JAX's (kind "jax") or torch_xla's ("xla").
    The one place the tool starts one (run's hosts, engine workers, the attach plugin).
    Keep the object returned alive: a collected server object yields empty traces.
    PortTaken where the server did not get the port (TSL only logs "Unable to bind" and
    returns): whatever listens there is another process's, never to be traced as this."""
    if kind == "xla":
        import torch_xla.debug.profiler as xp

        server = xp.start_server(port)
    elif kind == "jax":
        import jax.profiler

        server = jax.profiler.start_server(port)
    else:
        raise ValueError(f"unknown profiler server {kind!r}")
    if not listens_here(port):
        raise PortTaken(f"the {kind} profiler server could not bind port {port}: another process listens there")
    return server


def listens_here(port: int, pid: int | None = None) -> bool:
    """Whether process pid (default: this one) holds a listening TCP socket on port."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def server_kind_here(find_spec: Callable[[str], Any] | None = None) -> str:
    """The server this Python environment's vLLM stack profiles with: torch_xla's where
    torch_xla is installed without tpu-inference, else JAX's (as --profiler auto chooses)."""
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


class ServerBackend(CaptureBackend):
    """Subclasses start the server and call their client's trace()."""

    uses_server = True

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
    ):
        super().__init__(trace_dir, host_name)
        self.run_session_id = session_id
        self.session_id = session_id
        self.delay_ms = delay_ms
        self.duration_ms = duration_ms
        self.own_server = port is None
        self.port = port or free_local_port()
        self.ready_timeout_s = ready_timeout_s
        self.python_tracer_level = python_tracer_level
        self.server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.trace_called_at_ns: int | None = None
        self.warmed_up = False
        self.warmup_capture_attempts: int | None = None
        """Throwaway captures it took to get one with events (see WARMUP_CAPTURE_ATTEMPTS)."""
        self.client_delay_ms: int | None = None
        self.client_call_plans: int | None = None
        """How many times the client call was planned (see schedule.plan_again)."""

    def set_shape(self, shape_tag: str | None) -> None:
        """Each shape of a sweep is its own XProf session: <run>-<shape>."""
        super().set_shape(shape_tag)
        self.session_id = f"{self.run_session_id}-{shape_tag}" if shape_tag else self.run_session_id

    @abstractmethod
    def _trace(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        """Blocking client call that writes <logdir>/plugins/profile/<session>/<host>.xplane.pb."""

    def _trace_with_xprof(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        """_trace through xprof's client, which names the session and host for us."""
        trace_with_xprof(
            service_addr,
            logdir,
            duration_ms,
            delay_ms,
            session_id=self.session_id,
            host_name=self.host_name,
            python_tracer_level=self.python_tracer_level,
        )

    def attach(self, llm: Any) -> None:
        if self.own_server:
            self.server = start_profiler_server(self.name, self.port)
        self.server_wait_s = wait_for_server(self.port, self.ready_timeout_s)

    def trace_worker(self, worker: dict[str, Any]) -> None:
        """An engine across hosts: trace the server its owner started in this host's worker."""
        self.port, self.own_server = int(worker["port"]), False
        self.server_wait_s = wait_for_server(self.port, self.ready_timeout_s)

    def warm_up(self, run_once: Callable[[], float] | None) -> list[float]:
        """A throwaway capture over warmup iterations. The first capture in a process pays
        for client and tracer set-up (seen: ~190 ms late vs ~6 ms after), so the real
        one would start late by a different amount on every host; it also proves the
        server captures before the real window. Iterations run until it has finished,
        so its window always holds work (an empty capture is an error). Once per process:
        later warmups (the next shapes of a sweep) only run iterations; a throwaway
        capture right after the last shape's capture was seen to find the server busy."""
        if self.warmed_up:
            return [run_once()] if run_once else []
        scratch = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-warmup-"))
        errors: list[BaseException] = []

        def trace() -> None:
            for attempt in range(1, WARMUP_CAPTURE_ATTEMPTS + 1):
                try:
                    self._trace(f"localhost:{self.port}", str(scratch), WARMUP_CAPTURE_MS, 0)
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
            raise RuntimeError(f"warm-up capture on localhost:{self.port} failed: {errors[0]}") from errors[0]
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
        self._thread = threading.Thread(
            target=self._capture, args=(trace_start_ns,), name=f"capture-{self.host_name}", daemon=True
        )
        self._thread.start()

    def _capture(self, trace_start_ns: int) -> None:
        try:
            self._call_client(trace_start_ns, self.logdir, self.duration_ms)
        except BaseException as e:  # handed to stop(), which raises it in the actor call
            self._error = e

    def _call_client(self, trace_start_ns: int, logdir: Path, duration_ms: int) -> None:
        """Call the client so that tracing begins at trace_start_ns; returns when the trace
        is written under logdir."""
        plans = 0
        while True:
            plans += 1
            call_at_ns, client_delay_ms = split_trace_delay(trace_start_ns, now_ns())
            wait_until_ns(call_at_ns)
            called_ns = now_ns()
            if not plan_again(trace_start_ns, call_at_ns, called_ns):
                break
        self.trace_called_at_ns, self.client_delay_ms, self.client_call_plans = called_ns, client_delay_ms, plans
        self._trace(f"localhost:{self.port}", str(logdir), duration_ms, client_delay_ms)

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
        trace_start_ns = at_ns
        duration_ms = TRACED_LEAD_IN_MS + covered_ms

        def trace() -> None:
            try:
                self._call_client(trace_start_ns, scratch, duration_ms)
            except BaseException as e:  # re-raised below in the caller's thread
                errors.append(e)

        thread = threading.Thread(target=trace, name=f"traced-iteration-{self.host_name}", daemon=True)
        thread.start()
        try:
            try:
                wait_until_ns(trace_start_ns + TRACED_LEAD_IN_MS * NS_PER_MS)  # tracing first
                latency_s = run_once() if run_once else None
            finally:  # even when the iteration failed: the trace must end before its folder goes
                thread.join(timeout=duration_ms / 1000 + 60)
            if errors:
                raise RuntimeError(
                    f"traced warmup iteration's capture on localhost:{self.port} failed: {errors[0]}"
                ) from errors[0]
            if thread.is_alive():
                raise TimeoutError(f"traced warmup iteration's capture on localhost:{self.port} did not finish")
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
            raise TimeoutError(f"capture on localhost:{self.port} did not finish 60 s after its window")
        if self._error is not None:
            hint = (
                " (the window held no traced work: did the profiled iterations end before tracing began? "
                "more --num-iters, or a window placed on them with --delay-ms / --duration-ms)"
                if NO_EVENTS in str(self._error)
                else ""
            )
            raise RuntimeError(f"capture on localhost:{self.port} failed: {self._error}{hint}") from self._error

    def describe(self) -> dict[str, Any]:
        return {
            "profiler": self.name,
            "window": {"kind": "time", "delay_ms": self.delay_ms, "duration_ms": self.duration_ms},
            "session": self.session_id,
            "server": {"host": "localhost", "started_by": "ray-tpu-profile" if self.own_server else "model process"},
            "warmup_capture_attempts": self.warmup_capture_attempts,
            "client_call_plans": self.client_call_plans,
        }
