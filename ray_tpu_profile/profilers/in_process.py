"""A capture taken inside the model's own process: the XLA profiler's in-process session
(jaxlib's ProfilerSession, which jax.profiler.start_trace wraps; torch_xla's
xp.start_trace), begun at an instant of the
wall clock and stopped after its window, written as
<logdir>/plugins/profile/<session_id>/<host_name>.xplane.pb.

It opens no port. The TSL profiler servers it replaces listen on every interface and
their API takes no address, so anyone who could reach a host could start a capture (issue
25); in-process, only code in the process (the tool's actor, or capture_socket's listener
for this user) can.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ray_tpu_profile.core.schedule import NS_PER_MS

NO_EVENTS = "No trace event was collected"
"""As the TSL client says it: a window that held no traced work in the process."""

START_LEAD_MS = 6
"""JAX: the session is asked for this long before its instant and begins tracing at the
instant itself (ProfileOptions.start_timestamp_ns: TSL sleeps to it). Asked at the instant,
tracing began 5.6 ms late while the model's thread ran Python: the asking thread must first
get the GIL back (Python's switch interval is 5 ms). Asked 6 ms ahead it began 0.11-0.14 ms
after the instant. TSL sleeps holding the GIL, so the model's Python may pause for up to
this long just before the window."""
EMPTY_CHECK_BYTES = 64 << 10
"""An xplane smaller than this is read to see whether it holds any event (an empty
capture is a few hundred bytes); a larger one has events and is not read here."""

_one_session = threading.Lock()
"""The profiler allows one session per process."""


class CaptureBusy(RuntimeError):
    """Another capture is running in this process."""


class NoEvents(RuntimeError):
    """The window held no traced work (message: NO_EVENTS, as the TSL client words it)."""


def wait_until_wall_ns(instant_ns: int) -> None:
    """Block until the real wall clock (time.time_ns, what the profiler stamps traces with)
    reaches instant_ns."""
    remaining_s = (instant_ns - time.time_ns()) / 1e9
    if remaining_s > 0:
        threading.Event().wait(remaining_s)


def prepare(kind: str) -> None:
    """Import what a capture needs, before the first one: importing JAX takes seconds, and
    done by the warm-up capture's thread it holds the GIL while the warmup iterations run,
    slowing all of them (a --phase window is placed from their timings). Imports only: no
    JAX backend is initialised (see _jax_trace)."""
    if kind == "jax":
        from jax._src.lib import _profiler  # noqa: F401 - imported for its cost, now
    else:
        import torch_xla.debug.profiler  # noqa: F401 - imported for its cost, now
    from ray_tpu_profile.analysis import xspace  # noqa: F401 - is_empty's reader


def capture(
    kind: str,
    logdir: Path,
    *,
    session_id: str,
    host_name: str,
    wall_start_ns: int,
    duration_ms: int,
    python_tracer_level: int = 1,
) -> Path:
    """Trace this process from wall_start_ns (real wall clock) for duration_ms; blocks until
    the xplane is written and returns its path. kind: "jax" or "xla" (torch_xla's profiler).
    CaptureBusy when another capture runs here; NoEvents when the window held nothing."""
    if kind not in ("jax", "xla"):
        raise ValueError(f"unknown profiler {kind!r}")
    if not _one_session.acquire(blocking=False):
        raise CaptureBusy("another capture is running in this process")
    try:
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".in-process-", dir=logdir))
        try:
            trace = _jax_trace if kind == "jax" else _xla_trace
            trace(scratch, wall_start_ns, wall_start_ns + duration_ms * NS_PER_MS, python_tracer_level)
            written = list(scratch.glob("plugins/profile/*/*.xplane.pb"))
            if len(written) != 1:
                raise RuntimeError(f"the {kind} profiler wrote {len(written)} xplane files, expected 1")
            if is_empty(written[0]):
                raise NoEvents(f"{NO_EVENTS} in pid {os.getpid()} between its start and stop")
            dest = logdir / "plugins" / "profile" / session_id / f"{host_name}.xplane.pb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written[0], dest)
            return dest
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        _one_session.release()


def _jax_trace(scratch: Path, start_ns: int, stop_ns: int, python_tracer_level: int) -> None:
    # jaxlib's ProfilerSession, which jax.profiler.start_trace wraps, and which a TSL
    # profiler server runs for a remote client. Not start_trace itself: it initialises every
    # JAX backend first, and in a vLLM process that does not run the model (the API server
    # under attach) on a TPU host that would claim the TPU. A process that runs the model
    # has its backend, and so its device tracer, already.
    from jax._src.lib import _profiler

    options = _profiler.ProfileOptions()
    options.host_tracer_level = 2
    options.python_tracer_level = python_tracer_level
    options.start_timestamp_ns = start_ns  # TSL begins tracing here (now, if it has passed)
    wait_until_wall_ns(start_ns - START_LEAD_MS * NS_PER_MS)
    session = _profiler.ProfilerSession(options)
    try:
        wait_until_wall_ns(stop_ns)
    finally:
        session.stop_and_export(str(scratch))


def _xla_trace(scratch: Path, start_ns: int, stop_ns: int, python_tracer_level: int) -> None:
    # torch_xla's session takes no options (its defaults: host tracer, no python tracer)
    # and begins when created: created at the instant.
    import torch_xla.debug.profiler as xp

    wait_until_wall_ns(start_ns)
    xp.start_trace(str(scratch))
    try:
        wait_until_wall_ns(stop_ns)
    finally:
        xp.stop_trace()


def is_empty(xplane: Path) -> bool:
    """Whether a just-written xplane holds no event (only small files are read, with the
    package's own XSpace reader: xprof need not be installed in the model's environment)."""
    if xplane.stat().st_size >= EMPTY_CHECK_BYTES:
        return False
    from ray_tpu_profile.analysis.xspace import read_planes

    return not any(line.events for plane in read_planes(xplane) for line in plane.lines)
