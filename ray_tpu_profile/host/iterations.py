"""The iterations a host runs and times: warm-up, the traced warmup iteration that places a
--phase decode window, and the profiled ones at the run's common instant."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ray_tpu_profile.core import host_clock
from ray_tpu_profile.core.records import PhaseTiming

TRACED_ATTEMPTS = 3
"""Traced warmup iterations tried before a --phase decode window is given up on."""


class HostIterations:
    """Mixed into the host actor (host.HostActor), which sets engine (host.engine.Engine, or
    None on a host of an engine across hosts that is not its owner) and backend (its capture
    backend)."""

    engine: Any
    backend: Any
    last_warmup: PhaseTiming | None

    def _phase(self, started: float, latencies: list[float], first_mark: int) -> PhaseTiming:
        """A PhaseTiming of the iterations run since engine.marks[first_mark]."""
        marks = getattr(self.engine, "marks", [])[first_mark:]
        return PhaseTiming(
            started_at_s=started,
            finished_at_s=time.time(),
            latencies_s=tuple(latencies),
            iteration_starts_s=tuple(m[0] for m in marks),
            prefill_s=tuple(m[1] for m in marks),
            end_s=tuple(m[2] for m in marks),
        )

    def _iterations(self, count: int) -> PhaseTiming:
        started, first_mark = time.time(), len(getattr(self.engine, "marks", []))
        return self._phase(started, [self.engine.run_once_s() for _ in range(count)], first_mark)

    def warmup(self) -> PhaseTiming:
        """The iterations the capture backend's warm-up runs (its throwaway capture, first
        in each process), then --num-iters-warmup untraced ones: all listed, the first
        counted as in_capture. A host without the engine (across hosts) only warms up its
        capture."""
        started, first_mark = time.time(), len(getattr(self.engine, "marks", []))
        in_capture = self.backend.warm_up(self.engine.run_once_s if self.engine else None)
        latencies = list(in_capture)
        if self.engine:
            latencies += [self.engine.run_once_s() for _ in range(self.engine.workload.num_iters_warmup)]
        phase = self._phase(started, latencies, first_mark)
        self.last_warmup = dataclasses.replace(phase, in_capture=len(in_capture))
        return self.last_warmup

    def traced_iteration(self, at_ns: int, covered_ms: int | None = None) -> PhaseTiming:
        """One more warmup iteration in a throwaway trace begun at at_ns (one instant for
        every host), to place a --phase decode window: how long prefill and decode take
        while traced. The trace covers prefill with room (3x untraced + 50 ms); a decode end
        seen after it is over can only be earlier than a traced one. A host without the
        engine (across hosts) traces its worker for covered_ms while the owner iterates."""
        import math

        from ray_tpu_profile.core.schedule import NS_PER_MS, capture_instant_ns, traced_cover_ms

        started = time.time()
        if self.engine is None:
            self.backend.run_traced(None, covered_ms, at_ns)
            return PhaseTiming(started_at_s=started, finished_at_s=time.time())
        covered_ms = covered_ms or traced_cover_ms(self.last_warmup.prefill_s)
        for _ in range(TRACED_ATTEMPTS):
            first_mark = len(self.engine.marks)
            latency_s, trace_start_ns, trace_stop_ns = self.backend.run_traced(
                self.engine.run_once_s, covered_ms, at_ns
            )
            phase = self._phase(started, [latency_s], first_mark)
            problem, prefill_ns = _prefill_outside(phase, trace_start_ns, trace_stop_ns)
            if problem is None:
                return phase
            # Prefill outgrew the trace (seen: 6x its untraced time, right after a sweep's
            # previous capture in the same process): again, covering twice what it took, from
            # a new instant of this host's own (the driver's has passed).
            covered_ms = max(covered_ms, math.ceil(2 * prefill_ns / NS_PER_MS) + 50)
            at_ns = capture_instant_ns(host_clock.now_ns())
        raise RuntimeError(f"{problem} in {TRACED_ATTEMPTS} attempts")

    def run_profiled(self, at_ns: int | None) -> PhaseTiming:
        """The profiled iterations, begun at the run's common instant at_ns on every host."""
        from ray_tpu_profile.profilers.time_window import wait_until_ns

        if self.engine is None:  # its engine's owner runs them
            return PhaseTiming(started_at_s=time.time(), finished_at_s=time.time())
        if at_ns is not None:
            wait_until_ns(at_ns)
        return self._iterations(self.engine.workload.num_iters)


def _prefill_outside(phase: PhaseTiming, trace_start_ns: int, trace_stop_ns: int) -> tuple[str | None, int]:
    """(Why the traced warmup iteration's prefill was not inside its trace, or None; how long
    that prefill took, ns)."""
    from ray_tpu_profile.core.schedule import NS_PER_MS

    if not phase.prefill_s:
        raise RuntimeError("the traced warmup iteration gave no request metrics to place the window with")
    begun_ns = round(phase.iteration_starts_s[0] * 1e9)
    prefill_over_ns = begun_ns + round(phase.prefill_s[0] * 1e9)
    if trace_start_ns <= begun_ns < prefill_over_ns <= trace_stop_ns:
        return None, prefill_over_ns - begun_ns
    return (
        f"the traced warmup iteration's prefill ({(begun_ns - trace_start_ns) / NS_PER_MS:.1f}-"
        f"{(prefill_over_ns - trace_start_ns) / NS_PER_MS:.1f} ms into its trace) was not inside the "
        f"trace ({(trace_stop_ns - trace_start_ns) / NS_PER_MS:.1f} ms)"
    ), prefill_over_ns - begun_ns
