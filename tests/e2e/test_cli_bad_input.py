"""Bad input: one line naming the flag and value, exit 2, before any model loads, and
nothing left behind (no run directory, no actor, no placement group)."""

from __future__ import annotations

import pytest

from support.cli import run_cli, start_cli
from support.cluster import live_run_resources


def bad_input(sim_cluster, tmp_path, *args, profile_dir=None):
    profile_dir = profile_dir or tmp_path / "profiles"
    proc = run_cli("run", "--address", sim_cluster.address, "--profile-result-dir", str(profile_dir), *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ray-tpu-profile: error:")]
    assert len(lines) == 1, proc.stderr
    assert not (tmp_path / "profiles").exists() or not any((tmp_path / "profiles").iterdir())
    assert live_run_resources() == ([], [])
    return lines[0]


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--batch-size", "0"),
        ("--input-len", "0"),
        ("--output-len", "-1"),
        ("--num-iters", "0"),
        ("--num-iters-warmup", "0"),
        ("--hosts", "0"),
        ("--duration-ms", "0"),
        ("--delay-ms", "-5"),
    ],
)
def test_non_positive_counts(sim_cluster, tmp_path, flag, value):
    line = bad_input(sim_cluster, tmp_path, flag, value)
    assert f"{flag} {value}:" in line


def test_model_path_that_does_not_exist(sim_cluster, tmp_path):
    line = bad_input(sim_cluster, tmp_path, "--model", str(tmp_path / "no-model"))
    assert f"--model {tmp_path / 'no-model'}" in line


def test_profile_dir_is_a_file(sim_cluster, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    line = bad_input(sim_cluster, tmp_path, profile_dir=f)
    assert f"--profile-result-dir {f}" in line and "is a file" in line


def test_profile_dir_not_writable(sim_cluster, tmp_path):
    line = bad_input(sim_cluster, tmp_path, profile_dir="/proc/ray-tpu-profile")
    assert "--profile-result-dir /proc/ray-tpu-profile" in line and "not writable" in line


# Caught only once vLLM has parsed the engine flags (importing vLLM costs 10-20 s here):
# these run side by side, each its own CLI process, and each is checked as bad_input does.
AFTER_VLLM_PARSED = [
    (["--input-len", "2000", "--output-len", "100"], ["--input-len 2000", "exceeds the max model length 2048"]),
    (["--hosts", "3"], ["--hosts 3", "only 2 TPU host(s)"]),
    (["--", "--no-such-vllm-flag", "1"], ["--no-such-vllm-flag", "unknown vLLM engine flag"]),
    # TP 8 on two 4-chip hosts is one engine across both; TP 16 needs four.
    (
        ["--", "--tensor-parallel-size", "16"],
        ["--tensor-parallel-size 16", "needs 4 hosts of 4 chips, the slice has 2", "what fits: 1, 2, 4, 8"],
    ),
    (["--shape", "1x8x4", "--shape", "1x2040x16"], ["exceeds the max model length 2048"]),
]


def test_bad_input_found_once_vllm_parsed_the_engine_flags(sim_cluster, tmp_path):
    outs = [tmp_path / f"profiles{i}" for i in range(len(AFTER_VLLM_PARSED))]
    procs = [
        start_cli("run", "--address", sim_cluster.address, "--profile-result-dir", str(out), *args)
        for out, (args, _) in zip(outs, AFTER_VLLM_PARSED)
    ]
    for proc, out, (args, expected) in zip(procs, outs, AFTER_VLLM_PARSED):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 2, (args, stderr[-2000:])
        (line,) = [line for line in stderr.splitlines() if line.startswith("ray-tpu-profile: error:")]
        assert all(text in line for text in expected), (args, line)
        assert not out.exists() or not any(out.iterdir())
    assert live_run_resources() == ([], [])


def test_click_type_errors_are_one_line_too(sim_cluster, tmp_path):
    line = bad_input(sim_cluster, tmp_path, "--batch-size", "many")
    assert "--batch-size" in line and "many" in line


def test_seed_env_vars_are_the_window_defaults(sim_cluster, tmp_path):
    # VLLM_TPU_PROFILE_DURATION_MS feeds --duration-ms, so it is checked like the flag.
    proc = run_cli(
        "run",
        "--address",
        sim_cluster.address,
        "--profile-result-dir",
        str(tmp_path / "p"),
        env={"VLLM_TPU_PROFILE_DURATION_MS": "0", "VLLM_TPU_PROFILE_DELAY_MS": "0"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "ray-tpu-profile: error: --duration-ms 0: must be more than 0"


def test_report_of_a_directory_that_is_not_a_run(tmp_path):
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ray-tpu-profile: error: RUN_DIR {tmp_path}: has no manifest.json (not a ray-tpu-profile run directory)"
    )


@pytest.mark.parametrize(
    "shape,reason", [("8x0x2", "batch, input and output must be 1 or more"), ("big", "expected BATCHxINPUTxOUTPUT")]
)
def test_bad_sweep_shape(sim_cluster, tmp_path, shape, reason):
    line = bad_input(sim_cluster, tmp_path, "--shape", "1x8x4", "--shape", shape)
    assert f"--shape {shape}: {reason}" in line


def test_shapes_file(sim_cluster, tmp_path):
    bad = tmp_path / "shapes.toml"
    bad.write_text("shapes = 3\n")
    line = bad_input(sim_cluster, tmp_path, "--shapes-file", str(bad))
    assert f"--shapes-file {bad}: needs shapes" in line


@pytest.mark.parametrize(
    "url,reason",
    [
        ("nosuchprotocol://bucket/profiles", "Protocol not known: nosuchprotocol"),
        ("abfs://container/profiles", "Install adlfs"),  # the package to install, from fsspec's own message
    ],
)
def test_remote_result_dir_that_cannot_be_used(sim_cluster, tmp_path, url, reason):
    line = bad_input(sim_cluster, tmp_path, profile_dir=url)
    assert f"--profile-result-dir {url}:" in line and reason in line


def test_remote_result_dir_that_cannot_be_written(sim_cluster, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    url = f"file://{tmp_path}/a-file/profiles"
    line = bad_input(sim_cluster, tmp_path, profile_dir=url)
    assert f"--profile-result-dir {url}: cannot write there" in line
