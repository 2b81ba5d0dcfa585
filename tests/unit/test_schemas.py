"""The published JSON Schemas of manifest.json and report.json: what their types say, and
strict enough to catch a missing field."""

from __future__ import annotations

import copy
import runpy
import sys

import jsonschema
import pytest

from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.core.records import HostRecord, HostStatus, PhaseTiming, RunStatus, ShapeRecord, Stage
from ray_tpu_profile.rundir.layout import build_manifest
from support.cli import REPO, validated


def test_the_published_schemas_are_what_the_types_say(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["schemas.py", "--check"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "scripts" / "schemas.py"), run_name="__main__")
    assert done.value.code == 0


def a_manifest() -> dict:
    record = HostRecord(Host("h0", "node-0", "127.0.0.1", 4), status=HostStatus.OK, stage=Stage.DONE)
    record.load = PhaseTiming(1.0, 2.0)
    warmup, profiled = PhaseTiming(2.0, 3.0, (0.5, 0.5)), PhaseTiming(3.0, 4.0, (1.0,))
    record.shapes["1x8x8"] = ShapeRecord(warmup=warmup, profiled=profiled)
    return build_manifest(
        run_id="r",
        status=RunStatus.OK,
        stage=Stage.DONE,
        error=None,
        command=["ray-tpu-profile", "run"],
        versions={"vllm": "0.32.0"},
        workload={"shape": "1x8x8", "shapes": ["1x8x8"], "input_len": 8},
        capture={"profiler": "torch"},
        cluster={"kind": "local-simulated"},
        engine={"argv": []},
        records=[record],
    )


def test_a_manifest_the_tool_builds_validates_and_one_missing_a_field_does_not():
    import json

    manifest = json.loads(json.dumps(a_manifest()))  # as it is on disk
    validated("manifest", manifest)
    for path in (("status",), ("hosts", 0, "latency_s"), ("hosts", 0, "shapes", "1x8x8", "phases")):
        broken = copy.deepcopy(manifest)
        parent = broken
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        with pytest.raises(jsonschema.ValidationError, match=repr(path[-1])):
            validated("manifest", broken)
    wrong = copy.deepcopy(manifest)
    wrong["hosts"][0]["status"] = "fine"
    with pytest.raises(jsonschema.ValidationError, match="'fine' is not one of"):
        validated("manifest", wrong)
