"""Smoke test of vLLM's TPU stack (vllm-tpu + tpu-inference) on the JAX CPU backend, as on
a simulated TPU host: the tiny random-weight Llama, greedy, at a given TP over fake CPU
devices; its tokens against Hugging Face transformers' on the same weights.

Runs with the tpu-inference venv's python (scripts/setup-tpu-inference.sh):

    $VENV/bin/python tests/support/tpu_inference_smoke.py --tp 2
    $VENV/bin/python tests/support/tpu_inference_smoke.py --tp 2 --trace-dir /tmp/trace

Prints one JSON line: tokens (both sides), whether they match, load / generate times,
which processes had the CPU adaptations applied, and with --trace-dir what the JAX
profiler trace of one generate holds (the engine core then runs in this process).
--rely-on-pth leaves install() to the venv's .pth file (its check in every process).
Nothing here imports JAX before vLLM has started its engine core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

NUM_PROMPT_TOKENS = (5, 17, 9)  # unequal, so one step holds ragged prefills
PROMPT_SEED = 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=1, help="tensor_parallel_size")
    parser.add_argument("--devices", type=int, default=None, help="fake CPU devices (default: --tp)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--generates", type=int, default=3, help="generate calls (the first compiles)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the project's tiny Llama")
    parser.add_argument("--trace-dir", type=Path, default=None, help="trace the last generate with JAX's profiler")
    parser.add_argument("--rely-on-pth", action="store_true", help="do not call install() here")
    return parser.parse_args(argv)


def simulated_host_env(num_devices: int, in_process_engine: bool) -> None:
    """This process's environment as a simulated TPU host's, before vLLM or JAX load."""
    os.environ["RAY_TPU_PROFILE_SIMULATED_TPU"] = "1"
    flag = f"--xla_force_host_platform_device_count={num_devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    if in_process_engine:
        # The profiler traces the process it runs in: the model must run here.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # collective_rpc ships a function to the engine core by pickle.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


def prompts(vocab_size: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(PROMPT_SEED)
    return [rng.integers(vocab_size, size=n).tolist() for n in NUM_PROMPT_TOKENS]


def build_llm(model_dir: Path, tp: int, dtype: str) -> Any:
    from vllm import LLM

    return LLM(
        model=str(model_dir),
        tensor_parallel_size=tp,
        dtype=dtype,
        skip_tokenizer_init=True,
        max_model_len=256,
        max_num_seqs=8,
        max_num_batched_tokens=256,
        # Without it the KV cache is sized from the (simulated) HBM.
        num_gpu_blocks_override=64,
        # Single process, CPUs busy: async scheduling gave wrong tokens (DESIGN.md).
        async_scheduling=False,
        seed=0,
    )


def vllm_generate(llm: Any, token_prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in token_prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def hf_generate(model_dir: Path, token_prompts: list[list[int]], max_tokens: int, dtype: str) -> list[list[int]]:
    """Greedy by hand (argmax of a full forward per step): no eos handling, no cache."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    results = []
    with torch.no_grad():
        for prompt in token_prompts:
            ids = torch.tensor([prompt])
            for _ in range(max_tokens):
                next_id = model(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
            results.append(ids[0, len(prompt) :].tolist())
    return results


def _worker_adaptations(worker: Any) -> dict[str, Any]:
    from ray_tpu_profile.sim_platform import tpu_inference_cpu

    return tpu_inference_cpu.applied_patches()


def adaptations_in_engine(llm: Any) -> list[dict[str, Any]]:
    """Which CPU adaptations each model worker process has applied (and its pid)."""
    return llm.collective_rpc(_worker_adaptations)


def trace_summary(trace_dir: Path) -> dict[str, Any]:
    """What the trace holds: per plane, its lines (threads) and the distinct event names
    that are XLA work (events with an hlo_op / hlo_module stat, or named like a module
    execution), with counts."""
    from collections import Counter

    from ray_tpu_profile.analysis.xspace import read_planes

    files = sorted(trace_dir.rglob("*.xplane.pb"))
    planes = []
    for path in files:
        for plane in read_planes(path):
            xla_events: Counter[str] = Counter()
            hlo_modules: Counter[str] = Counter()
            lines = []
            for line in plane.lines:
                lines.append(line.name)
                for event in line.events:
                    if (
                        "hlo_op" in event.stats
                        or "hlo_module" in event.stats
                        or event.name.startswith(("Execute", "PjRt", "Thunk"))
                    ):
                        xla_events[event.name] += 1
                    if "hlo_module" in event.stats:
                        hlo_modules[str(event.stats["hlo_module"])] += 1
            planes.append(
                {
                    "plane": plane.name,
                    "lines": sorted(set(lines)),
                    "xla_event_names": dict(xla_events.most_common(80)),
                    "hlo_modules": dict(hlo_modules.most_common(30)),
                }
            )
    return {"files": [str(f) for f in files], "planes": planes}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    simulated_host_env(args.devices or args.tp, in_process_engine=args.trace_dir is not None)
    from ray_tpu_profile.sim_platform import tpu_inference_cpu

    if not args.rely_on_pth:
        tpu_inference_cpu.install()
    if args.model_dir is None:
        from ray_tpu_profile.host.tiny_model import ensure_tiny_model

        args.model_dir = ensure_tiny_model()
    vocab_size = json.loads((args.model_dir / "config.json").read_text())["vocab_size"]
    token_prompts = prompts(vocab_size)

    start = time.perf_counter()
    llm = build_llm(args.model_dir, args.tp, args.dtype)
    load_s = time.perf_counter() - start
    generate_s = []
    for i in range(args.generates):
        trace_this = args.trace_dir is not None and i == args.generates - 1
        if trace_this:
            import jax

            jax.profiler.start_trace(str(args.trace_dir))
        start = time.perf_counter()
        vllm_tokens = vllm_generate(llm, token_prompts, args.max_tokens)
        generate_s.append(round(time.perf_counter() - start, 3))
        if trace_this:
            jax.profiler.stop_trace()
    engine = adaptations_in_engine(llm)
    hf_tokens = hf_generate(args.model_dir, token_prompts, args.max_tokens, args.dtype)
    result: dict[str, Any] = {
        "tp": args.tp,
        "devices": args.devices or args.tp,
        "dtype": args.dtype,
        "tokens_match": vllm_tokens == hf_tokens,
        "vllm_tokens": vllm_tokens,
        "hf_tokens": hf_tokens,
        "load_s": round(load_s, 3),
        "generate_s": generate_s,
        "this_process": tpu_inference_cpu.applied_patches(),
        "engine_workers": engine,
        "stand_ins": tpu_inference_cpu.STAND_INS,
    }
    if args.trace_dir is not None:
        result["trace"] = trace_summary(args.trace_dir)
    print(json.dumps(result))
    return 0 if result["tokens_match"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
