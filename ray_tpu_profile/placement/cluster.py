"""Ray: connect or start a local simulated cluster, find TPU hosts, reserve them with a
placement group (one bundle per host, strictly spread), start one actor per host."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from ray_tpu_profile.core.hosts import (
    ACCELERATOR_LABEL,
    NODE_ID_LABEL,
    POD_TYPE_LABEL,
    SLICE_LABEL,
    TOPOLOGY_LABEL,
    WORKER_ID_LABEL,
    Host,
    hosts_from_nodes,
)
from ray_tpu_profile.placement.engines import EngineAssignment
from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV, tpu_inference_cpu

SIMULATED_SLICE = "local-sim"
SIMULATED_CHIPS_PER_HOST = 4
# v6e topologies by chip count, for the simulated slice's ray.io/tpu-topology label.
V6E_TOPOLOGY_BY_CHIPS = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8"}
LOCAL_SYSTEM_CONFIG = {"enable_worker_prestart": True, "num_workers_soft_limit": 1}
"""Ray's settings for the local simulated cluster: each simulated host's raylet starts its
one worker process (num_cpus 1) as it starts, and the host's actor, made without a
runtime_env (RunState.actor_env_set_by), takes it when placed instead of waiting for a
Python process to start and import Ray (0.35-0.45 s a host, most of place; bench/place.py).
The soft limit keeps that worker: by default it is the host's CPUs, and once a whole
slice's reservation (SlicePlacementGroup, a CPU in each bundle) holds them, Ray's idle-worker
killer took every prestarted worker idle for over a second (2-3 of 4 hosts). A cluster the
tool connects to keeps its own settings."""
NODES_UP_TIMEOUT_S = 120.0
"""Longest wait for a local cluster's simulated hosts to register (8 took 11-21 s on 2 cores)."""


def simulated_host_node_args(
    num_hosts: int, chips_per_host: int = SIMULATED_CHIPS_PER_HOST, slice_name: str = SIMULATED_SLICE
) -> list[dict[str, Any]]:
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
        env_vars = {
            "TPU_NAME": slice_name,
            "TPU_WORKER_ID": str(worker_id),
            "TPU_ACCELERATOR_TYPE": pod_type,
            # vLLM's Ray executor runs here through the simulated TPU platform (sim_platform).
            SIMULATED_TPU_ENV: "1",
            # vLLM's TPU stack, where installed: the host's chips as fake JAX CPU devices.
            **tpu_inference_cpu.node_env(chips_per_host),
        }
        args.append(dict(num_cpus=1, resources=resources, labels=labels, env_vars=env_vars))
    return args


@contextmanager
def ray_session(
    address: str | None,
    simulated_hosts: int,
    log_to_driver: bool,
    chips_per_host: int = SIMULATED_CHIPS_PER_HOST,
    prestart_workers: bool = False,
    nodes_at_once: bool = True,
) -> Iterator[dict[str, Any]]:
    """Connected to `address`, or to a local cluster of simulated TPU hosts started here
    and torn down on exit. Yields a description for the manifest.

    prestart_workers: each simulated host's raylet starts its worker as it starts
        (LOCAL_SYSTEM_CONFIG): for a run whose actors have no runtime_env, the only ones that
        can take it (`plan` starts no actor).
    nodes_at_once: the simulated hosts register side by side, not each waited for in turn.
    Both False: the way before, bench/place.py's baseline."""
    import ray

    cluster = None
    try:
        if address:
            ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
            info = {"kind": "existing", "address": address}
        else:
            from ray.cluster_utils import Cluster

            # The head holds no TPU so actors land only on the simulated hosts.
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 0,
                    "include_dashboard": False,
                    "_system_config": LOCAL_SYSTEM_CONFIG if prestart_workers else {},
                },
            )
            # Each node's processes are started in turn; each registers with the GCS while the
            # next one starts, instead of being waited for before it.
            for node_args in simulated_host_node_args(simulated_hosts, chips_per_host):
                cluster.add_node(wait=not nodes_at_once, **node_args)
            if nodes_at_once:
                cluster.wait_for_nodes(timeout=NODES_UP_TIMEOUT_S)
            ray.init(address=cluster.address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
            info = {
                "kind": "local-simulated",
                "address": cluster.address,
                "simulated_hosts": simulated_hosts,
                "chips_per_host": chips_per_host,
                "worker_prestart": prestart_workers,
            }
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
    """The placement groups holding every selected host's chips, where each host's actor
    goes in them, and the actors."""

    placement_groups: list[Any]
    slots: dict[str, tuple[Any, int, bool]]
    """Host name -> (placement group, bundle index, whether its actor holds the host's
    chips). An engine that spans hosts leaves the chips to vLLM's own workers."""
    actors: dict[str, Any] = field(default_factory=dict)
    slice_group: Any = None
    """The ray.util.tpu.SlicePlacementGroup that made the placement group, when one did."""
    kind: str = "placement_group"

    def release(self) -> None:
        """Kill the actors (an engine's owner takes vLLM's workers with it) and remove the
        placement groups; safe to call twice."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors = {}
        if self.slice_group is not None:
            self.slice_group.shutdown()
        else:
            for pg in self.placement_groups:
                remove_placement_group(pg)
        self.placement_groups, self.slice_group = [], None


def reservation_kind(hosts: list[Host], whole_slice: bool, engines_span_hosts: bool = False) -> str:
    """How the hosts will be reserved (for plan and the manifest)."""
    first = hosts[0]
    if engines_span_hosts:
        return "placement_group per engine"
    if whole_slice and first.slice_name and first.topology and first.pod_type:
        return "ray.util.tpu.SlicePlacementGroup"
    return "placement_group"


def _wait_ready(reservation: Reservation, hosts: list[Host], timeout_s: float) -> Reservation:
    import ray

    ready, _ = ray.wait(
        [pg.ready() for pg in reservation.placement_groups],
        num_returns=len(reservation.placement_groups),
        timeout=timeout_s,
    )
    if len(ready) < len(reservation.placement_groups):
        reservation.release()
        raise TimeoutError(
            f"could not reserve {len(hosts)} host(s) ({', '.join(h.name for h in hosts)}) within {timeout_s:.0f} s: "
            "are their TPU chips held by another job?"
        )
    return reservation


def reserve_hosts(hosts: list[Host], run_id: str, timeout_s: float, whole_slice: bool = False) -> Reservation:
    """One bundle per host with all its chips (strictly spread), bundle i pinned to host i
    by its node-id label. A whole TPU slice is reserved through Ray's own
    SlicePlacementGroup (the path a real slice takes); any other set of hosts through a
    plain placement group."""
    from ray.util.placement_group import placement_group

    name = f"ray-tpu-profile-{run_id}"
    pinned = [{NODE_ID_LABEL: h.node_id} for h in hosts]
    slice_group = None
    first = hosts[0]
    kind = reservation_kind(hosts, whole_slice)
    if kind == "ray.util.tpu.SlicePlacementGroup":
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
            bundles=[{"TPU": h.chips} for h in hosts],
            strategy="STRICT_SPREAD",
            name=name,
            bundle_label_selector=pinned,
        )
    slots = {h.name: (pg, index, True) for index, h in enumerate(hosts)}
    return _wait_ready(Reservation([pg], slots, slice_group=slice_group, kind=kind), hosts, timeout_s)


def reserve_engines(
    engines: list[EngineAssignment], run_id: str, timeout_s: float, bundle_per_chip: bool
) -> Reservation:
    """A placement group per engine that spans hosts, each of its bundles pinned to its
    host: one bundle per chip for vLLM's Ray executor (it refuses a bundle of several
    devices), or one per host with all its chips for tpu-inference's (bundle_per_chip
    False). The engine's owner runs in it, so vLLM's executor takes it for its own
    (ray.util.get_current_placement_group()); the hosts' actors hold no chips."""
    from ray.util.placement_group import placement_group

    groups, slots, hosts = [], {}, []
    for engine in engines:
        bundles, selectors = [], []
        for host in engine.hosts:
            slots[host.name] = (None, len(bundles), False)
            per_host = [{"TPU": 1}] * host.chips if bundle_per_chip else [{"TPU": host.chips}]
            bundles += per_host
            selectors += [{NODE_ID_LABEL: host.node_id}] * len(per_host)
        pg = placement_group(
            bundles=bundles,
            strategy="PACK",
            name=f"ray-tpu-profile-{run_id}-{engine.name}",
            bundle_label_selector=selectors,
        )
        groups.append(pg)
        for host in engine.hosts:
            slots[host.name] = (pg, slots[host.name][1], False)
        hosts += engine.hosts
    return _wait_ready(Reservation(groups, slots, kind="placement_group per engine"), hosts, timeout_s)


def start_actors(
    reservation: Reservation,
    hosts: list[Host],
    run_id: str,
    env_vars: dict[str, str],
    set_by: Literal["runtime_env", "actor"] = "runtime_env",
) -> dict[str, Any]:
    """One HostActor per host, in its slot of the reservation (holding all the host's
    chips, unless an engine's workers hold them), with env_vars set in its process by Ray's
    runtime_env before it starts, or by the actor itself as it is made (set_by "actor":
    only for variables read later, see RunState.actor_env_set_by). Without a runtime_env
    Ray starts the worker once, not through setup_worker.py."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ray_tpu_profile.host.actor import HostActor

    remote_cls = ray.remote(HostActor)
    by_ray = set_by == "runtime_env" and env_vars
    for host in hosts:
        pg, index, holds_chips = reservation.slots[host.name]
        reservation.actors[host.name] = remote_cls.options(
            name=f"ray-tpu-profile-{run_id}-{host.name}",
            num_cpus=0,
            resources={"TPU": host.chips} if holds_chips else {},
            max_restarts=0,
            **({"runtime_env": {"env_vars": env_vars}} if by_ray else {}),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=index
            ),
        ).remote(host.name, run_id, env={} if by_ray else env_vars)
    return reservation.actors


class RayHost:
    """A HostActor actor as the barrier calls it: each method call returns a Future."""

    def __init__(self, actor: Any, name: str):
        self.actor = actor
        self.name = name

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        remote_method = getattr(self.actor, method)
        return lambda *args: remote_method.remote(*args).future()

    def kill(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)
