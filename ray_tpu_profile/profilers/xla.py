"""torch_xla's XLA profiler in the model's process (profilers.time_window), for vLLM builds
that run on torch_xla (the seed's stack)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from ray_tpu_profile.profilers.time_window import TimeWindowBackend


class XlaProfiler(TimeWindowBackend):
    name = "xla"

    def _server_client(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        if importlib.util.find_spec("xprof") is not None:
            # Same TSL service; xprof's client also names the session and host for us.
            return self._trace_with_xprof(service_addr, logdir, duration_ms, delay_ms)
        import torch_xla.debug.profiler as xp

        # torch_xla's client names the session by time and the file by hostname: trace
        # into a fresh directory, then move its one xplane to <session>/<host>.xplane.pb.
        scratch = Path(tempfile.mkdtemp(prefix="xla-trace-", dir=logdir))
        # timeout_s=0: one request. torch_xla's client otherwise retries for 120 s, and a
        # retry writes a second session (seen under load); attach() already saw the server (--profiler-port).
        xp.trace(
            service_addr,
            str(scratch),
            duration_ms=duration_ms,
            num_tracing_attempts=1,
            host_tracer_level=2,
            device_tracer_level=1,
            delay_ms=delay_ms,
            timeout_s=0,
            interval_s=1,
        )
        written = list(scratch.glob("plugins/profile/*/*.xplane.pb"))
        if len(written) != 1:
            raise RuntimeError(f"torch_xla's trace wrote {len(written)} xplane files, expected 1: {written}")
        dest = Path(logdir) / "plugins" / "profile" / self.session_id / f"{self.host_name}.xplane.pb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written[0], dest)
        for path in sorted(scratch.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        scratch.rmdir()
