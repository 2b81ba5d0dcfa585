"""The interface every capture backend implements, in the model's own process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_tpu_profile.core.schedule import Window


class CaptureBackend(ABC):
    """Lives in the host actor beside the LLM. Call order:
    configure(engine_args) -> [LLM built] -> attach(llm) -> start(llm, trace_start_ns) ... stop(llm)."""

    name: str = ""

    def __init__(self, trace_dir: Path, host_name: str):
        self.trace_dir = Path(trace_dir)
        self.host_name = host_name
        self.shape_tag: str | None = None

    def set_shape(self, shape_tag: str | None) -> None:
        """The next captures belong to this shape of a sweep (None: not a sweep)."""
        self.shape_tag = shape_tag

    def configure(self, engine_args: Any, engine: str | None = None) -> None:
        """Adjust vLLM EngineArgs before the LLM is built (default: nothing); engine names
        an engine that spans hosts."""

    def attach(self, llm: Any) -> None:
        """Called once the LLM is ready (default: nothing)."""

    @abstractmethod
    def start(self, llm: Any, trace_start_ns: int | None = None, window: Window | None = None) -> None:
        """Begin recording; trace_start_ns is when a time-window backend's trace must begin
        on every host (epoch ns; None: its delay from now). window, when given, is a phase
        window (schedule.TimeWindow for server backends, StepWindow for torch) replacing the
        configured one."""

    @abstractmethod
    def stop(self, llm: Any) -> None:
        """Finish recording; every trace file is complete under trace_dir on return."""

    def warm_up(self, run_once: Callable[[], float] | None) -> list[float]:
        """Called at the start of warmup: runs the iterations the backend's own warm-up
        needs (a throwaway capture's), and returns their latencies; [] where it needs none.
        The host's --num-iters-warmup untraced iterations come after. run_once None: a host
        of an engine across hosts, whose iterations its engine's owner runs."""
        return []

    def trace_worker(self, worker: dict[str, Any]) -> None:
        """An engine across hosts: trace this host's worker process (engine_workers)."""

    def collect(self, ranks: tuple[int, ...], engine: str | None = None) -> list[str]:
        """An engine across hosts: take this host's ranks' files after a capture."""
        return []

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this capture."""
        return {"profiler": self.name}
