"""Host discovery and naming from ray.nodes() dicts (pure)."""

import pytest

from ray_tpu_profile.core.hosts import hosts_from_nodes, select_hosts
from ray_tpu_profile.errors import ConfigError


def node(node_id, tpu=4, alive=True, ip="10.0.0.1", slice_name=None, worker=None):
    labels = {}
    if slice_name:
        labels["ray.io/tpu-slice-name"] = slice_name
    if worker is not None:
        labels["ray.io/tpu-worker-id"] = str(worker)
    resources = {"CPU": 8.0}
    if tpu:
        resources["TPU"] = float(tpu)
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": ip, "Resources": resources, "Labels": labels}


def test_only_alive_tpu_nodes_sorted_by_slice_and_worker():
    nodes = [
        node("head", tpu=0),
        node("dead", alive=False, slice_name="s", worker=5),
        node("b1", slice_name="b", worker=1),
        node("a1", slice_name="a", worker=1),
        node("a0", slice_name="a", worker=0),
    ]
    hosts = hosts_from_nodes(nodes)
    assert [h.node_id for h in hosts] == ["a0", "a1", "b1"]
    assert [h.name for h in hosts] == ["a-w0", "a-w1", "b-w1"]
    assert hosts[0].chips == 4 and hosts[0].slice_name == "a" and hosts[0].worker_id == 0


def test_unlabelled_hosts_named_by_position():
    hosts = hosts_from_nodes([node("n2", ip="10.0.0.2"), node("n1", ip="10.0.0.1")])
    assert [(h.name, h.node_id) for h in hosts] == [("host0", "n1"), ("host1", "n2")]


def test_select_hosts():
    hosts = hosts_from_nodes([node(f"n{i}", ip=f"10.0.0.{i}") for i in range(3)])
    assert select_hosts(hosts, None) == hosts
    assert select_hosts(hosts, 2) == hosts[:2]
    with pytest.raises(ConfigError) as e:
        select_hosts(hosts, 4)
    assert e.value.flag == "--hosts" and e.value.value == 4 and "only 3" in str(e.value)
    with pytest.raises(ConfigError, match="no node with a TPU"):
        select_hosts([], None)


def test_slice_choice():
    from ray_tpu_profile.core.hosts import select_slice

    hosts = hosts_from_nodes([node(f"{s}{w}", slice_name=s, worker=w) for s in "ab" for w in (0, 1)])
    with pytest.raises(ConfigError) as e:
        select_slice(hosts, None)
    assert e.value.flag == "--slice" and "choose one: a (2 hosts" in str(e.value) and "b (2 hosts" in str(e.value)
    assert [h.name for h in select_slice(hosts, "b")] == ["b-w0", "b-w1"]
    with pytest.raises(ConfigError, match="no such TPU slice"):
        select_slice(hosts, "c")
    one = [h for h in hosts if h.slice_name == "a"]
    assert select_slice(one, None) == one  # the only slice is picked
    assert [h.name for h in select_hosts(hosts, 1, "b")] == ["b-w0"]
