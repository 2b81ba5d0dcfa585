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

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
REAL_TIME_PRIORITY = 1
"""SCHED_FIFO's lowest priority: ahead of every normal thread, behind any real-time thread
the host already runs."""
REAL_TIME = "real-time"
EMPTY_CHECK_BYTES = 64 << 10
"""An xplane smaller than this is read to see whether it holds any event (an empty
capture is a few hundred bytes); a larger one has events and is not read here."""

_one_session = threading.Lock()
"""The profiler allows one session per process."""


class CaptureBusy(RuntimeError):
    """Another capture is running in this process."""


class NoEvents(RuntimeError):
    """The window held no traced work (message: NO_EVENTS, as the TSL client words it)."""


@dataclass(frozen=True)
class Captured:
    """A capture written: its xplane, and how the thread that started it woke at the
    instant (REAL_TIME, or "normal" and why: prompt_wake_up)."""

    path: Path
    start_wake_up: str


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
    real_time_start: bool = True,
) -> Captured:
    """Trace this process from wall_start_ns (real wall clock) for duration_ms; blocks until
    the xplane is written. kind: "jax" or "xla" (torch_xla's profiler). real_time_start:
    wake at the instant as a real-time thread where allowed (prompt_wake_up). CaptureBusy
    when another capture runs here; NoEvents when the window held nothing."""
    if kind not in ("jax", "xla"):
        raise ValueError(f"unknown profiler {kind!r}")
    if not _one_session.acquire(blocking=False):
        raise CaptureBusy("another capture is running in this process")
    try:
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".in-process-", dir=logdir))
        try:
            stop_ns = wall_start_ns + duration_ms * NS_PER_MS
            if kind == "jax":
                woke = _jax_trace(scratch, wall_start_ns, stop_ns, python_tracer_level, real_time_start)
            else:
                woke = _xla_trace(scratch, wall_start_ns, stop_ns)
            written = list(scratch.glob("plugins/profile/*/*.xplane.pb"))
            if len(written) != 1:
                raise RuntimeError(f"the {kind} profiler wrote {len(written)} xplane files, expected 1")
            if is_empty(written[0]):
                raise NoEvents(f"{NO_EVENTS} in pid {os.getpid()} between its start and stop")
            dest = logdir / "plugins" / "profile" / session_id / f"{host_name}.xplane.pb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written[0], dest)
            return Captured(dest, woke)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        _one_session.release()


@contextlib.contextmanager
def prompt_wake_up(wanted: bool, wait_ns: int) -> Iterator[str]:
    """Real-time scheduling (SCHED_FIFO, REAL_TIME_PRIORITY) for this thread while it sleeps
    to a capture's instant and starts the tracers, back to what it was right after: woken
    from its sleeps (to the lead, then to the instant), it runs at once instead of when the
    scheduler next gets to it among the host's busy threads. wait_ns: from when the capture
    was asked to its instant. Measured (bench/skew.py, 4 hosts on 2 shared cores): capture start
    skew median 0.126 ms against 0.192 ms without. Only where there is a wait (a capture
    from now pays the tracers' first set-up, up to 0.6 s: not as a real-time thread) and
    the process may (CAP_SYS_NICE or RLIMIT_RTPRIO). Yields REAL_TIME, or "normal" and why."""
    if not wanted:
        yield "normal (--no-real-time-start)"
        return
    if wait_ns <= 0:
        yield "normal (no wait: the instant had passed)"
        return
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)  # 0: this thread, on Linux
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REAL_TIME_PRIORITY))
    except AttributeError:
        yield "normal (no real-time scheduling on this platform)"
        return
    except OSError as e:
        yield f"normal (real-time scheduling not permitted: {e.strerror})"
        return
    try:
        yield REAL_TIME
    finally:
        os.sched_setscheduler(0, policy, param)


def _jax_trace(scratch: Path, start_ns: int, stop_ns: int, python_tracer_level: int, real_time_start: bool) -> str:
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
    # Real-time from the ask, not from the lead: woken at the lead as a normal thread on a
    # busy host, it got the GIL back after the instant, and a start that was asked in time
    # ran as a normal thread, late (CI, 2 shared cores). TSL sleeps to the instant inside
    # the constructor, then starts the tracers.
    with prompt_wake_up(real_time_start, start_ns - time.time_ns()) as woke:
        wait_until_wall_ns(start_ns - START_LEAD_MS * NS_PER_MS)
        session = _profiler.ProfilerSession(options)
    try:
        wait_until_wall_ns(stop_ns)
    finally:
        session.stop_and_export(str(scratch))
    return woke


def _xla_trace(scratch: Path, start_ns: int, stop_ns: int) -> str:
    # torch_xla's session takes no options (its defaults: host tracer, no python tracer)
    # and begins when created: created at the instant.
    import torch_xla.debug.profiler as xp

    wait_until_wall_ns(start_ns)
    xp.start_trace(str(scratch))
    try:
        wait_until_wall_ns(stop_ns)
    finally:
        xp.stop_trace()
    # The wait is in Python: what delays the start is getting the GIL back, not the wake-up.
    return "normal (torch_xla's session starts from Python)"


def is_empty(xplane: Path) -> bool:
    """Whether a just-written xplane holds no event (only small files are read, with the
    package's own XSpace reader: xprof need not be installed in the model's environment)."""
    if xplane.stat().st_size >= EMPTY_CHECK_BYTES:
        return False
    from ray_tpu_profile.analysis.xspace import read_planes

    return not any(line.events for plane in read_planes(xplane) for line in plane.lines)
