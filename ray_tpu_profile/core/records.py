"""Plain data the host actors return and the driver keeps per host. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ray_tpu_profile.core.hosts import Host


class HostStatus(StrEnum):
    """A host's status in a run (the manifest's hosts[].status)."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


class RunStatus(StrEnum):
    """A run's status (the manifest's `status`); the exit code follows it alone."""

    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"
    STOPPED = "stopped"


def run_status(host_statuses: Iterable[str], stopped: bool) -> RunStatus:
    """ok: every host (or traced process) delivered; partial: some did; failed: none did;
    stopped: interrupted. One rule for `run` and `attach`."""
    statuses = list(host_statuses)
    if stopped:
        return RunStatus.STOPPED
    ok = sum(s == HostStatus.OK for s in statuses)
    if statuses and ok == len(statuses):
        return RunStatus.OK
    return RunStatus.PARTIAL if ok else RunStatus.FAILED


@dataclass(frozen=True)
class WorkerIdentity:
    """The vLLM worker process traced on a host of an engine across hosts (the manifest's
    hosts[].worker): its rank in the engine, process, Ray node and capture socket."""

    rank: int
    pid: int
    node_id: str | None = None
    socket: str | None = None
    """The worker's capture socket (jax / xla; profilers.capture_socket)."""
    trace_dir: str | None = None
    """Where the worker writes its trace (torch), for its host to collect."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerIdentity:
        return cls(int(data["rank"]), int(data["pid"]), data.get("node_id"), data.get("socket"), data.get("trace_dir"))

    def to_json(self) -> dict[str, Any]:
        """As the worker reported itself (trace_dir only where it has one)."""
        data = asdict(self)
        if self.trace_dir is None:
            del data["trace_dir"]
        return data


@dataclass(frozen=True)
class EngineRole:
    """What a host does for its engine (what HostActor.load needs to know)."""

    engine: str
    owner: bool
    """Whether the engine core runs here (always, for an engine within one host)."""
    spans_hosts: bool
    ranks: tuple[int, ...]
    node_ids: tuple[str, ...] = ()
    """The Ray nodes of the engine's hosts, its owner's first (simulated hosts join their
    workers into one JAX cluster by them: sim_platform.tpu_inference_cpu)."""


class Stage(StrEnum):
    """The stages of a run, in order (README "What a run does"); the manifest's `stage`."""

    VALIDATE = "validate"
    PLACE = "place"
    CLOCKS = "clocks"
    """Measuring each host's clock offset from the driver's (at place, and before each capture)."""
    LOAD = "load"
    WORKERS = "workers"
    """An engine across hosts: finding each host's worker process and its profiler server."""
    SHAPE = "shape"
    """A sweep switching the loaded model to its next shape."""
    WARMUP = "warmup"
    WINDOW = "window"
    """Placing a --phase window."""
    CAPTURE = "capture"
    GATHER = "gather"
    VERIFY = "verify"
    SUMMARIES = "summaries"
    """Each host summarising its own traces for the reports, once they are gathered."""
    REPORTS = "reports"
    PUBLISH = "publish"
    DONE = "done"


@dataclass(frozen=True)
class PhaseTiming:
    """One timed stretch of work on a host; times are wall clock (time.time()) seconds."""

    started_at_s: float
    finished_at_s: float
    latencies_s: tuple[float, ...] = ()
    """Per generate call, measured with perf_counter; empty for load."""
    iteration_starts_s: tuple[float, ...] = ()
    """Wall clock at the start of each generate call."""
    prefill_s: tuple[float, ...] = ()
    """Per call: from its start until every request had its first token (vLLM's request
    metrics), i.e. when prefill was over."""
    end_s: tuple[float, ...] = ()
    """Per call: from its start until every request had its last token."""
    in_capture: int = 0
    """Warmup: how many of its first calls ran while the backend's throwaway warm-up capture
    was open (its tracer set-up and window slowed them up to 4x on CPU): not samples of the
    model's own latency, and run on top of --num-iters-warmup."""

    @property
    def duration_s(self) -> float:
        return self.finished_at_s - self.started_at_s

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class FileEntry:
    """A file a host produced; `path` is relative to the host's output root."""

    path: str
    bytes: int
    sha256: str


@dataclass
class ShapeRecord:
    """What one host did for one shape of the run (the manifest's hosts[].shapes[shape])."""

    warmup: PhaseTiming | None = None
    profiled: PhaseTiming | None = None
    traced: PhaseTiming | None = None
    """The warmup iteration a --phase decode window was timed in, under a throwaway trace."""
    capture: dict[str, Any] | None = None
    """The capture check read back from the host's trace (xplane times, events; torch steps)."""
    clock: dict[str, Any] | None = None
    """The clock offset this shape's capture was scheduled with."""


@dataclass
class HostRecord:
    """What the driver knows about one host, updated stage by stage."""

    host: Host
    status: HostStatus = HostStatus.PENDING
    """pending -> ok | failed."""
    stage: Stage = Stage.PLACE
    """The last stage this host entered."""
    error: str | None = None
    pid: int | None = None
    scratch_dir: str | None = None
    """Where the host wrote its files before the gather (removed once they and the
    summary are gathered: stages.clean_up)."""
    scratch_kept: str | None = None
    """Why scratch_dir is still on the host: its removal failed (its actor died, say), or it
    holds files of a host the run did not gather."""
    load: PhaseTiming | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    """Gathered files: path relative to the run directory, bytes, sha256."""
    shapes: dict[str, ShapeRecord] = field(default_factory=dict)
    """Per shape of the run, in run order."""
    engine: str | None = None
    """The engine this host runs (engines.EngineAssignment.name)."""
    ranks: tuple[int, ...] = ()
    """The engine's ranks on this host."""
    worker: WorkerIdentity | None = None
    """The engine worker process traced on this host: rank, pid, node_id (and port for a
    profiler server). For an engine within one host, the actor's own process."""
    clock: dict[str, Any] | None = None
    """This host's clock against the driver's, as last measured (stages.measure_clocks):
    offset_ms, uncertainty_ms, round trips, NTP state, any warning, and every measurement."""
    summary: dict[str, Any] | None = None
    """The host's summary of its own traces, made once they are gathered and verified
    (stages.summarise): seconds, events, bytes; or the error that kept it from being made
    or gathered."""

    # The manifest's top-level host fields describe the first shape (the only one outside a sweep).
    @property
    def warmup(self) -> PhaseTiming | None:
        return self._first_shape().warmup

    @property
    def profiled(self) -> PhaseTiming | None:
        return self._first_shape().profiled

    @property
    def capture(self) -> dict[str, Any] | None:
        return self._first_shape().capture

    def _first_shape(self) -> ShapeRecord:
        return next(iter(self.shapes.values()), ShapeRecord())

    def shape(self, name: str) -> ShapeRecord:
        """This host's record of shape `name`, made on first use."""
        return self.shapes.setdefault(name, ShapeRecord())

    @property
    def healthy(self) -> bool:
        return self.status != HostStatus.FAILED

    def fail(self, stage: Stage, error: str) -> None:
        self.status, self.stage, self.error = HostStatus.FAILED, stage, error
