"""Ray: connect or start a local simulated cluster, find TPU hosts, reserve them with a
placement group (one bundle per host, strictly spread), start one actor per host."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ray_tpu_profile.hosts import (
    ACCELERATOR_LABEL,
    POD_TYPE_LABEL,
    SLICE_LABEL,
    TOPOLOGY_LABEL,
    WORKER_ID_LABEL,
    Host,
    hosts_from_nodes,
)

SIMULATED_SLICE = "local-sim"
SIMULATED_CHIPS_PER_HOST = 4
# v6e topologies by chip count, for the simulated slice's ray.io/tpu-topology label.
V6E_TOPOLOGY_BY_CHIPS = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8"}


def simulated_host_node_args(num_hosts: int, chips_per_host: int = SIMULATED_CHIPS_PER_HOST,
                             slice_name: str = SIMULATED_SLICE) -> list[dict[str, Any]]:
    """Node args for the simulated hosts of one v6e slice: the resources, labels and TPU
    env vars Ray gives the hosts of a real slice, so placement (ours and ray.util.tpu's)
    cannot tell them apart."""
    chips = num_hosts * chips_per_host
    pod_type = f"v6e-{chips}"
    topology = V6E_TOPOLOGY_BY_CHIPS.get(chips)
    args = []
    for worker_id in range(num_hosts):
        resources = {"TPU": chips_per_host, slice_name: 1}
        if worker_id == 0:
            resources[f"TPU-{pod_type}-head"] = 1
        labels = {
            SLICE_LABEL: slice_name,
            WORKER_ID_LABEL: str(worker_id),
            POD_TYPE_LABEL: pod_type,
            ACCELERATOR_LABEL: "TPU-V6E",
        }
        if topology:
            labels[TOPOLOGY_LABEL] = topology
        env_vars = {"TPU_NAME": slice_name, "TPU_WORKER_ID": str(worker_id), "TPU_ACCELERATOR_TYPE": pod_type}
        args.append(dict(num_cpus=1, resources=resources, labels=labels, env_vars=env_vars))
    return args


@contextmanager
def ray_session(address: str | None, simulated_hosts: int, log_to_driver: bool) -> Iterator[dict[str, Any]]:
    """Connected to `address`, or to a local cluster of simulated TPU hosts started here
    and torn down on exit. Yields a description for the manifest."""
    import ray

    cluster = None
    try:
        if address:
            ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
            info = {"kind": "existing", "address": address}
        else:
            from ray.cluster_utils import Cluster

            # The head holds no TPU so actors land only on the simulated hosts.
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
            for node_args in simulated_host_node_args(simulated_hosts):
                cluster.add_node(**node_args)
            ray.init(address=cluster.address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
            info = {"kind": "local-simulated", "address": cluster.address, "simulated_hosts": simulated_hosts}
        yield info
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def discover_hosts() -> list[Host]:
    import ray

    return hosts_from_nodes(ray.nodes())


@dataclass
class Reservation:
    """The placement group holding every selected host's chips, and its actors."""

    placement_group: Any
    actors: dict[str, Any]
    slice_group: Any = None
    """The ray.util.tpu.SlicePlacementGroup that made placement_group, when one did."""

    @property
    def kind(self) -> str:
        return "ray.util.tpu.SlicePlacementGroup" if self.slice_group is not None else "placement_group"

    def release(self) -> None:
        """Kill the actors and remove the placement group; safe to call twice."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors = {}
        if self.slice_group is not None:
            self.slice_group.shutdown()
        elif self.placement_group is not None:
            remove_placement_group(self.placement_group)
        self.placement_group = self.slice_group = None


def reservation_kind(hosts: list[Host], whole_slice: bool) -> str:
    """How reserve_hosts will reserve these hosts (for plan and the manifest)."""
    first = hosts[0]
    if whole_slice and first.slice_name and first.topology and first.pod_type:
        return "ray.util.tpu.SlicePlacementGroup"
    return "placement_group"


def reserve_hosts(hosts: list[Host], run_id: str, timeout_s: float, whole_slice: bool = False) -> Reservation:
    """One bundle per host with all its chips (strictly spread), bundle i pinned to host i
    by its node-id label. A whole TPU slice is reserved through Ray's own
    SlicePlacementGroup (the path a real slice takes); any other set of hosts through a
    plain placement group."""
    import ray
    from ray.util.placement_group import placement_group

    name = f"ray-tpu-profile-{run_id}"
    pinned = [{"ray.io/node-id": h.node_id} for h in hosts]
    slice_group = None
    first = hosts[0]
    if reservation_kind(hosts, whole_slice) == "ray.util.tpu.SlicePlacementGroup":
        from ray.util.tpu import SlicePlacementGroup

        slice_group = SlicePlacementGroup(
            topology=first.topology,
            accelerator_version=first.pod_type.split("-")[0],
            chips_per_vm=first.chips,
            strategy="STRICT_SPREAD",
            name=name,
            # Naming the slice skips Ray's head reservation, which could pick another slice.
            bundle_label_selector=[{**p, SLICE_LABEL: first.slice_name} for p in pinned],
        )
        pg = slice_group.placement_group
    else:
        pg = placement_group(
            bundles=[{"TPU": h.chips} for h in hosts], strategy="STRICT_SPREAD", name=name,
            bundle_label_selector=pinned,
        )
    reservation = Reservation(placement_group=pg, actors={}, slice_group=slice_group)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        reservation.release()
        raise TimeoutError(
            f"could not reserve {len(hosts)} host(s) ({', '.join(h.name for h in hosts)}) within {timeout_s:.0f} s: "
            "are their TPU chips held by another job?"
        )
    return reservation


def start_actors(reservation: Reservation, hosts: list[Host], run_id: str, env_vars: dict[str, str]) -> dict[str, Any]:
    """One HostWorker per host, in bundle i of the placement group, holding all chips."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ray_tpu_profile.host import HostWorker

    remote_cls = ray.remote(HostWorker)
    for index, host in enumerate(hosts):
        reservation.actors[host.name] = remote_cls.options(
            name=f"ray-tpu-profile-{run_id}-{host.name}",
            num_cpus=0,
            resources={"TPU": host.chips},
            max_restarts=0,
            runtime_env={"env_vars": env_vars},
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=reservation.placement_group, placement_group_bundle_index=index
            ),
        ).remote(host.name, run_id)
    return reservation.actors


class RayHost:
    """A HostWorker actor as the barrier calls it: each method call returns a Future."""

    def __init__(self, actor: Any):
        self.actor = actor

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        remote_method = getattr(self.actor, method)
        return lambda *args: remote_method.remote(*args).future()

    def kill(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)
