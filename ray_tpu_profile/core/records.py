"""Plain data the host actors return and the driver keeps per host. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ray_tpu_profile.core.hosts import Host


@dataclass(frozen=True)
class EngineRole:
    """What a host does for its engine (what HostActor.load needs to know)."""

    engine: str
    owner: bool
    """Whether the engine core runs here (always, for an engine within one host)."""
    spans_hosts: bool
    ranks: tuple[int, ...]


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
class HostRecord:
    """What the driver knows about one host, updated stage by stage."""

    host: Host
    status: str = "pending"
    """pending -> ok | failed."""
    stage: Stage = Stage.PLACE
    """The last stage this host entered."""
    error: str | None = None
    pid: int | None = None
    scratch_dir: str | None = None
    """Where the host wrote its files before the gather (removed once verified)."""
    load: PhaseTiming | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    """Gathered files: path relative to the run directory, bytes, sha256."""
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per shape of the run, in run order: its "warmup" and "profiled" PhaseTiming and its
    "capture" check (read back from the host's trace)."""
    engine: str | None = None
    """The engine this host runs (engines.EngineAssignment.name)."""
    ranks: tuple[int, ...] = ()
    """The engine's ranks on this host."""
    worker: dict[str, Any] | None = None
    """The engine worker process traced on this host: rank, pid, node_id (and port for a
    profiler server). For an engine within one host, the actor's own process."""
    clock: dict[str, Any] | None = None
    """This host's clock against the driver's, as last measured (stages.measure_clocks):
    offset_ms, uncertainty_ms, round trips, NTP state, any warning, and every measurement."""

    # The manifest's top-level host fields describe the first shape (the only one outside a sweep).
    @property
    def warmup(self) -> PhaseTiming | None:
        return self._first_shape().get("warmup")

    @property
    def profiled(self) -> PhaseTiming | None:
        return self._first_shape().get("profiled")

    @property
    def capture(self) -> dict[str, Any] | None:
        return self._first_shape().get("capture")

    def _first_shape(self) -> dict[str, Any]:
        return next(iter(self.shapes.values()), {})

    @property
    def healthy(self) -> bool:
        return self.status != "failed"

    def fail(self, stage: Stage, error: str) -> None:
        self.status, self.stage, self.error = "failed", stage, error
