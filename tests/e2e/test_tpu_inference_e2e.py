"""vLLM's TPU stack itself, profiled by the tool: vllm-tpu + tpu-inference (JAX) on the JAX
CPU backend, on 2 simulated hosts of 2 fake devices each. The model, its jit-compiled step,
its sharding over the device mesh and its collectives are tpu-inference's; the attention
kernel stands in (sim_platform/tpu_inference_cpu.py says which parts, and why).

Runs in a second venv (Python 3.12: jax 0.11 needs it), built and cached by
scripts/setup-tpu-inference.sh (~11 GB once); `run` there is the same command a user types."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from ray_tpu_profile.profilers.capture_socket import SOCKET_DIR_PREFIX
from support.cli import REPO, TINY_WORKLOAD, cli_env, validated


@pytest.fixture(scope="module")
def tpu_python() -> str:
    proc = subprocess.run(
        [str(REPO / "scripts" / "setup-tpu-inference.sh")], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1] + "/bin/python"


def run_in(tpu_python: str, out: Path, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`run` on the embedded default (a local cluster of simulated hosts), in the TPU-stack venv."""
    proc = subprocess.run(
        [tpu_python, "-m", "ray_tpu_profile", "run", "--profile-result-dir", str(out), *flags],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=1200,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    (run_dir,) = list(out.iterdir())
    return proc, run_dir


def tiny_run(tpu_python: str, out: Path, tensor_parallel_size: int) -> Path:
    """The tiny workload on 2 simulated hosts of 2 chips each: its run directory."""
    flags = ("--hosts", "2", "--chips-per-host", "2", *TINY_WORKLOAD, "--num-iters-warmup", "2")
    _, run_dir = run_in(tpu_python, out, *flags, "--", "--tensor-parallel-size", str(tensor_parallel_size))
    return run_dir


@pytest.fixture(scope="module")
def tp2_run_and_temp_left(tpu_python, tmp_path_factory) -> tuple[Path, set[str]]:
    """TP 2 over each host's 2 fake devices, one engine per host; one run for the checks
    below, and the files it left in the temp dir its hosts share (this machine's)."""
    before = set(TEMP_DIR.iterdir())
    run_dir = tiny_run(tpu_python, tmp_path_factory.mktemp("tpu-tp2"), tensor_parallel_size=2)
    return run_dir, left_since(before)


TEMP_DIR = Path(tempfile.gettempdir())
"""The temp dir of every simulated host of the embedded default (this machine's)."""


def left_since(before: set[Path]) -> set[str]:
    """What the tool's run left in TEMP_DIR since before: a torch FileStore's file
    (mkstemp's tmp*, from tpu-inference's TPUWorker for its gloo group, or vLLM's
    vllm_dist_*), or a capture socket's directory the tool opened in an engine's worker."""
    made = set(TEMP_DIR.iterdir()) - before
    return {p.name for p in made if p.name.startswith(("tmp", "vllm_dist_", SOCKET_DIR_PREFIX))}


@pytest.fixture(scope="module")
def tp2_run(tp2_run_and_temp_left) -> Path:
    return tp2_run_and_temp_left[0]


def test_no_host_leaves_its_engines_process_group_file(tp2_run_and_temp_left):
    # tpu-inference's TPUWorker makes its gloo group's FileStore in a mkstemp file of its
    # own and never removes it: one stayed per host per run until the actor removed it.
    _, left = tp2_run_and_temp_left
    assert left == set()


def manifest_of(run_dir: Path) -> dict:
    return validated("manifest", json.loads((run_dir / "manifest.json").read_text()))


def test_auto_picks_jax_and_every_hosts_trace_holds_the_models_xla_ops_and_its_all_reduces(tp2_run):
    manifest = manifest_of(tp2_run)
    assert manifest["status"] == "ok", manifest["error"]
    assert manifest["capture"]["profiler"] == "jax" and "tpu_inference is installed" in manifest["capture"]["chosen_by"]
    assert manifest["engine"]["stack"] == "tpu-inference"
    assert "attention" in manifest["engine"]["stand_ins"]
    assert manifest["versions"]["vllm"].startswith("0.32.0 (vllm-tpu)")
    for host in manifest["hosts"]:
        xla = host["shapes"][manifest["workload"]["shape"]]["capture"]["xla"]
        assert xla["devices"] == 2, host["name"]
        assert any("run_model" in module for module in xla["ops_by_module"]), xla
        assert xla["collectives"] > 0, xla


def test_the_report_shows_each_hosts_two_devices_and_matches_their_all_reduces(tp2_run):
    report = json.loads((tp2_run / "report.json").read_text())
    by_host: dict[str, list[str]] = {}
    for device in report["devices"]:
        by_host.setdefault(device["host"], []).append(device["device"])
    assert {h: sorted(d) for h, d in by_host.items()} == {
        h: ["/device:CPU:0", "/device:CPU:1"] for h in ("local-sim-w0", "local-sim-w1")
    }
    all_reduces = [c for c in report["collectives"] if c["name"].startswith("all-reduce")]
    assert all_reduces, [c["name"] for c in report["collectives"]][:10]
    # Matched across both devices of the host's engine (each host is its own engine here).
    assert all(len(c["participants"]) == 2 for c in all_reduces)


def test_the_stack_on_fake_devices_gives_hugging_faces_greedy_tokens_at_tp_2(tpu_python):
    """The adaptations change no result: vLLM's TPU stack (in a spawned engine core, which
    gets them from the venv's .pth file alone) generates the tokens transformers does on the
    same weights, with ragged prefills of 5, 17 and 9 tokens. The engine core is spawned,
    not forked (a fork would inherit the parent's import hook)."""
    proc = subprocess.run(
        [tpu_python, str(REPO / "tests" / "support" / "tpu_inference_smoke.py"), "--tp", "2", "--rely-on-pth"],
        capture_output=True,
        text=True,
        env=cli_env({"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}),
        timeout=900,
        cwd=REPO,
    )
    result = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    assert result["tokens_match"], (result["vllm_tokens"], result["hf_tokens"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (engine,) = result["engine_workers"]
    assert engine["pid"] != result["this_process"]["pid"]  # the engine core's own process
    assert "tpu_inference.kernels.ragged_paged_attention.v3.kernel" in engine["patched"]


def test_one_engine_across_two_hosts_traces_each_hosts_worker_and_matches_its_all_reduces_across_hosts(
    tpu_python, tmp_path
):
    """TP 4 over 2 hosts of 2 fake devices: tpu-inference's Ray executor (one worker per
    host with all its chips), the workers joined into one JAX cluster over gloo; each host
    traces its own worker at the one instant, and the report matches every all-reduce
    across the 4 devices of both hosts."""
    temp_before = set(TEMP_DIR.iterdir())
    run_dir = tiny_run(tpu_python, tmp_path, tensor_parallel_size=4)
    assert left_since(temp_before) == set()  # each worker's, removed by its host's actor
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "ok", manifest["error"]
    ((engine),) = manifest["engines"]
    assert engine["hosts"] == ["local-sim-w0", "local-sim-w1"]
    workers = {h["name"]: h["worker"] for h in manifest["hosts"]}
    assert sorted(w["rank"] for w in workers.values()) == [0, 1]
    assert workers["local-sim-w0"]["pid"] != workers["local-sim-w1"]["pid"]
    shape = manifest["workload"]["shape"]
    for host in manifest["hosts"]:
        xla = host["shapes"][shape]["capture"]["xla"]
        assert xla["devices"] == 2 and xla["collectives"] > 0, (host["name"], xla)
    report = json.loads((run_dir / "report.json").read_text())
    all_reduces = [c for c in report["collectives"] if c["name"].startswith("all-reduce")]
    assert all_reduces
    for c in all_reduces:
        assert sorted({p["host"] for p in c["participants"]}) == ["local-sim-w0", "local-sim-w1"]
        assert len(c["participants"]) == 4
    (stragglers,) = report["stragglers"]
    assert stragglers["engine"] == engine["name"] and stragglers["occurrences"] == report["collectives_total"]
