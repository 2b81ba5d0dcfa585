"""Real Ray clusters of simulated TPU hosts on this machine, and what the state API says of them."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.cli import LOOPBACK, free_port

# The state API's address: set by sim_cluster so that checks ask this cluster, not
# whichever Ray cluster on the machine started last.
STATE_API: dict[str, str] = {}


@dataclass
class SimCluster:
    address: str
    dashboard_url: str
    host_tmpdirs: list[Path]

    def tmp_entries(self) -> list[set[Path]]:
        """What each simulated host's TMPDIR holds now (for left_in_tmp)."""
        return [set(tmpdir.iterdir()) for tmpdir in self.host_tmpdirs]

    def left_in_tmp(self, before: list[set[Path]]) -> list[set[str]]:
        """Per host, the names its TMPDIR gained since before (tmp_entries), less torch's
        compile cache (torchinductor_<user>: made there once, and meant to stay)."""
        return [
            {p.name for p in now - then if not p.name.startswith("torchinductor_")}
            for now, then in zip(self.tmp_entries(), before)
        ]


def live_run_resources() -> tuple[list, list]:
    """This tool's actors that are not dead and placement groups not removed."""
    from ray.util.state import list_actors, list_placement_groups

    address = STATE_API["address"]
    actors = [
        a
        for a in list_actors(address=address, limit=10000)
        if (a.name or "").startswith("ray-tpu-profile-") and a.state != "DEAD"
    ]
    groups = [
        g
        for g in list_placement_groups(address=address, limit=10000)
        if (g.name or "").startswith("ray-tpu-profile-") and g.state != "REMOVED"
    ]
    return actors, groups


def wait_until_released(deadline_s: float = 10.0) -> tuple[list, list]:
    """Ray releases killed actors asynchronously: poll the state API up to a deadline."""
    end = time.monotonic() + deadline_s
    while True:
        actors, groups = live_run_resources()
        if (not actors and not groups) or time.monotonic() > end:
            return actors, groups
        time.sleep(0.2)


@contextmanager
def module_cluster(tmp_path_factory, node_args: list[dict], label: str, extra_env=lambda i: {}):
    """A cluster of its own for one test module: head (no TPU, dashboard for the state API)
    and the given simulated hosts, each with its own TMPDIR plus extra_env(i); the state
    API points at it while it runs."""
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=0, include_dashboard=True, dashboard_host=LOOPBACK, dashboard_port=dashboard_port),
    )
    tmpdirs = [tmp_path_factory.mktemp(f"{label}{i}-tmp") for i in range(len(node_args))]
    for i, args in enumerate(node_args):
        env = {**args["env_vars"], "TMPDIR": str(tmpdirs[i]), **extra_env(i)}
        cluster.add_node(**{**args, "env_vars": env})
    previous = dict(STATE_API)
    STATE_API["address"] = f"http://{LOOPBACK}:{dashboard_port}"
    try:
        yield SimCluster(cluster.address, STATE_API["address"], tmpdirs)
    finally:
        STATE_API.clear()
        STATE_API.update(previous)
        cluster.shutdown()
