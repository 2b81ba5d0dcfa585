"""A run, in order: open -> place -> clocks -> load -> for each shape: warm up, clocks,
place the window, capture -> gather -> verify -> summaries -> clean up -> outcome -> reports ->
final run directory.

Every stage runs on all healthy hosts at once and is waited for as a whole (barrier.py);
a host that fails is marked with its stage and reason and the others carry on; whatever
was captured is gathered, verified and kept (stages.py, capture_plans.py, finish.py).
"""

from __future__ import annotations

from typing import Any

from ray_tpu_profile.config import RunConfig
from ray_tpu_profile.core.records import HostRecord
from ray_tpu_profile.driver import finish, stages
from ray_tpu_profile.driver.capture_plans import make_plan
from ray_tpu_profile.driver.progress import Progress
from ray_tpu_profile.driver.report_imports import ReportImports
from ray_tpu_profile.driver.state import RunState, StageTimings


def execute(
    config: RunConfig,
    argv: list[str],
    progress: Progress,
    actor_logs: bool = False,
    timeline_max_events: int | None = None,
) -> RunState:
    """Runs to the end and returns the final state (its manifest: `run.manifest()`).

    Args:
        config: validated flags (RunConfig.validate()).
        argv: the command line, recorded (credentials redacted).
        progress: where progress and failures are said.
        actor_logs: stream the actors' logs to this console.
        timeline_max_events: per-host event cap of timeline.json.gz.

    Raises:
        ConfigError: before anything is created (bad engine flags, hosts the cluster lacks).
        After that every failure ends up in the state and the manifest.
    """
    run = validate(config, argv)
    progress.note(f"profiler: {run.capture.profiler} ({run.chosen_by})")
    plan = make_plan(run.capture)
    imports: ReportImports | None = None  # open_run records what its body raises: a place that fails comes on here
    with stages.open_run(run, progress, actor_logs) as session:
        hosts = stages.place(run, session)
        stages.measure_clocks(run, hosts)
        # The reports' slowest import while the driver only waits for the hosts to load their
        # engines, and over before the shapes' clocks and instants: the GIL it holds delays
        # the driver's clock stamps (started before the first clocks, it took them from
        # 0.03 to 0.20 s at 1 host in bench/scale.py).
        imports = ReportImports().start()
        stages.load(run, hosts)
        stages.find_workers(run, hosts)
        imports.wait()
        for workload in config.workloads:
            with stages.shape_stages(run, workload) as shape:
                stages.switch_shape(run, hosts, shape)
                stages.warm_up(run, hosts, shape)
                stages.measure_clocks(run, hosts, shape)  # each host's clock, right before its instants
                stages.place_window(run, hosts, shape, plan)
                stages.capture(run, hosts, shape, plan)
        gathered: list[HostRecord] = []
        try:
            stages.gather(run, hosts, gathered)
            stages.verify(run, hosts, plan)
            # After the gather: a host that dies summarising has its traces in already.
            stages.summarise(run, hosts, timeline_max_events)
        finally:  # stopped or not: what is in the run directory leaves no scratch behind
            stages.clean_up(hosts, gathered)
    finish.record_outcome(run)
    finish.place(run)
    finish.write_reports(run, timeline_max_events, progress, imports)
    run.location = finish.finish(run, progress)
    return run


def validate(config: RunConfig, argv: list[str]) -> RunState:
    """What needs no cluster: the backend resolved, the engine flags parsed by vLLM and
    checked against every shape. Raises ConfigError; returns the run's initial state."""
    import importlib.util
    import time

    from ray_tpu_profile.driver.engine_flags import engine_flags
    from ray_tpu_profile.host import engine
    from ray_tpu_profile.host.tiny_model import default_tiny_model_dir
    from ray_tpu_profile.placement import local_capacity
    from ray_tpu_profile.rundir import layout
    from ray_tpu_profile.sim_platform import tpu_inference_cpu

    started = time.monotonic()
    placement = config.placement
    if placement.address is None:  # before vLLM is imported: a typo in --hosts fails in seconds
        local_capacity.check_simulated_hosts(placement.simulated_hosts, local_capacity.this_machine())
        tpu_inference_cpu.driver_env_defaults()  # vLLM's TPU stack, if installed, without a TPU
    capture, chosen_by = config.capture.resolve()
    tiny_model = config.model is None
    model_on_xla = importlib.util.find_spec("tpu_inference") is not None
    engine_argv = engine.engine_argv(
        config.model or str(default_tiny_model_dir()), config.engine_argv, tiny_model, tpu_stack=model_on_xla
    )
    # vLLM itself parses them when the cached spec cannot decide (engine_flags); the
    # model, and the tiny model's defaults, are the tool's own.
    engine_args = engine_flags(engine_argv, trusted_count=len(engine_argv) - len(config.engine_argv))
    for workload in config.workloads:
        engine.check_engine_args(engine_args, workload)
    if placement.address is None:  # now with the model processes an engine puts on each host
        devices = engine_args.tensor_parallel_size * engine_args.pipeline_parallel_size
        local_capacity.check_simulated_hosts(
            placement.simulated_hosts,
            local_capacity.this_machine(),
            local_capacity.model_processes_per_host(placement.simulated_chips, devices),
        )
    run_id = layout.new_run_id()
    run = RunState(
        config=config,
        argv=argv,
        run_id=run_id,
        capture=capture,
        chosen_by=chosen_by,
        engine_argv=engine_argv,
        tensor_parallel_size=engine_args.tensor_parallel_size,
        pipeline_parallel_size=engine_args.pipeline_parallel_size,
        tiny_model=tiny_model,
        local_root=config.profile_result_dir,
        result_url=f"{config.profile_result_url}/{run_id}" if config.profile_result_url else None,
        timings=StageTimings(started=started),
    )  # the run's total counts validation too
    run.model_on_xla = model_on_xla
    run.bundle_per_chip = not model_on_xla
    run.timings.add("validate", time.monotonic() - started)
    return run


def plan(config: RunConfig, argv: list[str]) -> dict[str, Any]:
    """What `run` would do, without loading a model: for `ray-tpu-profile plan`."""
    from dataclasses import asdict

    from ray_tpu_profile.placement import cluster
    from ray_tpu_profile.rundir import layout

    run = validate(config, argv)
    placement = config.placement
    with cluster.ray_session(
        placement.address, placement.simulated_hosts, log_to_driver=False, chips_per_host=placement.simulated_chips
    ) as info:
        found = cluster.discover_hosts()
        hosts, whole_slice, run.engines = stages.choose_hosts(run, found)
    first = config.workloads[0]
    spans = run.engines_span_hosts
    return {
        "cluster": info,
        "slices": _slices_json(found),
        "hosts": [h.to_json() for h in hosts],
        "engines": [e.to_json() for e in run.engines],
        "placement": {
            "reservation": cluster.reservation_kind(hosts, whole_slice, spans),
            "bundles": [
                {"TPU": 1} if spans and run.bundle_per_chip else {"TPU": h.chips}
                for h in hosts
                for _ in range(h.chips if spans and run.bundle_per_chip else 1)
            ],
            "strategy": "PACK, each bundle pinned to its host" if spans else "STRICT_SPREAD",
        },
        "actors": [
            {
                "name": f"ray-tpu-profile-<run-id>-{h.name}",
                "host": h.name,
                "node_id": h.node_id,
                "chips": 0 if spans else h.chips,
            }
            for h in hosts
        ],
        "workload": {"shape": first.shape, **asdict(first), "shapes": [w.shape for w in config.workloads]},
        "capture": {
            "profiler": run.capture.profiler,
            "chosen_by": run.chosen_by,
            "delay_ms": run.capture.delay_ms,
            "duration_ms": run.capture.duration_ms,
        },
        "engine": {
            "argv": layout.redacted_argv(run.engine_argv),
            "tensor_parallel_size": run.tensor_parallel_size,
            "pipeline_parallel_size": run.pipeline_parallel_size,
            "env": layout.redacted_env(run.actor_env),
        },
    }


def _slices_json(found: list) -> list[dict[str, Any]]:
    """The TPU slices among the hosts found, by name: each one's hosts and pod type, for `plan`."""
    slices = sorted({h.slice_name for h in found if h.slice_name})
    return [
        {
            "name": s,
            "hosts": [h.name for h in found if h.slice_name == s],
            "pod_type": next(h.pod_type for h in found if h.slice_name == s),
        }
        for s in slices
    ]
