"""Which Ray nodes are TPU hosts, in what order, under what names. Pure: works on the
dicts `ray.nodes()` returns, so it is tested without a cluster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ray_tpu_profile.errors import ConfigError

# Node labels Ray sets on TPU hosts (ray.util.tpu, KubeRay).
SLICE_LABEL = "ray.io/tpu-slice-name"
WORKER_ID_LABEL = "ray.io/tpu-worker-id"
POD_TYPE_LABEL = "ray.io/tpu-pod-type"
TOPOLOGY_LABEL = "ray.io/tpu-topology"
ACCELERATOR_LABEL = "ray.io/accelerator-type"
NODE_ID_LABEL = "ray.io/node-id"
"""Ray's own label on every node: pins a placement-group bundle to one host."""


@dataclass(frozen=True)
class Host:
    name: str
    """Stable name used for actors, trace files and the manifest."""
    node_id: str
    node_ip: str
    chips: int
    """TPU chips on this host (the node's `TPU` resource)."""
    slice_name: str | None = None
    worker_id: int | None = None
    pod_type: str | None = None
    topology: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def hosts_from_nodes(nodes: Iterable[dict[str, Any]]) -> list[Host]:
    """Alive nodes with a `TPU` resource, sorted by slice and worker id, then address.

    Named `<slice>-w<worker id>` when Ray's TPU labels are there, else `host<i>`.
    """
    found = []
    for node in nodes:
        chips = node.get("Resources", {}).get("TPU", 0)
        if not node.get("Alive") or chips <= 0:
            continue
        labels = node.get("Labels") or {}
        worker = labels.get(WORKER_ID_LABEL)
        found.append(
            dict(
                node_id=node["NodeID"],
                node_ip=node.get("NodeManagerAddress", ""),
                chips=int(chips),
                slice_name=labels.get(SLICE_LABEL) or None,
                worker_id=int(worker) if worker not in (None, "") else None,
                pod_type=labels.get(POD_TYPE_LABEL) or None,
                topology=labels.get(TOPOLOGY_LABEL) or None,
            )
        )
    found.sort(
        key=lambda h: (
            h["slice_name"] or "",
            h["worker_id"] if h["worker_id"] is not None else -1,
            h["node_ip"],
            h["node_id"],
        )
    )
    hosts = []
    for index, h in enumerate(found):
        if h["slice_name"] is not None and h["worker_id"] is not None:
            name = f"{h['slice_name']}-w{h['worker_id']}"
        else:
            name = f"host{index}"
        hosts.append(Host(name=name, **h))
    return hosts


def describe_slices(hosts: list[Host]) -> str:
    """`a (2 hosts, v6e-8), b (...)` for error messages."""
    slices: dict[str, list[Host]] = {}
    for h in hosts:
        if h.slice_name:
            slices.setdefault(h.slice_name, []).append(h)
    return ", ".join(
        f"{name} ({len(hs)} hosts, {hs[0].pod_type or 'unknown type'})" for name, hs in sorted(slices.items())
    )


def select_slice(hosts: list[Host], slice_name: str | None) -> list[Host]:
    """The hosts of --slice; without it, of the only slice. Hosts without slice labels
    (not on a TPU slice Ray knows) are used as one pool when no slice is found."""
    slices = sorted({h.slice_name for h in hosts if h.slice_name})
    if slice_name is not None:
        if slice_name not in slices:
            found = describe_slices(hosts) or "no TPU slice"
            raise ConfigError("--slice", slice_name, f"no such TPU slice; the cluster has: {found}")
        return [h for h in hosts if h.slice_name == slice_name]
    if len(slices) > 1:
        raise ConfigError(
            "--slice", "(not given)", f"the cluster has {len(slices)} TPU slices, choose one: {describe_slices(hosts)}"
        )
    return list(hosts)


def select_hosts(hosts: list[Host], wanted: int | None, slice_name: str | None = None) -> list[Host]:
    """The first `wanted` hosts (all when None) of the chosen slice; too many is bad input."""
    if not hosts:
        raise ConfigError(
            "--hosts", wanted if wanted is not None else "all", "the Ray cluster has no node with a TPU resource"
        )
    hosts = select_slice(hosts, slice_name)
    if wanted is None:
        return list(hosts)
    if wanted > len(hosts):
        raise ConfigError(
            "--hosts", wanted, f"the Ray cluster has only {len(hosts)} TPU host(s): {', '.join(h.name for h in hosts)}"
        )
    return hosts[:wanted]
