"""The local simulated cluster `run` starts: each host's raylet prestarts its worker, and
the host's actor runs in it (place does not wait for a Python process to start and import
Ray); the way before, for contrast, leaves the actor to a process started after place."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.cli import REPO, cli_env

PROBE = REPO / "tests" / "support" / "place_probe.py"


def probe(way: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(PROBE), way], capture_output=True, text=True, env=cli_env(), timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("way", ["prestart", "baseline"])
def test_the_hosts_actor_runs_in_the_worker_its_raylet_prestarted(way):
    found = probe(way)
    assert found["cluster"]["worker_prestart"] is (way == "prestart")
    assert found["reservation"] == "ray.util.tpu.SlicePlacementGroup"
    if way == "prestart":
        assert set(found["actor_pids"]) <= set(found["workers_before_place"]), found
    else:  # no worker before place: the actor's process was started for it
        assert found["workers_before_place"] == [], found
