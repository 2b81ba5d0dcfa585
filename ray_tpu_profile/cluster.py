"""Ray: connect or start a local simulated cluster, find TPU hosts, reserve them with a
placement group (one bundle per host, strictly spread), start one actor per host."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ray_tpu_profile.hosts import Host, hosts_from_nodes

SIMULATED_SLICE = "local-sim"
SIMULATED_CHIPS_PER_HOST = 4


def simulated_host_node_args(num_hosts: int, chips_per_host: int = SIMULATED_CHIPS_PER_HOST) -> list[dict[str, Any]]:
    """Node args for simulated TPU hosts: the resources and labels Ray gives the hosts of a
    real slice (ray.util.tpu), so placement cannot tell them apart."""
    pod_type = f"v6e-{num_hosts * chips_per_host}"
    args = []
    for worker_id in range(num_hosts):
        resources = {"TPU": chips_per_host, SIMULATED_SLICE: 1}
        if worker_id == 0:
            resources[f"TPU-{pod_type}-head"] = 1
        args.append(
            dict(
                num_cpus=1,
                resources=resources,
                labels={
                    "ray.io/tpu-slice-name": SIMULATED_SLICE,
                    "ray.io/tpu-worker-id": str(worker_id),
                    "ray.io/tpu-pod-type": pod_type,
                    "ray.io/accelerator-type": "TPU-V6E",
                },
            )
        )
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

    def release(self) -> None:
        """Kill the actors and remove the placement group; safe to call twice."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors = {}
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None


def reserve_hosts(hosts: list[Host], run_id: str, timeout_s: float) -> Reservation:
    """One bundle per host with all its chips, pinned to that host by its node-id label."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(
        bundles=[{"TPU": h.chips} for h in hosts],
        strategy="STRICT_SPREAD",
        name=f"ray-tpu-profile-{run_id}",
        bundle_label_selector=[{"ray.io/node-id": h.node_id} for h in hosts],
    )
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise TimeoutError(
            f"could not reserve {len(hosts)} host(s) ({', '.join(h.name for h in hosts)}) within {timeout_s:.0f} s: "
            "are their TPU chips held by another job?"
        )
    return Reservation(placement_group=pg, actors={})


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
