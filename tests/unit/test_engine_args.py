"""Engine flags go through vLLM's own EngineArgs parser (real vLLM, no model loaded)."""

import pytest

from ray_tpu_profile.config import Workload
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.host.engine import check_engine_args, dummy_prompts, engine_argv, parse_engine_args


def test_every_vllm_flag_parses():
    args = parse_engine_args(
        engine_argv("some/model", ("--tensor-parallel-size", "8", "--max-model-len", "2048", "--enforce-eager"), False)
    )
    assert (args.model, args.tensor_parallel_size, args.max_model_len, args.enforce_eager) == (
        "some/model",
        8,
        2048,
        True,
    )
    assert args.skip_tokenizer_init is True  # prompts are token ids


def test_user_flags_override_tiny_model_defaults():
    args = parse_engine_args(engine_argv("m", ("--max-model-len", "512", "--no-enforce-eager"), True))
    assert args.max_model_len == 512 and args.enforce_eager is False


def test_unknown_engine_flag_is_bad_input():
    with pytest.raises(ConfigError) as e:
        parse_engine_args(engine_argv("m", ("--not-a-vllm-flag", "3"), False))
    assert e.value.flag == "--not-a-vllm-flag" and "unknown vLLM engine flag" in str(e.value)


def test_bad_engine_flag_value_is_bad_input():
    with pytest.raises(ConfigError, match="tensor-parallel-size"):
        parse_engine_args(engine_argv("m", ("--tensor-parallel-size", "many"), False))


def test_workload_must_fit_max_model_len():
    args = parse_engine_args(engine_argv("m", ("--max-model-len", "100"), False))
    with pytest.raises(ConfigError, match="exceeds the max model length 100"):
        check_engine_args(args, Workload(input_len=50, output_len=51))


def test_dummy_prompts_same_on_every_host():
    w = Workload(batch_size=3, input_len=5)
    a, b = dummy_prompts(w, 1024), dummy_prompts(w, 1024)
    assert a == b and len(a) == 3 and all(len(p["prompt_token_ids"]) == 5 for p in a)
    assert all(0 <= t < 1024 for p in a for t in p["prompt_token_ids"])
