"""Which hosts make up each vLLM engine. Pure: works on hosts.Host, tested without a cluster.

An engine that fits one host's chips (tensor x pipeline parallel <= chips) runs on each
host on its own, as data-parallel replicas. A larger one spans k = (TP x PP) / chips
consecutive hosts of one slice, in TPU worker-id order; several such engines on a slice
are replicas too. The first host of an engine owns it: the vLLM engine core runs there
and rank 0 is one of its chips, as tpu-inference's Ray executor places it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.errors import ConfigError


@dataclass(frozen=True)
class EngineAssignment:
    """One vLLM engine and the hosts it runs on.

    Attributes:
        name: `engine<i>`, in host order.
        hosts: its hosts, in TPU worker-id order; hosts[0] owns the engine.
        tensor_parallel_size, pipeline_parallel_size: as the engine flags say.
    """

    name: str
    hosts: tuple[Host, ...]
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    @property
    def owner(self) -> Host:
        return self.hosts[0]

    @property
    def spans_hosts(self) -> bool:
        return len(self.hosts) > 1

    @property
    def devices(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def ranks(self, host: Host) -> tuple[int, ...]:
        """The engine's ranks (one per chip it uses) on host: consecutive, host by host."""
        if not self.spans_hosts:
            return tuple(range(self.devices))
        per_host = self.devices // len(self.hosts)
        index = self.hosts.index(host)
        return tuple(range(index * per_host, (index + 1) * per_host))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hosts": [h.name for h in self.hosts],
            "owner": self.owner.name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "ranks": {h.name: list(self.ranks(h)) for h in self.hosts},
        }


def plan_engines(
    hosts: list[Host], tensor_parallel_size: int, pipeline_parallel_size: int = 1, slice_hosts: int | None = None
) -> list[EngineAssignment]:
    """The engines the chosen hosts make (ConfigError naming the flag, the value and what
    would fit when they cannot). slice_hosts: how many hosts the slice has (default: the
    chosen ones), to say what fits."""
    tp, pp = tensor_parallel_size, pipeline_parallel_size
    devices = tp * pp
    chips = min(h.chips for h in hosts)
    if devices <= chips:
        return [EngineAssignment(f"engine{i}", (h,), tp, pp) for i, h in enumerate(hosts)]
    flag, value = ("--tensor-parallel-size", tp) if pp == 1 else ("--pipeline-parallel-size", pp)
    available = slice_hosts or len(hosts)
    fits = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256) if n <= chips * available and (n <= chips or n % chips == 0)]
    if devices % chips:
        raise ConfigError(
            flag,
            value,
            f"TP x PP = {devices} is not a whole number of hosts of {chips} chips; what fits: {_listing(fits)}",
        )
    span = devices // chips
    if span > available:
        raise ConfigError(
            flag,
            value,
            f"an engine of TP x PP = {devices} needs {span} hosts of {chips} chips, "
            f"the slice has {available}; what fits: {_listing(fits)}",
        )
    if len(hosts) % span:
        multiples = [n for n in range(span, available + 1, span)]
        raise ConfigError(
            "--hosts",
            len(hosts),
            f"an engine of TP x PP = {devices} spans {span} hosts of {chips} "
            f"chips, so the host count must be a multiple of {span}: "
            f"{_listing(multiples)}",
        )
    engines = []
    for i in range(0, len(hosts), span):
        members = tuple(hosts[i : i + span])
        slices = sorted({h.slice_name or "(no slice)" for h in members})
        if len(slices) > 1:
            raise ConfigError(
                "--hosts",
                len(hosts),
                f"engine{len(engines)} would span slices {' and '.join(slices)} "
                f"({', '.join(h.name for h in members)}); an engine runs within one slice",
            )
        engines.append(EngineAssignment(f"engine{len(engines)}", members, tp, pp))
    return engines


def _listing(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "none"
