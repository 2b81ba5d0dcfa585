"""Stand-ins for host actors in the driver's unit tests. The barrier and the stages are
tested here on plain futures; the e2e tests prove the same code on real Ray actors,
real vLLM and real profilers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ray_tpu_profile.config import Capture, RunConfig, Workload
from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.core.records import HostRecord
from ray_tpu_profile.driver.state import RunState

HANG = "hang"
"""A behaviour: the call never returns (until the host is killed, when it fails as a
killed actor's call does)."""


DEFAULT_BEHAVIOURS: dict[str, Callable[..., Any]] = {
    "clock_ns": lambda: time.time_ns(),  # one clock, as simulated hosts have
    # No clock echo: the driver measures over calls of clock_ns, as it falls back to.
    "clock_state": lambda token=None, driver_ip=None: {"ntp": None, "simulated": True, "echo": None},
    # No reading of their own xplanes: the driver reads them.
    "xplane_checks": lambda: {},
}


class FakeHost:
    """Each method call runs the behaviour given for that method (a callable of the call's
    arguments, or HANG) in a thread and returns its Future. Methods without one return
    "ok". calls lists (method, args) in call order."""

    def __init__(self, pool: ThreadPoolExecutor, **behaviours: Any):
        self.pool = pool
        self.behaviours = behaviours
        self.killed = threading.Event()
        self.calls: list[tuple[str, tuple]] = []
        self.name = "host"
        """Set to the host's name by named() (a RayHost knows its host's name)."""

    def __getattr__(self, method: str) -> Callable[..., Future]:
        if method.startswith("_") or method in ("pool", "behaviours", "killed", "calls", "name"):
            raise AttributeError(method)
        behaviour = self.behaviours.get(method, DEFAULT_BEHAVIOURS.get(method, lambda *args: "ok"))

        def call(*args: Any) -> Future:
            self.calls.append((method, args))
            return self.pool.submit(self._run, behaviour, args)

        return call

    def _run(self, behaviour: Any, args: tuple) -> Any:
        if behaviour == HANG:
            self.killed.wait()
            raise RuntimeError("actor killed")
        return behaviour(*args)

    def kill(self) -> None:
        self.killed.set()


def named(handles: dict[str, FakeHost]) -> dict[str, FakeHost]:
    for name, handle in handles.items():
        handle.name = name
    return handles


class Said:
    """Records what the barrier and stages say (progress.Progress's interface)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, ...]] = []

    def stage(self, stage: str, hosts: list[str]) -> None:
        self.lines.append(("stage", str(stage), ",".join(hosts)))

    def host_ok(self, stage: str, host: str, detail: str) -> None:
        self.lines.append(("ok", str(stage), host, detail))

    def host_failed(self, stage: str, host: str, error: str) -> None:
        self.lines.append(("failed", str(stage), host, error))

    def note(self, text: str) -> None:
        self.lines.append(("note", text))


def run_state(
    tmp_path,
    names=("h0", "h1"),
    shapes: tuple[str, ...] = (),
    result_url: str | None = None,
    chips: int = 4,
    **capture: Any,
) -> RunState:
    """A RunState with one record per host name and a staging run directory."""
    from ray_tpu_profile.config import parse_shape
    from ray_tpu_profile.rundir import layout

    workload = Workload(input_len=8, output_len=8, batch_size=4, num_iters_warmup=2, num_iters=1)
    config = RunConfig(
        workload=workload,
        shapes=tuple(parse_shape(s, workload) for s in shapes),
        capture=Capture(**capture),
        profile_result_dir=tmp_path,
    )
    run = RunState(
        config=config,
        argv=["ray-tpu-profile", "run"],
        run_id="20261127-000000-abcdef",
        capture=config.capture,
        chosen_by="test",
        engine_argv=["--model", "m"],
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        tiny_model=True,
        local_root=tmp_path,
        result_url=result_url,
    )
    run.records = [HostRecord(host=Host(name=n, node_id=f"node-{n}", node_ip="127.0.0.1", chips=chips)) for n in names]
    run.run_dir = layout.staging_dir(tmp_path, run.run_id)
    run.run_dir.mkdir(parents=True)
    return run
