"""Fixtures that start real things: a multi-node Ray cluster of simulated TPU hosts on
loopback, and moto's S3 server. Helpers live in tests/support. Tests under tests/e2e are
marked slow by their path (`-m "not slow"` runs the unit tests alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import LOOPBACK, free_port
from support.cluster import STATE_API, SimCluster

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory):
    """Head (no TPU, dashboard for the state API) + 2 simulated TPU hosts, each with its
    own TMPDIR so hosts share no scratch directory."""
    import ray
    from ray.cluster_utils import Cluster

    from ray_tpu_profile.placement.cluster import simulated_host_node_args

    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=0,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=dashboard_port,
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
