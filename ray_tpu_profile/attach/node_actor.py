"""`attach`'s side on one host: which registered processes live there, a warm-up capture
of each, the capture of each at the instant the driver gave, and the files handed back
(host.files.HostFiles). Runs as a Ray actor pinned to its node (`attach --address`) or as a
plain object in the CLI's own process (this host's `vllm serve`). It asks each process over
its capture socket, a Unix socket on this host: nothing else can reach one.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from ray_tpu_profile.attach import registry
from ray_tpu_profile.attach.registry import RegistryEntry
from ray_tpu_profile.host.clock_echo import ClockEchoHost
from ray_tpu_profile.host.files import HostFiles
from ray_tpu_profile.host.summaries import HostSummaries

CALL_TIMEOUT_S = 60.0
"""Beyond a capture's own window: a process that has not answered by then is not going to."""


def trace_host_name(host_name: str, entry: RegistryEntry) -> str:
    """A traced process's name in the XProf session and the manifest: host.role-pid."""
    return f"{host_name}.{entry.label}"


class AttachActor(ClockEchoHost, HostFiles, HostSummaries):
    def __init__(self, host_name: str, node_id: str | None = None, output_root: str | None = None):
        self.host_name = host_name
        self.node_id = node_id
        self.base_dir = Path(tempfile.mkdtemp(prefix="ray-tpu-profile-attach-", dir=output_root))
        self.output_dir = self.base_dir
        self._backends: dict[str, Any] = {}

    def servers(self, kv_entries: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """{"servers": this host's live registered processes (its registry directory, and the cluster's KV
        entries of this node whose process still runs), "problems": entries skipped, why}."""
        problems: list[str] = []
        try:
            found = {e.pid: e for e in registry.live_file_entries(problems=problems)}
        except registry.UnsafeRegistry as e:  # not this user's own: nothing in it is trusted
            found = {}
            problems.append(f"{self.host_name}: registry not read: {e}")
        for data in kv_entries:
            entry = RegistryEntry.from_json(data)
            if entry.node_id != self.node_id:
                continue  # another node's, checked there
            if registry.is_alive(entry):
                found.setdefault(entry.pid, entry)
            else:  # its process was killed before it could remove its entry: pruned here, on its node
                registry.kv_delete(entry.key)
        servers = [
            {**e.to_json(), "node_id": e.node_id or self.node_id} for e in sorted(found.values(), key=lambda e: e.pid)
        ]
        return {"servers": servers, "problems": [f"{self.host_name}: {p}" for p in problems]}

    def now_ns(self) -> int:
        from ray_tpu_profile.core.host_clock import now_ns

        return now_ns()

    def prepare(
        self,
        servers: list[dict[str, Any]],
        session_id: str,
        duration_ms: int,
        python_tracer_level: int,
        real_time_start: bool,
    ) -> dict[str, str | None]:
        """A backend per registered process, and a throwaway capture of each (the first
        capture in a process pays for tracer set-up and would start late; it also proves the
        process answers). Returns trace name -> None, or why that process cannot be traced.
        A warm-up that saw no traced work still proves the process answers."""
        from ray_tpu_profile.core.host_clock import now_ns
        from ray_tpu_profile.profilers import capture_socket
        from ray_tpu_profile.profilers.time_window import NO_EVENTS, WARMUP_CAPTURE_MS

        for data in servers:
            entry = RegistryEntry.from_json(data)
            name = trace_host_name(self.host_name, entry)
            self._backends[name] = _backend(
                entry, self.base_dir / name, name, session_id, duration_ms, python_tracer_level, real_time_start
            )

        def warm(name: str, backend: Any, scratch: Path) -> str | None:
            # Whether it answers, and is the registered process, is asked first.
            try:
                capture_socket.ping(backend.socket_path, backend.traced_pid)
            except (capture_socket.CaptureRefused, capture_socket.NotThisProcess) as e:
                return str(e)
            try:
                backend._trace(scratch, WARMUP_CAPTURE_MS, now_ns())
            except Exception as e:  # that process's failure, returned per process
                if NO_EVENTS not in str(e):
                    return f"{backend.trigger} did not take a warm-up capture: {e}"
            return None

        with tempfile.TemporaryDirectory(prefix="ray-tpu-profile-attach-warmup-") as scratch:
            return _each(
                self._backends,
                lambda name, b: warm(name, b, Path(scratch) / name),
                WARMUP_CAPTURE_MS / 1000 + CALL_TIMEOUT_S,
                lambda timeout_s: f"no answer to a warm-up capture within {timeout_s:g} s",
            )

    def capture(self, instant_ns: int, names: list[str]) -> dict[str, dict[str, Any]]:
        """The prepared processes named traced from instant_ns (this host's clock); returns
        trace name -> {"error": None or why, "client_call_plans": n, "start_wake_up": how its
        starting thread woke (in_process.prompt_wake_up)}."""
        from ray_tpu_profile.core.host_clock import now_ns

        def one(name: str, backend: Any) -> dict[str, Any]:
            try:
                backend.start(None, instant_ns)
                backend.stop(None)  # bounded: the window plus 60 s
                error = None
            except Exception as e:  # that process's failure, returned per process
                error = str(e)
            return {
                "error": error,
                "client_call_plans": backend.client_call_plans,
                "start_wake_up": backend.start_wake_up,
            }

        backends = {name: self._backends[name] for name in names}
        window_s = (
            max(0, instant_ns - now_ns()) / 1e9 + max((b.duration_ms for b in backends.values()), default=0) / 1000
        )
        return _each(
            backends,
            one,
            window_s + CALL_TIMEOUT_S + 5,
            lambda timeout_s: {
                "error": f"capture did not finish within {timeout_s:g} s",
                "client_call_plans": None,
                "start_wake_up": None,
            },
        )

    def select(self, name: str) -> None:
        """The files handed back next (list_sizes, read_chunk) are this traced process's."""
        self.output_dir = self.base_dir / name

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.base_dir, ignore_errors=True)


def _backend(
    entry: RegistryEntry,
    trace_dir: Path,
    name: str,
    session_id: str,
    duration_ms: int,
    python_tracer_level: int,
    real_time_start: bool,
) -> Any:
    """The backend of a registered process (profilers.time_window_backend, as run's hosts
    use), asking it over its capture socket."""
    from ray_tpu_profile.profilers import time_window_backend

    backend = time_window_backend(
        entry.profiler,
        trace_dir,
        name,
        session_id=session_id,
        delay_ms=0,
        duration_ms=duration_ms,
        python_tracer_level=python_tracer_level,
        real_time_start=real_time_start,
    )
    backend.socket_path, backend.traced_pid = entry.socket, entry.pid
    return backend


def _each(backends: dict[str, Any], call, timeout_s: float, timed_out) -> dict[str, Any]:
    """call(name, backend) for every backend at once, one thread each (each waits on its own
    process); results by name, timed_out(timeout_s) for a call still going after timeout_s."""
    import time

    results: dict[str, Any] = {}

    def run(name: str, backend: Any) -> None:
        results[name] = call(name, backend)

    threads = [
        threading.Thread(target=run, args=item, name=f"attach-{item[0]}", daemon=True) for item in backends.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return {name: results[name] if name in results else timed_out(timeout_s) for name in backends}
