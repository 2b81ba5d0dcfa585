"""vLLM's built-in torch profiler (ProfilerConfig), started and stopped around the
profiled iterations. Traces every engine step in between; the time window
(--delay-ms/--duration-ms) belongs to the profiler-server backends.

An engine that spans hosts: vLLM's start_profile / stop_profile reach every worker, and
each writes its trace on its own host into the directory the owner configured (the same
path everywhere). Each host then takes the files of its own ranks (collect)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ray_tpu_profile.core.schedule import StepWindow
from ray_tpu_profile.profilers.base import CaptureBackend

ENGINE_DIR_SUFFIX = "-torch"
"""An engine across hosts writes into <run scratch>/<engine>-torch on each host, outside
every host's output directory: on hosts that share a disk (simulated ones) a host must
deliver only its own ranks' files."""


class VllmTorchProfiler(CaptureBackend):
    name = "torch"

    def __init__(self, trace_dir: Path, host_name: str):
        super().__init__(trace_dir, host_name)
        self.torch_dir = self.trace_dir / "torch"
        self.engine: str | None = None
        """An engine that spans hosts: its name (the owner's trace file prefix)."""
        self.collect_from: Path | None = None

    def configure(self, engine_args: Any, engine: str | None = None) -> None:
        from vllm.config import ProfilerConfig

        self.engine = engine
        vllm_dir = self.engine_dir(engine) if engine else self.torch_dir
        vllm_dir.mkdir(parents=True, exist_ok=True)
        self.torch_dir.mkdir(parents=True, exist_ok=True)
        engine_args.profiler_config = ProfilerConfig(
            profiler="torch",
            torch_profiler_dir=str(vllm_dir.resolve()),
            # With stacks on, the CPU build intermittently fails to write its text table.
            torch_profiler_with_stack=False,
        )

    def engine_dir(self, engine: str) -> Path:
        return self.trace_dir.parent / f"{engine}{ENGINE_DIR_SUFFIX}"

    @property
    def prefix(self) -> str:
        """In every trace file name: the host (the engine, for one across hosts), and the
        shape in a sweep."""
        name = self.engine or self.host_name
        return f"{name}-{self.shape_tag}" if self.shape_tag else name

    def start(self, llm: Any, trace_start_ns: int | None = None, window: StepWindow | None = None) -> None:
        if llm is None:  # a host of an engine across hosts: its owner starts every worker's profiler
            return
        if window is not None:
            llm.start_profile(
                profile_prefix=self.prefix,
                delay_iterations=window.delay_iterations,
                max_iterations=window.max_iterations,
            )
        else:
            llm.start_profile(profile_prefix=self.prefix)

    def stop(self, llm: Any) -> None:
        if llm is None:
            return
        llm.stop_profile()
        if self.shape_tag and not self.engine:
            # A sweep: each shape's files in a folder of their own, found by their prefix.
            shape_dir = self.torch_dir / self.shape_tag
            shape_dir.mkdir(exist_ok=True)
            for path in self.torch_dir.glob(f"{self.prefix}_*"):
                path.rename(shape_dir / path.name)

    def trace_worker(self, worker: dict[str, Any]) -> None:
        """An engine across hosts: this host takes the files its worker writes there."""
        self.collect_from = Path(worker["trace_dir"])

    def collect(self, ranks: tuple[int, ...], engine: str | None = None) -> list[str]:
        """Moves the files the workers of these ranks of the engine wrote on this host
        (vLLM names them `<prefix>_[dp0_pp0_tp1_...]rank<r>.<...>`) into this host's own
        folder (the shape's, in a sweep), named for this host; returns their names."""
        if self.collect_from is None:
            return []
        engine_prefix = f"{engine}-{self.shape_tag}" if self.shape_tag else engine
        host_prefix = f"{self.host_name}-{self.shape_tag}" if self.shape_tag else self.host_name
        mine = re.compile(r"_rank(" + "|".join(map(str, ranks)) + r")\.")
        dest = self.torch_dir / self.shape_tag if self.shape_tag else self.torch_dir
        dest.mkdir(parents=True, exist_ok=True)
        moved = []
        for path in sorted(p for p in self.collect_from.iterdir() if p.is_file()):
            if path.name.startswith(f"{engine_prefix}_") and mine.search(path.name):
                target = dest / f"{host_prefix}{path.name[len(engine_prefix) :]}"
                path.rename(target)
                moved.append(target.name)
        return moved

    def describe(self) -> dict[str, Any]:
        return {"profiler": self.name, "window": {"kind": "iterations", "what": "every profiled iteration"}}
