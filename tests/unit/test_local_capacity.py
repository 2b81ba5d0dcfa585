"""The local simulated cluster knows its size: the rule on machines described here, and
`run --hosts 64` refused for real on this one."""

from __future__ import annotations

import subprocess
import time

import pytest

from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.placement.local_capacity import (
    GIB,
    Machine,
    check_simulated_hosts,
    model_processes_per_host,
    simulated_host_limit,
)
from support.cli import run_cli


def test_memory_and_cores_each_bound_the_hosts():
    assert simulated_host_limit(Machine(24 * GIB, 2))[0] == 8  # cores: 4 per core
    assert simulated_host_limit(Machine(24 * GIB, 16))[0] == 14  # memory: 22 GiB / 1.5625 GiB
    assert simulated_host_limit(Machine(1 * GIB, 16))[0] == 0  # not even the head fits
    assert simulated_host_limit(Machine(24 * GIB, 16), processes_per_host=5)[0] == 3


def test_engines_across_hosts_put_a_worker_per_chip_on_each_host():
    assert model_processes_per_host(chips_per_host=4, engine_devices=4) == 1
    assert model_processes_per_host(chips_per_host=4, engine_devices=8) == 5
    assert model_processes_per_host(chips_per_host=1, engine_devices=2) == 2


def test_the_error_names_the_flag_the_limit_and_why():
    with pytest.raises(ConfigError) as e:
        check_simulated_hosts(64, Machine(24 * GIB, 2))
    assert str(e.value).startswith("--hosts 64: this machine holds at most 8 simulated host(s) (24.0 GiB available")
    assert "2 core(s) at 4 hosts per core" in str(e.value) and "--address ADDR" in str(e.value)
    check_simulated_hosts(2, Machine(24 * GIB, 2))  # the default fits


def raylets() -> int:
    return len(subprocess.run(["pgrep", "-f", "raylet/raylet"], capture_output=True, text=True).stdout.split())


def test_run_with_more_hosts_than_this_machine_holds_is_refused_in_seconds(tmp_path):
    before = raylets()
    started = time.monotonic()
    out = tmp_path / "out"
    proc = run_cli("run", "--hosts", "64", "--profile-result-dir", str(out))
    took_s = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ray-tpu-profile: error: --hosts 64: this machine holds at most ") and "--address" in line
    assert not out.exists() or not list(out.iterdir())  # nothing written
    assert raylets() == before  # no simulated host was started
    print(f"refused in {took_s:.1f} s")  # seconds (no vLLM import), recorded, not asserted
