"""The one way the tool starts a profiler server (run's hosts, engine workers, the attach
plugin) and the one factory of their capture clients."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from ray_tpu_profile.profilers import server_backend
from ray_tpu_profile.profilers.jax import JaxServerProfiler
from ray_tpu_profile.profilers.server import free_local_port, server_kind_here, start_profiler_server


def test_the_stack_decides_the_server_kind():
    def installed(*names):
        return lambda name: object() if name in names else None

    assert server_kind_here(installed()) == "jax"
    assert server_kind_here(installed("torch_xla")) == "xla"
    assert server_kind_here(installed("torch_xla", "tpu_inference")) == "jax"  # tpu-inference runs JAX


def test_a_started_jax_server_listens_in_its_own_process(tmp_path):
    """A real JAX profiler server, in a process of its own (one per process): the socket
    table shows its port owned by that process."""
    port = free_local_port()
    code = (
        "import sys; from ray_tpu_profile.profilers.server import start_profiler_server; "
        f"s = start_profiler_server('jax', {port}); print('up', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        listening = {c.laddr.port for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"}
        assert port in listening
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_unknown_kinds_are_refused_and_clients_come_from_one_factory(tmp_path):
    with pytest.raises(ValueError, match="unknown profiler server 'nope'"):
        start_profiler_server("nope", 1)
    client = server_backend("jax", tmp_path, "h0", session_id="s", delay_ms=0, duration_ms=10, port=1234)
    assert isinstance(client, JaxServerProfiler) and client.port == 1234 and client.session_id == "s"
    with pytest.raises(ValueError, match="unknown profiler server 'torch'"):
        server_backend("torch", tmp_path, "h0")
