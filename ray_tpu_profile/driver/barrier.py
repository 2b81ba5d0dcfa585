"""One stage on every healthy host at once, waited for as a whole: the next stage starts
on no host before every host has finished this one. A host that fails or times out is
marked failed with the stage and the reason; the others carry on.

Works on futures (a Ray ObjectRef's .future(), or any concurrent.futures.Future), so the
logic runs without a cluster in tests (tests/test_barrier.py).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from ray_tpu_profile.core.records import HostRecord, Stage

WAIT_SLICE_S = 0.5
"""Longest wait between two looks at the stop flag: Ctrl-C or `ray job stop` is seen
within this, however long a stage takes."""


def describe_error(error: BaseException) -> str:
    """One line: the root cause of a Ray task error rather than its whole traceback."""
    import ray.exceptions as rex

    traceback_text = ""
    if isinstance(error, rex.RayTaskError) and error.cause is not None:
        traceback_text, error = _remote_traceback(error), error.cause
    if isinstance(error, rex.ActorDiedError):
        return "actor process died" + (
            f": {error.error_msg.splitlines()[0]}" if getattr(error, "error_msg", "") else ""
        )
    text = str(error).strip().splitlines()
    if text:
        return f"{type(error).__name__}: {text[0]}"
    # No message (a bare AttributeError from a half-patched library, say): where the host
    # raised it is all there is to go on.
    where = _raised_at(traceback_text)
    return f"{type(error).__name__} (no message), raised at {where}" if where else f"{type(error).__name__}:"


def _remote_traceback(error: BaseException) -> str:
    """The traceback a Ray task error carries from the process that raised it. What
    ray.get raises is mostly the dual class of as_instanceof_cause (RayTaskError and the
    cause's class): it has no traceback_str of its own (attributes are the cause's) and
    its str() is the formatted traceback; a plain RayTaskError keeps traceback_str."""
    return vars(error).get("traceback_str") or str(error)


def _raised_at(traceback_text: str) -> str | None:
    """The innermost frame of a traceback: file name, line, function."""
    import re

    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', traceback_text)
    if not frames:
        return None
    filename, line, function = frames[-1]
    return f"{Path(filename).name}:{line} in {function}"


class DoneFutures:
    """Futures handed over as they complete: one callback per future, so waiting on N
    futures costs O(N) in all (concurrent.futures.wait, called again after each completion,
    installs a waiter on every pending future each time: O(N^2) for a round of N hosts)."""

    def __init__(self, futures: Iterable[Future]):
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()
        for future in futures:
            future.add_done_callback(self._done.put)

    def wait(self, timeout_s: float) -> list[Future]:
        """Those completed since the last call, waiting up to timeout_s for the first."""
        try:
            done = [self._done.get(timeout=timeout_s) if timeout_s > 0 else self._done.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done


def completed_in_slices(
    futures: Iterable[Future], timeout_s: float, check_stop: Callable[[], None]
) -> Iterator[Future]:
    """Each future as it completes, until all have or timeout_s has passed (those left
    are not yielded). check_stop is called at least every WAIT_SLICE_S and may raise."""
    pending = set(futures)
    completions = DoneFutures(pending)
    deadline = time.monotonic() + timeout_s
    while pending:
        done = completions.wait(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
        check_stop()
        pending.difference_update(done)
        yield from done
        if not done and time.monotonic() >= deadline:
            return


def result_watching_stop(future: Future, timeout_s: float, check_stop: Callable[[], None]) -> Any:
    """future.result(), waited for in short slices so that a stop signal is not held up by
    a call that takes minutes (a GB upload)."""
    for done in completed_in_slices([future], timeout_s, check_stop):
        return done.result()
    raise TimeoutError(f"timed out after {timeout_s:g} s (--timeout-s)")


class HostHandle(Protocol):
    """A host's actor as the driver calls it: every method call returns a Future
    (cluster.RayHost for a real actor)."""

    def kill(self) -> None: ...

    def __getattr__(self, method: str) -> Callable[..., Future]: ...


class Reporter(Protocol):
    """What the barrier says as hosts finish (progress.Progress)."""

    def stage(self, stage: str, hosts: list[str]) -> None: ...
    def host_ok(self, stage: str, host: str, detail: str) -> None: ...
    def host_failed(self, stage: str, host: str, error: str) -> None: ...
    def note(self, text: str) -> None: ...


class Barrier:
    """Calls every healthy host, waits for all, records each host's failure without
    stopping the others, and kills a host that outlasts timeout_s.

    Args:
        records: one per host, updated in place (status, stage, error).
        handles: host name -> HostHandle.
        progress: where each host's outcome is said.
        timeout_s: longest one host may take for one stage (--timeout-s).
        check_stop: raises once a stop signal has come (signals.StopSignals.check).
        on_stage: called with each stage as it begins (the run's bookkeeping).
        partners: host name -> the hosts that fail with it (every host of an engine that
            spans hosts: one host's failure is its engine's).
    """

    def __init__(
        self,
        records: list[HostRecord],
        handles: dict[str, HostHandle],
        progress: Reporter,
        timeout_s: float,
        check_stop: Callable[[], None] = lambda: None,
        on_stage: Callable[[Stage], None] = lambda stage: None,
        partners: dict[str, list[str]] | None = None,
    ):
        self.records = records
        self.handles = handles
        self.progress = progress
        self.timeout_s = timeout_s
        self.check_stop = check_stop
        self.on_stage = on_stage
        self.partners = partners or {}

    def healthy(self) -> list[HostRecord]:
        return [r for r in self.records if r.healthy]

    def fail(self, record: HostRecord, stage: Stage, why: str) -> None:
        """Fails the host, and every healthy host that shares its fate (its engine). A host
        failed already keeps its first reason."""
        if not record.healthy:
            return
        record.fail(stage, why)
        self.progress.host_failed(stage, record.host.name, why)
        name = record.host.name
        for partner in self.healthy():
            if partner.host.name != name and partner.host.name in self.partners.get(name, ()):
                why_partner = f"its engine failed: {name} failed at {stage}: {why}"
                partner.fail(stage, why_partner)
                self.progress.host_failed(stage, partner.host.name, why_partner)

    def run(
        self,
        stage: Stage,
        call: Callable[[HostHandle], Future],
        on_result: Callable[[HostRecord, Any], str] | None = None,
        on_error: Callable[[HostRecord, str], str] | None = None,
    ) -> dict[str, Any]:
        """call(handle) on every healthy host; returns each healthy host's result by name.
        on_result(record, result) keeps what it needs and returns the progress detail.
        on_error(record, why), where given, takes a host's error or timeout instead of
        failing the host (a stage the host's outcome does not depend on) and returns the
        progress detail."""
        self.on_stage(stage)
        healthy = self.healthy()
        self.progress.stage(stage, [r.host.name for r in healthy])
        pending = {call(self.handles[r.host.name]): r for r in healthy}
        completions = DoneFutures(pending)
        results: dict[str, Any] = {}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            done = completions.wait(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
            self.check_stop()
            for future in done:
                record = pending.pop(future, None)
                if record is None:  # its host failed with its engine: no longer waited for
                    continue
                if record.healthy:
                    self._keep(stage, record, future, results, on_result, on_error)
            for future, record in list(pending.items()):
                if not record.healthy:  # failed with its engine: not waited for
                    del pending[future]
                    self.handles[record.host.name].kill()
            if not done and time.monotonic() >= deadline:
                break
        for record in pending.values():  # still running at the deadline
            self._failed(stage, record, f"timed out after {self.timeout_s:g} s (--timeout-s)", on_error)
            self.handles[record.host.name].kill()
        return results

    def _failed(
        self, stage: Stage, record: HostRecord, why: str, on_error: Callable[[HostRecord, str], str] | None
    ) -> None:
        if on_error is None:
            self.fail(record, stage, why)
        else:
            self.progress.host_ok(stage, record.host.name, on_error(record, why))

    def _keep(
        self,
        stage: Stage,
        record: HostRecord,
        future: Future,
        results: dict[str, Any],
        on_result: Callable[[HostRecord, Any], str] | None,
        on_error: Callable[[HostRecord, str], str] | None,
    ) -> None:
        try:
            result = future.result()
        except Exception as e:  # one host's failure is recorded, the others go on
            self._failed(stage, record, describe_error(e), on_error)
            return
        results[record.host.name] = result
        self.progress.host_ok(stage, record.host.name, on_result(record, result) if on_result else "ready")

    def call_one(self, record: HostRecord, call: Callable[[HostHandle], Future], timeout_s: float | None = None) -> Any:
        """call(handle) on one host, its result (or its error, raised)."""
        return result_watching_stop(call(self.handles[record.host.name]), timeout_s or self.timeout_s, self.check_stop)
