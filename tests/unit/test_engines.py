"""Engines made of hosts (pure)."""

import pytest

from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.placement.engines import plan_engines


def hosts(n, chips=4, slices=("s",)):
    per_slice = n // len(slices)
    return [
        Host(name=f"{s}-w{i}", node_id=f"{s}{i}", node_ip="127.0.0.1", chips=chips, slice_name=s, worker_id=i)
        for s in slices
        for i in range(per_slice)
    ]


def test_an_engine_that_fits_one_host_runs_on_every_host():
    engines = plan_engines(hosts(2), 4)
    assert [(e.name, [h.name for h in e.hosts]) for e in engines] == [("engine0", ["s-w0"]), ("engine1", ["s-w1"])]
    assert not engines[0].spans_hosts and engines[0].ranks(engines[0].owner) == (0, 1, 2, 3)


def test_tp8_on_4_chip_hosts_makes_engines_of_two_consecutive_hosts():
    engines = plan_engines(hosts(4), 8)
    assert [[h.name for h in e.hosts] for e in engines] == [["s-w0", "s-w1"], ["s-w2", "s-w3"]]
    e = engines[1]
    assert e.owner.name == "s-w2" and e.spans_hosts
    assert e.ranks(e.hosts[0]) == (0, 1, 2, 3) and e.ranks(e.hosts[1]) == (4, 5, 6, 7)
    assert e.to_json()["ranks"] == {"s-w2": [0, 1, 2, 3], "s-w3": [4, 5, 6, 7]}
    # TP x PP counts: TP 4 x PP 2 spans two hosts too
    assert [len(e.hosts) for e in plan_engines(hosts(2), 4, 2)] == [2]


def test_a_host_count_that_does_not_divide_names_what_fits():
    with pytest.raises(ConfigError) as e:
        plan_engines(hosts(3, chips=1), 2)
    assert e.value.flag == "--hosts" and e.value.value == 3
    assert "spans 2 hosts of 1 chips" in e.value.reason and "multiple of 2: 2" in e.value.reason


def test_an_engine_larger_than_the_slice_or_not_whole_hosts_is_refused():
    with pytest.raises(ConfigError) as e:
        plan_engines(hosts(2), 16)
    assert e.value.flag == "--tensor-parallel-size" and "needs 4 hosts of 4 chips, the slice has 2" in e.value.reason
    assert "what fits: 1, 2, 4, 8" in e.value.reason
    with pytest.raises(ConfigError, match="TP x PP = 6 is not a whole number of hosts of 4 chips"):
        plan_engines(hosts(4), 6)


def test_an_engine_never_crosses_slices():
    two_slices = hosts(2, chips=1, slices=("a", "b"))  # a-w0, b-w0: hosts from two slices
    with pytest.raises(ConfigError, match="engine0 would span slices a and b"):
        plan_engines(two_slices, 2)
