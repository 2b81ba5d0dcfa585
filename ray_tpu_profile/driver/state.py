"""What the driver knows about a run as it goes, handed from stage to stage. The manifest
is made from it alone. Pure: no Ray, vLLM or profiler imports."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ray_tpu_profile.config import Capture, RunConfig, Workload
from ray_tpu_profile.core.clocks import ClockOffset
from ray_tpu_profile.core.records import EngineRole, HostRecord, HostStatus, RunStatus, Stage, run_status
from ray_tpu_profile.core.schedule import Window
from ray_tpu_profile.core.versions import package_versions
from ray_tpu_profile.placement.engines import EngineAssignment
from ray_tpu_profile.rundir import layout


def engine_across_hosts_env(engine: EngineAssignment, bundle_per_chip: bool) -> dict[str, str]:
    """Env of the actors of an engine that spans hosts. vLLM's Ray executor takes ranks
    in the order of VLLM_RAY_BUNDLE_INDICES (else bundles on the owner's node, then by
    node id): the engine's bundles in host order make rank r that of chip r. tpu-inference
    runs its multi-host engine on Ray with TPU_MULTIHOST_BACKEND=ray."""
    if bundle_per_chip:
        return {"VLLM_RAY_BUNDLE_INDICES": ",".join(map(str, range(engine.devices)))}
    return {"TPU_MULTIHOST_BACKEND": "ray"}


def engine_roles(engines: list[EngineAssignment]) -> dict[str, EngineRole]:
    """Host name -> what it does for its engine (the engine's nodes: its owner's first)."""
    roles = {}
    for e in engines:
        node_ids = tuple(h.node_id for h in sorted(e.hosts, key=lambda h: h != e.owner))
        roles.update({h.name: EngineRole(e.name, h == e.owner, e.spans_hosts, e.ranks(h), node_ids) for h in e.hosts})
    return roles


SHAPE_STAGES = (Stage.SHAPE, Stage.WARMUP, Stage.CLOCKS, Stage.WINDOW, Stage.CAPTURE)
"""Stages run once per shape of a sweep: timed per shape as well as in total."""


@dataclass
class StageTimings:
    """Driver wall time per stage. A stage entered more than once (every shape of a
    sweep warms up and captures) adds up in `total_s`; `by_shape_s` keeps each shape's."""

    started: float = field(default_factory=time.monotonic)
    total_s: dict[str, float] = field(default_factory=dict)
    by_shape_s: dict[str, dict[str, float]] = field(default_factory=dict)
    _open: tuple[Stage, str | None, float] | None = None
    ended: float | None = None
    """When the run ended (end()): `total` stops there."""

    def add(self, name: str, seconds: float, shape: str | None = None) -> None:
        self.total_s[name] = round(self.total_s.get(name, 0.0) + seconds, 4)
        if shape is not None:
            per_shape = self.by_shape_s.setdefault(shape, {})
            per_shape[name] = round(per_shape.get(name, 0.0) + seconds, 4)

    def begin(self, stage: Stage, shape: str | None) -> None:
        self.close()
        self._open = (stage, shape if stage in SHAPE_STAGES else None, time.monotonic())

    def close(self) -> None:
        if self._open is not None:
            stage, shape, t0 = self._open
            self.add(stage, time.monotonic() - t0, shape)
            self._open = None

    def end(self) -> None:
        self.close()
        self.ended = self.ended or time.monotonic()

    def to_json(self) -> dict[str, float]:
        return {**self.total_s, "total": round((self.ended or time.monotonic()) - self.started, 4)}


@dataclass
class ShapeRun:
    """One shape's capture as the driver planned and checked it (manifest capture.shapes)."""

    workload: Workload
    tag: str | None
    """In the shape's session and file names: the shape in a sweep, else None."""
    loads: dict[str, int] | None = None
    """A sweep: per host, models loaded so far when this shape began (must stay 1)."""
    planned: dict[str, Any] = field(default_factory=dict)
    """instant_ns (T), iterations_start_ns, trace_start_ns, delay_ms, phase, duration_ms."""
    window: Window | None = None
    """The --phase window placed for this shape."""
    backend: dict[str, Any] = field(default_factory=dict)
    """What the first healthy host's capture backend says about the capture."""
    checked: dict[str, Any] = field(default_factory=dict)
    """What verification found across hosts: session, start_skew_ms (on the driver's
    clock), start_skew_uncertainty_ms, start_skew_raw_ms (on the hosts' own clocks)."""
    clock_offsets: dict[str, ClockOffset] = field(default_factory=dict)
    """Each host's clock offset, measured right before this shape's window and capture."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tag": self.tag,
            **({"loads": self.loads} if self.loads is not None else {}),
            **self.planned,
        }
        out.update({k: v for k, v in self.backend.items() if k not in out})
        if self.window is not None:
            out["window"] = self.window.to_json()
        return {**out, **self.checked}


@dataclass
class RunState:
    """A run from validation to its manifest. Stages read and update it; nothing else
    carries state between them.

    Attributes:
        config: the validated flags.
        capture: config.capture with `auto` resolved to a backend (chosen_by says why).
        records: one per chosen host, in host order.
        shapes: per shape of the run, in run order.
        stage: the stage entered last (the manifest's `stage`).
        run_dir: where the run directory is built: `<root>/.<run-id>.partial` until the
            run ends, then `<root>/<run-id>`; for a result URL, a temporary local root.
    """

    config: RunConfig
    argv: list[str]
    run_id: str
    capture: Capture
    chosen_by: str
    engine_argv: list[str]
    """The engine flags as vLLM parses them (the tiny model's defaults first)."""
    tensor_parallel_size: int
    pipeline_parallel_size: int
    tiny_model: bool
    local_root: Path
    result_url: str | None = None
    records: list[HostRecord] = field(default_factory=list)
    whole_slice: bool = False
    """Whether the chosen hosts are a whole TPU slice (reserved through ray.util.tpu)."""
    engines: list[EngineAssignment] = field(default_factory=list)
    """The vLLM engines the hosts run (engines.plan_engines)."""
    model_on_xla: bool = False
    """vLLM runs the model through tpu-inference (JAX, installed here): every trace must
    hold XLA's work, and collectives where an engine has more than one device."""
    stand_ins: dict[str, str] = field(default_factory=dict)
    """Parts of vLLM's TPU stack that ran another way than on a TPU (simulated hosts:
    sim_platform.tpu_inference_cpu), by part, as the first host's process reported them."""
    bundle_per_chip: bool = True
    """An engine across hosts: vLLM's Ray executor takes one placement-group bundle per
    chip; tpu-inference's (where it is installed) one per host with all its chips."""
    shapes: dict[str, ShapeRun] = field(default_factory=dict)
    shape: str | None = None
    """The shape whose stages run now, for per-shape timings."""
    stage: Stage = Stage.VALIDATE
    error: str | None = None
    stopped: bool = False
    publish_error: str | None = None
    reports_error: str | None = None
    run_dir: Path | None = None
    location: str | None = None
    """Where the finished run directory is: its path, or the result URL it went to."""
    cluster_info: dict[str, Any] = field(default_factory=dict)
    timings: StageTimings = field(default_factory=StageTimings)
    _owners: dict[str, HostRecord] | None = field(default=None, repr=False)
    """Host name -> its engine owner's record (owner_record)."""

    @property
    def actor_env(self) -> dict[str, str]:
        """Env of every model process: the tool's, then the user's --env (which wins)."""
        from ray_tpu_profile.host.engine import ENGINE_ENV

        env = dict(ENGINE_ENV)
        if self.engines_span_hosts:
            env.update(engine_across_hosts_env(self.engines[0], self.bundle_per_chip))
        return {**env, **dict(self.config.placement.env)}

    @property
    def actor_env_set_by(self) -> Literal["runtime_env", "actor"]:
        """Who sets actor_env in each actor process: "runtime_env" (Ray, before the process
        starts) or "actor" (the actor itself, first thing). A runtime_env makes Ray start
        each worker twice (setup_worker.py, then the worker; measured 0.78 s against 0.5 s per
        actor, bench/RESULTS.md), so it is used only where it is needed: a user's --env may
        be read when a process starts (LD_PRELOAD, PYTHONPATH), and vLLM's Ray workers of an
        engine across hosts inherit a runtime_env, not their parent's env. The tool's own
        (ENGINE_ENV) is read by vLLM when the engine is built, after the actor set it."""
        return "runtime_env" if self.engines_span_hosts or self.config.placement.env else "actor"

    @property
    def local_actors_without_runtime_env(self) -> bool:
        """Whether actor_env_set_by will be "actor" on the local simulated cluster, known
        before its hosts are (an engine spans hosts there when it needs more devices than a
        simulated host's chips): only then can each actor take the worker its host's raylet
        prestarts (cluster.LOCAL_SYSTEM_CONFIG), so only then is one prestarted."""
        placement = self.config.placement
        devices = self.tensor_parallel_size * self.pipeline_parallel_size
        return not placement.env and devices <= placement.simulated_chips

    def healthy(self) -> list[HostRecord]:
        return [r for r in self.records if r.healthy]

    def host_instant_ns(self, shape: ShapeRun, host_name: str, driver_ns: int) -> int:
        """An instant the driver picked, as host_name's clock will read it (its offset
        measured for this shape), or as is with --no-clock-correction."""
        offset = shape.clock_offsets.get(host_name)
        if offset is None or not self.capture.clock_correction:
            return driver_ns
        return offset.to_host_ns(driver_ns)

    @property
    def engines_span_hosts(self) -> bool:
        return any(e.spans_hosts for e in self.engines)

    def engine_hosts(self) -> dict[str, list[str]]:
        """Host name -> every host of its engine (they fail together)."""
        return {h.name: [m.name for m in e.hosts] for e in self.engines for h in e.hosts}

    def engine_roles(self) -> dict[str, EngineRole]:
        return engine_roles(self.engines)

    def owner_record(self, record: HostRecord) -> HostRecord:
        """The record of the host that owns record's engine (where its iterations run).
        Looked up in a table built once: stages ask it for every host (a search per call
        made that quadratic in hosts)."""
        if self._owners is None or len(self._owners) != len(self.records):
            by_name = {r.host.name: r for r in self.records}
            owner_of = {h.name: e.owner.name for e in self.engines for h in e.hosts}
            self._owners = {name: by_name[owner_of.get(name, name)] for name in by_name}
        return self._owners[record.host.name]

    def enter(self, stage: Stage) -> None:
        """Begins a stage: timed, every healthy host is in it, and the manifest on disk says
        so (a driver that dies leaves a run directory that says where)."""
        self.timings.begin(stage, self.shape)
        self.stage = stage
        for r in self.healthy():
            r.stage = stage
        self.write_manifest()

    def end_hosts(self) -> None:
        """Hosts still pending when the run ends (it stopped or failed as a whole) fail
        at the stage it ended in."""
        for r in self.records:
            if r.status == HostStatus.PENDING:
                r.fail(self.stage, self.error or f"did not finish (run ended during {self.stage})")

    @property
    def status(self) -> RunStatus:
        """ok | partial | failed | stopped; a failed publish fails the run (the exit code
        follows this, so the two always agree)."""
        if self.publish_error and not self.stopped:
            return RunStatus.FAILED
        return run_status((r.status for r in self.records), self.stopped)

    def capture_json(self) -> dict[str, Any]:
        # The top-level fields describe the first shape (the only one outside a sweep).
        shapes = {name: s.to_json() for name, s in self.shapes.items()}
        first = next(iter(shapes.values()), {})
        out = {
            "profiler": self.capture.profiler,
            "chosen_by": self.chosen_by,
            **{k: v for k, v in first.items() if k != "tag"},
        }
        return {**out, "shapes": shapes} if self.config.sweep else out

    def manifest(self) -> dict[str, Any]:
        config, workloads = self.config, self.config.workloads
        return layout.build_manifest(
            run_id=self.run_id,
            status=self.status,
            stage=self.stage,
            error=self.error,
            command=layout.redacted_argv(self.argv),
            versions=package_versions(),
            workload={"shape": workloads[0].shape, **asdict(workloads[0]), "shapes": [w.shape for w in workloads]},
            capture=self.capture_json(),
            cluster={
                **self.cluster_info,
                "hosts_requested": config.placement.hosts,
                "slice_requested": config.placement.slice_name,
            },
            engine={
                "argv": layout.redacted_argv(self.engine_argv),
                "env": layout.redacted_env(self.actor_env),
                "env_set_by": self.actor_env_set_by,
                "tiny_model": self.tiny_model,
                "stack": "tpu-inference" if self.model_on_xla else "vllm",
                "stand_ins": self.stand_ins,
            },
            timings_s=self.timings.to_json(),
            timings_by_shape_s=self.timings.by_shape_s,
            engines=[e.to_json() for e in self.engines],
            records=self.records,
            result_url=None if self.result_url is None else layout.redacted_url(self.result_url),
            outputs={"reports_error": self.reports_error, "publish_error": self.publish_error},
        )

    def write_manifest(self) -> dict[str, Any]:
        data = self.manifest()
        if self.run_dir is not None:
            layout.write_json_atomic(self.run_dir / layout.MANIFEST, data)
        return data
