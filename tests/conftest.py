"""Fixtures that start real things: a multi-node Ray cluster of simulated TPU hosts on
loopback, and the CLI as a subprocess, run the way a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ray_tpu_profile"]


LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The state API's address: set by sim_cluster so that checks ask this cluster, not
# whichever Ray cluster on the machine started last.
STATE_API: dict[str, str] = {}


@dataclass
class SimCluster:
    address: str
    dashboard_url: str
    host_tmpdirs: list[Path]


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory):
    """Head (no TPU, dashboard for the state API) + 2 simulated TPU hosts, each with its
    own TMPDIR so hosts share no scratch directory."""
    import ray
    from ray.cluster_utils import Cluster

    from ray_tpu_profile.cluster import simulated_host_node_args

    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=0, include_dashboard=True, dashboard_host=LOOPBACK, dashboard_port=dashboard_port,
        ),
    )
    tmpdirs = []
    for i, args in enumerate(simulated_host_node_args(2)):
        tmpdir = tmp_path_factory.mktemp(f"host{i}-tmp")
        tmpdirs.append(tmpdir)
        args["env_vars"] = {**args["env_vars"], "TMPDIR": str(tmpdir)}
        cluster.add_node(**args)
    ray.init(address=cluster.address)
    STATE_API["address"] = f"http://{LOOPBACK}:{dashboard_port}"
    yield SimCluster(cluster.address, f"http://{LOOPBACK}:{dashboard_port}", tmpdirs)
    ray.shutdown()
    cluster.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if "RAY_ADDRESS" not in (env or {}):
        full_env.pop("RAY_ADDRESS", None)  # the local-cluster default must not find one
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout_s, cwd=REPO)


def live_run_resources() -> tuple[list, list]:
    """This tool's actors that are not dead and placement groups not removed."""
    from ray.util.state import list_actors, list_placement_groups

    address = STATE_API["address"]
    actors = [a for a in list_actors(address=address, limit=10000) if (a.name or "").startswith("ray-tpu-profile-") and a.state != "DEAD"]
    groups = [
        g for g in list_placement_groups(address=address, limit=10000)
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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback: stands in for S3 (no network here). One per session:
    moto keeps its buckets in process memory across servers anyway."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    yield f"http://{LOOPBACK}:{port}"
    server.stop()


def load_manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def wait_for_stage(root: Path, stage: str, deadline_s: float = 240) -> dict:
    """Poll a run's staging manifest (rewritten at every stage) until the run reaches stage."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for path in root.glob(".*.partial/manifest.json"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # renamed or being replaced right now
            if manifest["stage"] == stage:
                return manifest
        time.sleep(0.05)
    raise AssertionError(f"run never reached {stage}")


@contextmanager
def module_cluster(tmp_path_factory, node_args: list[dict], label: str, extra_env=lambda i: {}):
    """A cluster of its own for one test module: head (no TPU, dashboard for the state API)
    and the given simulated hosts, each with its own TMPDIR plus extra_env(i); the state
    API points at it while it runs."""
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, include_dashboard=True, dashboard_host=LOOPBACK, dashboard_port=dashboard_port))
    for i, args in enumerate(node_args):
        env = {**args["env_vars"], "TMPDIR": str(tmp_path_factory.mktemp(f"{label}{i}-tmp")), **extra_env(i)}
        cluster.add_node(**{**args, "env_vars": env})
    previous = dict(STATE_API)
    STATE_API["address"] = f"http://{LOOPBACK}:{dashboard_port}"
    try:
        yield cluster
    finally:
        STATE_API.clear()
        STATE_API.update(previous)
        cluster.shutdown()
