"""Placement on simulated TPU slices that carry exactly what a real TPU host gets from
Ray (resources, labels, TPU env vars): two slices of 2 hosts, worker 0 with the head
resource. `plan` and `run` both use it; the whole-slice reservation is Ray's own
ray.util.tpu.SlicePlacementGroup."""

from __future__ import annotations

import json

import pytest
from ray.cluster_utils import Cluster

from ray_tpu_profile.placement.cluster import simulated_host_node_args
from support.cli import load_manifest, run_cli, run_ok


@pytest.fixture(scope="module")
def two_slices():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    node_ids = {}
    for slice_name in ("slice-a", "slice-b"):
        for args in simulated_host_node_args(2, slice_name=slice_name):
            node = cluster.add_node(**args)
            node_ids[f"{slice_name}-w{args['labels']['ray.io/tpu-worker-id']}"] = node.node_id
    yield cluster.address, node_ids
    cluster.shutdown()


def plan(address, *flags):
    return run_cli("plan", "--address", address, "--json", *flags)


def test_two_slices_and_no_choice_is_bad_input(two_slices):
    address, _ = two_slices
    proc = plan(address)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "--slice (not given)" in line and "slice-a (2 hosts, v6e-8)" in line and "slice-b (2 hosts, v6e-8)" in line


def test_a_slice_that_is_not_there_is_refused(two_slices):
    proc = plan(two_slices[0], "--slice", "slice-z")
    assert proc.returncode == 2 and "--slice slice-z: no such TPU slice" in proc.stderr


def test_plan_places_one_actor_per_host_of_the_slice(two_slices):
    address, node_ids = two_slices
    proc = plan(address, "--slice", "slice-b")
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = json.loads(proc.stdout)
    assert [h["name"] for h in planned["hosts"]] == ["slice-b-w0", "slice-b-w1"]
    assert [h["node_id"] for h in planned["hosts"]] == [node_ids["slice-b-w0"], node_ids["slice-b-w1"]]
    assert [a["host"] for a in planned["actors"]] == ["slice-b-w0", "slice-b-w1"]
    assert planned["placement"]["reservation"] == "ray.util.tpu.SlicePlacementGroup"
    assert {s["name"] for s in planned["slices"]} == {"slice-a", "slice-b"}


def test_an_engine_larger_than_its_slice_says_what_would_fit(two_slices):
    from concurrent.futures import ThreadPoolExecutor

    # Both plans side by side (each imports vLLM first: 10-20 s here).
    with ThreadPoolExecutor(2) as pool:
        tp8, proc = pool.map(
            lambda tp: plan(two_slices[0], "--slice", "slice-a", "--", "--tensor-parallel-size", tp), ["8", "16"]
        )
    # TP 8 on slice-a (2 hosts x 4 chips) is one engine across both of its hosts ...
    planned = json.loads(tp8.stdout)
    assert [e["hosts"] for e in planned["engines"]] == [["slice-a-w0", "slice-a-w1"]]
    # ... TP 16 would need 4 hosts: the cluster has 4, but an engine never crosses slices.
    assert proc.returncode == 2
    assert (
        "--tensor-parallel-size 16: an engine of TP x PP = 16 needs 4 hosts of 4 chips, the slice has 2; "
        "what fits: 1, 2, 4, 8"
    ) in proc.stderr


def test_run_uses_the_placement_plan_showed(two_slices, tmp_path):
    address, node_ids = two_slices
    planned = json.loads(plan(address, "--slice", "slice-b").stdout)
    _, run_dir = run_ok(
        address,
        tmp_path,
        "--slice",
        "slice-b",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "--batch-size",
        "2",
        "--num-iters-warmup",
        "1",
        "--env",
        "XLA_HLO_DEBUG=1",
    )
    manifest = load_manifest(run_dir)
    assert [(h["name"], h["node_id"]) for h in manifest["hosts"]] == [
        (h["name"], h["node_id"]) for h in planned["hosts"]
    ]
    assert manifest["cluster"]["reservation"] == "ray.util.tpu.SlicePlacementGroup"
    # The env reached the model processes (checked by each actor, not assumed).
    assert manifest["engine"]["env"]["XLA_HLO_DEBUG"] == "1"
    assert manifest["engine"]["env_set_by"] == "runtime_env"
    assert all(h["status"] == "ok" for h in manifest["hosts"])
